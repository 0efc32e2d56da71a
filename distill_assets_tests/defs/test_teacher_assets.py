"""stage_prompts, teacher_outputs and teacher_cost_estimate materialized for real (local llama.cpp teacher)."""

from pathlib import Path

import dagster as dg
import polars as pl
import yaml

from distill_assets.config import load_config
from distill_assets.orchestrate import materialize_all
from distill_assets_tests.conftest import PROJECT


def small_config(tmp_path: Path, repo_path: Path) -> Path:
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": [{"name": "shop", "path": str(repo_path)}], "external": []}
    local = data["teachers"][0]
    local.update(max_tasks=1, max_samples=1, max_output_tokens=96, n_ctx=4096, max_parse_failure_rate=1.0)
    for st in data["stages"]:
        st["prompt_token_budget"] = 700
    p = tmp_path / "distill.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def meta(instance, key, partition=None) -> dict:
    f = dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[partition] if partition else None)
    rec = instance.fetch_materializations(f, limit=1).records[0].event_log_entry
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()}


def test_teacher_assets_end_to_end_and_a_rerun_is_all_cache_hits(shop_repo, tmp_path, dagster_home, monkeypatch):
    monkeypatch.setenv("DISTILL_CONFIG", str(small_config(tmp_path, shop_repo.path)))
    for var in ("DASHSCOPE_API_KEY", "DEEPSEEK_API_KEY", "DEEPINFRA_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, groups={"sources", "teachers"})
        assert all(s.failed == 0 for s in summary), logs
        assert sum(1 for line in logs if line.startswith("  skip partition")) == 5 * 4 - 5  # only local pairs run
        assert any("not assigned to stage" in line for line in logs)

        p = meta(instance, "stage_prompts", "plan_generation")
        assert p["prompts"] == 4 and p["prompt_tokens_p50"] > 0 and p["token_budget"] == 700
        out = meta(instance, "teacher_outputs", "plan_generation|local")
        assert out["candidates"] == 1 and out["calls_made"] == 1 and out["cache_hits"] == 0
        assert out["tokens_out"] > 0 and out["latency_p50_s"] > 0 and "cost_usd_total" in out
        cost = meta(instance, "teacher_cost_estimate")
        assert cost["projected_usd_target_scale"] > 0  # remote teachers priced at full scale
        table = pl.read_parquet(dagster_home / "storage/tables/teacher_cost_estimate.parquet")
        row = table.filter((pl.col("stage") == "plan_generation") & (pl.col("teacher") == "qwen3.5-plus")).row(
            0, named=True
        )
        assert not row["available"] and row["target_calls"] == 15000 * 10 and row["target_usd"] > 0
        local = table.filter((pl.col("stage") == "plan_generation") & (pl.col("teacher") == "local")).row(0, named=True)
        assert local["output_tokens_measured"] and local["answers"] == 1

        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey("teacher_outputs"), "teacher_outputs_parse_rate"), limit=10
        )
        assert len(checks) == 5

        # a rerun: zero calls, every answer from the cache (and no server started)
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="teacher_outputs")
        assert all(s.failed == 0 for s in summary)
        again = meta(instance, "teacher_outputs", "plan_generation|local")
        assert again["calls_made"] == 0 and again["cache_hits"] == 1
    finally:
        instance.dispose()


def test_an_invalid_pair_is_skipped_with_its_reason_not_failed(shop_repo, tmp_path, monkeypatch):
    from distill_assets.defs.io import PolarsIOManager
    from distill_assets.defs.resources import DistillConfigResource
    from distill_assets.defs.partitions import stage_partitions
    from distill_assets.defs.teachers.assets import teacher_outputs
    from distill_assets.defs.teachers.resources import TeachersResource

    cfg_path = small_config(tmp_path, shop_repo.path)
    tables = tmp_path / "tables"
    (tables / "stage_prompts").mkdir(parents=True)
    pl.DataFrame(schema={"task_id": pl.Utf8}).write_parquet(tables / "stage_prompts" / "task_analysis.parquet")
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [
                dg.AssetSpec("stage_prompts", partitions_def=stage_partitions).with_io_manager_key("io_manager"),
                teacher_outputs,
            ],
            partition_key="task_analysis|deepseek-v3.2",
            instance=instance,
            resources={
                "distill": DistillConfigResource(config_path=str(cfg_path)),
                "teachers": TeachersResource(),
                "io_manager": PolarsIOManager(base_dir=str(tables)),
            },
            selection=[dg.AssetKey("teacher_outputs")],
        )
        assert result.success
        m = result.asset_materializations_for_node("teacher_outputs")[0].metadata
        assert "not assigned to stage 'task_analysis'" in m["skipped"].value
        assert result.output_for_node("teacher_outputs").height == 0


def test_parse_rate_check_fails_above_the_limit():
    from distill_assets.defs.teachers.checks import parse_failure_result

    df = pl.DataFrame({"call_error": [None, None, None, "gave up"], "parse_error": ["json: x", None, None, None]})
    assert parse_failure_result(df, 0.5, "t").passed
    res = parse_failure_result(df, 0.2, "t")
    assert not res.passed and res.metadata["parse_failure_rate"].value == round(1 / 3, 3)


def test_parse_rate_check_fails_when_the_teacher_answered_nothing():
    from distill_assets.defs.teachers.checks import parse_failure_result

    down = pl.DataFrame({"call_error": ["ConnectError: connection refused"] * 3, "parse_error": [None] * 3})
    res = parse_failure_result(down, 0.5, "qwen")
    assert (
        not res.passed and "answered none of 3 requests" in res.description and "connection refused" in res.description
    )
    empty = pl.DataFrame(schema={"call_error": pl.Utf8, "parse_error": pl.Utf8})
    res = parse_failure_result(empty, 0.5, "qwen")
    assert not res.passed and "asked nothing" in res.description
    skipped = parse_failure_result(empty, 0.5, "qwen", skipped="no API key (DASHSCOPE_API_KEY)")
    assert skipped.passed and "DASHSCOPE_API_KEY" in skipped.description
