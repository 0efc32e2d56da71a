"""The embedded default: the shipped demo repository and `distill demo` on it, for real."""

import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from distill_assets.config import load_config
from distill_assets.orchestrate import materialize_all
from distill_assets_tests.conftest import PROJECT


def test_the_shipped_bundle_is_what_the_builder_makes(tmp_path):
    bundle = tmp_path / "demo.bundle"
    subprocess.run(
        [
            sys.executable,
            str(PROJECT / "data/repos/build_demo_repo.py"),
            "--out",
            str(tmp_path / "demo"),
            "--bundle",
            str(bundle),
        ],
        check=True,
        capture_output=True,
    )
    heads = lambda b: subprocess.run(["git", "bundle", "list-heads", str(b)], capture_output=True, text=True).stdout
    assert heads(bundle) == heads(PROJECT / "data/repos/demo-shop.bundle")


@pytest.mark.slow
def test_demo_repo_tests_pass_at_every_commit(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(PROJECT / "data/repos/build_demo_repo.py"), "--out", str(tmp_path / "d"), "--verify"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_demo_materializes_every_asset_on_the_embedded_default(dagster_home, monkeypatch):
    monkeypatch.delenv("DISTILL_CONFIG", raising=False)
    instance = dg.DagsterInstance.get()  # the project's dagster.yaml under DAGSTER_HOME
    try:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append)
        assert summary and all(s.failed == 0 for s in summary), logs
        graph_assets = {k for s in summary for k in s.asset.split(", ")}
        assert {"mined_commits", "external_tasks", "change_tasks", "task_contexts", "reference_plans"} <= graph_assets

        tables = dagster_home / "storage" / "tables"
        mined = pl.read_parquet(tables / "mined_commits" / "demo-shop.parquet")
        kept = mined.filter(pl.col("kept"))
        assert kept.height >= 20 and (kept["test_files"] > 0).all()
        assert set(mined["drop_reason"].drop_nulls()) >= {
            "merge",
            "formatting_only",
            "only_noise_files",
            "too_few_files",
        }
        contexts = pl.read_parquet(tables / "task_contexts.parquet")
        langs = {lang for ls in contexts["languages"].to_list() for lang in ls}
        assert {"python", "javascript"} <= langs
        plans = pl.read_parquet(tables / "reference_plans.parquet")
        git_plans = plans.filter(pl.col("task_id").str.starts_with("git:demo-shop:"))
        assert git_plans.height == kept.height and git_plans["valid"].all()
        assert git_plans["n_cross_file_edges"].sum() > 0
        tasks = pl.read_parquet(tables / "change_tasks.parquet")
        assert set(tasks.filter(pl.col("source") == "git")["split"]) == {"train", "val", "test"}
        # teachers and scoring on the embedded default: the local teacher answered, gold code passes
        assert pl.read_parquet(tables / "teacher_outputs" / "plan_generation" / "local.parquet").height == 6
        gold = pl.read_parquet(tables / "plan_executions" / "reference.parquet").filter(pl.col("coder") == "gold")
        assert gold.height >= 20 and (gold["pass_rate"] == 1.0).all()
        sft = pl.read_parquet(tables / "sft_datasets" / "plan_generation.parquet")
        assert sft.height >= kept.height and set(sft["split"]) == {"train", "val", "test"}
        assert pl.read_parquet(tables / "dpo_pairs" / "code_generation.parquet").height >= 1
        # training on the embedded default: an adapter per stage with train rows; stage 5 also ran DPO
        for stage in ("plan_generation", "code_generation"):
            row = pl.read_parquet(tables / "adapters" / f"{stage}.parquet").row(0, named=True)
            assert row["status"] == "trained" and row["adapter_sha256"], row
            assert (Path(row["adapter_dir"]) / "adapter_model.safetensors").exists()
        code = pl.read_parquet(tables / "adapters" / "code_generation.parquet").row(0, named=True)
        assert code["phases"] == ["sft", "dpo"] and code["dpo_pairs"] >= 1
        # evaluation on the embedded default: the stage-4 adapter trained on the train split against the
        # untrained base (and the teacher) on test-split tasks; the report holds every metric for both
        ev = pl.read_parquet(tables / "evaluations" / "plan_generation.parquet")
        assert {"base", "adapter"} <= set(ev["system"])
        test_ids = set(tasks.filter(pl.col("split") == "test")["task_id"])
        assert set(ev["task_id"]) <= test_ids
        rec = instance.fetch_materializations(dg.AssetKey("eval_report"), limit=1).records[0]
        md = rec.event_log_entry.asset_materialization.metadata["report"].value
        from distill_assets.evaluation.metrics import STAGE_METRICS

        for metric in STAGE_METRICS["plan_generation"]:
            line = next(line for line in md.splitlines() if line.startswith(f"| plan_generation | {metric}"))
            base_cell, adapter_cell = line.split(" | ")[2:4]
            assert " n=" in base_cell and " n=" in adapter_cell, line
        # the gate decided on every stage; a candidate that did not beat the base is not served, and the demo
        # says so in one line per stage
        import json

        live_path = load_config().resolved_cache_dir() / "promotions" / "live.json"
        live = json.loads(live_path.read_text()) if live_path.exists() else {}
        for stage in ("task_analysis", "relevance", "symbol_selection", "plan_generation", "code_generation"):
            row = pl.read_parquet(tables / "promoted_adapters" / f"{stage}.parquet").row(0, named=True)
            assert row["status"] in ("promoted", "rejected"), row
            comparisons = json.loads(row["comparisons_json"])
            assert comparisons[0]["against"] == "base", row
            assert comparisons[0]["n"] >= 1 or "not measured on a common task" in row["reason"], row
            if row["status"] == "promoted":
                assert live[stage]["adapter_sha256"] == row["candidate_sha256"]
            else:
                assert stage not in live and row["serving"] == "base"
                assert any(
                    f"no_headline_regression on promoted_adapters [{stage}]: not promoted" in line for line in logs
                ), logs
    finally:
        instance.dispose()
