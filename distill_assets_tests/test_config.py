import pytest
import yaml

from distill_assets.config import DEFAULT_CONFIG_PATH, STAGE_ORDER, ConfigError, load_config, parse_config


def base() -> dict:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def test_default_config_loads_with_the_seed_hyperparameters():
    cfg = load_config()
    assert [s.key.value for s in cfg.stages] == list(STAGE_ORDER)
    plan = cfg.stage("plan_generation")
    assert (
        plan.training.rank,
        plan.training.alpha,
        plan.training.lr,
        plan.training.epochs,
        plan.training.max_length,
    ) == (128, 256, 1.5e-4, 3, 8192)
    assert plan.n_samples == 10 and plan.training.dpo
    for key in ("task_analysis", "relevance", "symbol_selection", "code_generation"):
        st = cfg.stage(key)
        assert st.training.rank == 64 and st.training.lr == 2e-4
    assert cfg.stage("code_generation").student_model == "Qwen/Qwen2.5-Coder-3B"
    assert cfg.stage("relevance").student_model == "Qwen/Qwen3-4B"
    assert cfg.sources.repos[0].url.endswith("data/repos/demo-shop.bundle")  # resolved against the file
    assert all(e.path.is_absolute() for e in cfg.sources.external)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda d: d["teachers"][1].update(price_input_per_mtok="cheap"), "teachers[1].price_input_per_mtok"),
        (lambda d: d["mining"].update(min_filez=3), "mining.min_filez"),
        (lambda d: d["stages"][3]["training"].update(rank=0), "stages[3].training.rank"),
        (lambda d: d["sources"]["repos"][0].update(path="/x"), "sources.repos[0]"),
        (lambda d: d["sources"]["repos"][0].update(name="Bad Name"), "sources.repos[0].name"),
        (lambda d: d["sandbox"].update(backend="chroot"), "sandbox.backend"),
        (lambda d: d["stages"][0].update(teachers=["nobody"]), "stages[0].teachers"),
        (lambda d: d["split"].update(val_fraction=0.45, test_fraction=0.45), "split"),
        (lambda d: d["stages"].pop(2), "stages"),
    ],
)
def test_a_wrong_field_gives_one_clear_error_naming_it(mutate, field):
    d = base()
    mutate(d)
    with pytest.raises(ConfigError) as err:
        parse_config(d)
    assert field in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_teacher_message_lists_known_ones():
    d = base()
    d["stages"][0]["teachers"] = ["nobody"]
    with pytest.raises(ConfigError, match="unknown teacher 'nobody'; known: local, qwen3.5-plus"):
        parse_config(d)


def test_env_expansion_and_missing_env(tmp_path):
    d = base()
    d["cache_dir"] = "${DISTILL_TEST_CACHE:-cache}"
    cfg = parse_config(d, base_dir=tmp_path, environ={})
    assert cfg.cache_dir == tmp_path / "cache"
    cfg = parse_config(d, base_dir=tmp_path, environ={"DISTILL_TEST_CACHE": "/abs/c"})
    assert str(cfg.cache_dir) == "/abs/c"
    d["cache_dir"] = "${DISTILL_NOT_SET}"
    with pytest.raises(ConfigError, match="DISTILL_NOT_SET"):
        parse_config(d, environ={})


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("teachers: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_teacher_availability_and_stage_teacher_pairs():
    cfg = load_config()
    assert cfg.stage_teacher_status("plan_generation", "local") == (True, "enabled")
    ok, why = cfg.stage_teacher_status("plan_generation", "qwen3.5-plus", environ={})
    assert not ok and "DASHSCOPE_API_KEY" in why
    ok, _ = cfg.stage_teacher_status("plan_generation", "qwen3.5-plus", environ={"DASHSCOPE_API_KEY": "k"})
    assert ok
    ok, why = cfg.stage_teacher_status("task_analysis", "deepseek-v3.2", environ={"DEEPSEEK_API_KEY": "k"})
    assert not ok and "not assigned to stage 'task_analysis'" in why
