"""The learning report: base against adapter on the same tasks, with intervals and the paired gain, a
learning curve and a transfer block; and the learning profile as `distill learn` writes it."""

import polars as pl
import pytest

from distill_assets.config import load_config
from distill_assets.evaluation.learning import gain_table, render, verdict
from distill_assets.learning import PROFILE, repo_entry, write_config
from distill_assets_tests.conftest import PROJECT


def _rows(stage, base, adapter, metric):
    out = [
        {"stage": stage, "system": s, "task_id": f"t{i}", metric: v, "validity": 1.0}
        for s, vals in (("base", base), ("adapter", adapter))
        for i, v in enumerate(vals)
    ]
    return pl.DataFrame(out)


def test_gain_table_pairs_by_task_and_the_report_says_gain_or_not():
    runs = {
        "r 50%": {"relevance": _rows("relevance", [0.0, 0.5, 0.0, 0.5], [0.5, 0.5, 0.0, 0.5], "file_f1")},
        "r 100%": {
            "relevance": _rows("relevance", [0.0, 0.5, 0.0, 0.5], [1.0, 1.0, 0.5, 1.0], "file_f1"),
            "symbol_selection": _rows("symbol_selection", [0.5] * 4, [0.5] * 4, "symbol_f1"),
        },
    }
    t = gain_table(runs, n_boot=500)
    f1 = t.filter((pl.col("run") == "r 100%") & (pl.col("metric") == "file_f1")).row(0, named=True)
    assert f1["n"] == 4 and f1["base"] == pytest.approx(0.25) and f1["adapter"] == pytest.approx(0.875)
    assert f1["gain"] == pytest.approx(0.625) and f1["gain_low"] > 0 and verdict(f1) == "gain"
    same = t.filter(pl.col("metric") == "symbol_f1").row(0, named=True)
    assert same["gain"] == 0 and verdict(same) == "no clear difference"
    # metrics no system measured are left out, not shown as zeros
    assert set(t.filter(pl.col("stage") == "relevance")["metric"]) == {"validity", "file_f1"}
    points = [
        ("r 100%", "relevance", 1.0),
        ("r 50%", "relevance", 0.5),
        ("r 100%", "symbol_selection", 1.0),
        ("r 50%", "symbol_selection", 0.5),
    ]
    md = render(
        t,
        "r 100%",
        points,
        transfer_run="r 50%",
        header="# h",
        skipped=[("relevance", "ab12 checkpoint 50/120", "ExportError: no tensors")],
    )
    assert md.startswith("# h") and "## Held-out tasks: r 100%" in md and "## Transfer: r 50%" in md
    assert "| relevance | file_f1 * | 4 | 0.250 [" in md and "| gain |" in md
    curve = [line for line in md.splitlines() if line.startswith("| relevance | file_f1 | ")]
    assert [line.split(" | ")[2] for line in curve] == ["50%", "100%"]  # ordered by share
    assert "+0.125 [" in curve[0] and "+0.625 [" in curve[1] and curve[1].endswith("| gain | r 100% |")
    # a point whose stage was not evaluated in that run says so (not a zero, not a silent gap)
    [gap] = [line for line in md.splitlines() if line.startswith("| symbol_selection | symbol_f1 | 50%")]
    assert "| n/a | n/a | not measured (no rows) |" in gap and "0.000" not in gap
    assert "- relevance, ab12 checkpoint 50/120: ExportError: no tensors" in md  # a point that failed, and why


def test_the_learning_profile_takes_the_repository_and_a_row_cap(tmp_path):
    bundle = PROJECT / "data" / "repos" / "demo-shop.bundle"
    assert repo_entry(str(bundle)) == {"name": "demo-shop", "url": str(bundle.resolve())}
    assert repo_entry(str(tmp_path)) == {"name": tmp_path.name, "path": str(tmp_path)}
    assert repo_entry("https://github.com/pallets/click.git")["name"] == "click"
    profile = load_config(PROFILE)
    cfg = load_config(write_config(PROFILE, str(bundle), tmp_path / "w", max_train_rows={"relevance": 7}))
    assert [r.name for r in cfg.sources.repos] == ["demo-shop"] and not cfg.sources.external
    assert cfg.stage("relevance").training.max_train_rows == 7
    for stage in ("symbol_selection", "task_analysis"):  # not capped here: the profile's own cap
        assert cfg.stage(stage).training.max_train_rows == profile.stage(stage).training.max_train_rows
    assert cfg.scoring.reference_stages == ["relevance", "symbol_selection", "plan_generation"]
    assert not cfg.teacher("local").availability()[0]  # the gold patch is the teacher: no endpoint is called


def test_intermediate_checkpoints_are_the_saved_steps_before_the_last(tmp_path):
    import json

    from distill_assets.learning import intermediate_checkpoints

    def ck(step, total=120, adapter=True, state=True):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        if state:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": total}))
        if adapter:
            (d / "adapter_config.json").write_text("{}")

    for step in (100, 50, 120):
        ck(step)
    ck(75, adapter=False)  # not a LoRA checkpoint
    ck(90, state=False)  # killed while saving
    (tmp_path / "checkpoint-60").mkdir()
    (tmp_path / "checkpoint-60" / "trainer_state.json").write_text("{not json")
    assert [(s, t, p.name) for s, t, p in intermediate_checkpoints(tmp_path)] == [
        (50, 120, "checkpoint-50"),
        (100, 120, "checkpoint-100"),
    ]  # the final step is the headline adapter
    assert intermediate_checkpoints(tmp_path / "missing") == []


def test_a_curve_point_that_cannot_be_measured_comes_with_its_reason(tmp_path):
    from distill_assets.learning import checkpoint_evaluations

    [(label, _, rows, why)] = checkpoint_evaluations(tmp_path, None, "relevance")
    assert rows is None and "no table adapters/relevance.parquet, gguf_adapters/relevance.parquet" in why
    tables = tmp_path / "storage" / "tables"
    for name, row in (
        ("adapters", {"status": "skipped", "adapter_dir": "", "run_key": "k"}),
        ("gguf_adapters", {"status": "skipped", "base_gguf": ""}),
    ):
        (tables / name).mkdir(parents=True)
        pl.DataFrame([row]).write_parquet(tables / name / "relevance.parquet")
    [(label, _, rows, why)] = checkpoint_evaluations(tmp_path, None, "relevance")
    assert rows is None and why == "adapter skipped, export skipped"
    pl.DataFrame(
        [{"status": "trained", "adapter_dir": str(tmp_path / "run" / "adapter"), "run_key": "k"}]
    ).write_parquet(tables / "adapters" / "relevance.parquet")
    pl.DataFrame([{"status": "exported", "base_gguf": ""}]).write_parquet(
        tables / "gguf_adapters" / "relevance.parquet"
    )
    [(label, _, rows, why)] = checkpoint_evaluations(tmp_path, None, "relevance")
    assert rows is None and why.startswith("the trainer kept no intermediate checkpoint in ")
