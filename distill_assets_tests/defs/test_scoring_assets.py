"""Scoring assets end to end on a real repository: sandboxed test selection, executions, scores, SFT, DPO."""

import json

import dagster as dg
import polars as pl
import pytest
import yaml

from distill_assets.config import load_config
from distill_assets.orchestrate import materialize_all
from distill_assets_tests.conftest import PROJECT, use_config


@pytest.mark.parametrize("backend", ["bwrap", "dagster_docker"])
def test_scoring_pipeline_on_a_real_repository(backend, shop_repo, tmp_path, dagster_home, monkeypatch):
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": [{"name": "shop", "path": str(shop_repo.path)}], "external": []}
    data["teachers"][0].update(
        max_tasks=1, max_samples=1, max_output_tokens=200, n_ctx=4096, max_parse_failure_rate=1.0
    )
    for st in data["stages"]:
        st["prompt_token_budget"] = 900
    data["sandbox"]["backend"] = backend
    data["sandbox"]["test_commands"] = {
        "shop": ["python3 -m unittest discover -s tests -t . -v", "node --test web/test/"]
    }
    use_config(tmp_path, monkeypatch, data)
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        summary = materialize_all(
            load_config(), instance=instance, log=logs.append, groups={"sources", "teachers", "scoring"}
        )
        assert all(s.failed == 0 for s in summary), logs
        t = dagster_home / "storage" / "tables"
        tasks = pl.read_parquet(t / "change_tasks.parquet")
        sel = pl.read_parquet(t / "test_selections.parquet").join(tasks.select("task_id", "description"), on="task_id")
        discount = sel.filter(pl.col("description").str.starts_with("Add discount")).row(0, named=True)
        assert discount["status"] == "selected"
        assert "tests/test_cart.py::CartTest::test_discount" in discount["fail_to_pass"]
        assert "tests/test_cart.py::CartTest::test_total" in discount["pass_to_pass"]
        assert set(sel.filter(pl.col("status") != "selected")["status"]) <= {"no_tests", "no_selected_tests"}
        assert set(sel["backend"]) == {backend}

        ex = pl.read_parquet(t / "plan_executions" / "reference.parquet")
        gold = ex.filter(pl.col("coder") == "gold")
        assert gold.height == sel.filter(pl.col("status") == "selected").height
        assert (gold["pass_rate"] == 1.0).all() and set(gold["status"]) == {"passed"}
        coded = ex.filter(pl.col("coder") == "local")
        assert coded.height == 1  # the capped local coder wrote code for one task
        assert coded["status"][0] in {"no_diff", "did_not_apply", "tests_failed", "passed", "crashed"}
        assert set(ex.filter(pl.col("coder").is_null())["scored_by"]) <= {"overlap_only"}

        scores = pl.read_parquet(t / "plan_scores.parquet")
        assert set(scores["source"]) >= {"reference"} and scores["rank"].min() == 1

        sft = pl.read_parquet(t / "sft_datasets" / "plan_generation.parquet")
        assert sft.height >= 4 and set(sft["source"]) >= {"reference"}
        completion = json.loads(sft["completion"][0])[0]["content"]
        assert completion.startswith("[REASONING]") and "\n[PLAN] {" in completion
        assert set(sft["difficulty"]) <= {"easy", "medium", "hard"} and sft["split"].null_count() == 0
        code_sft = pl.read_parquet(t / "sft_datasets" / "code_generation.parquet")
        assert code_sft.height == gold.height and "diff --git" in json.loads(code_sft["completion"][0])[0]["content"]

        dpo5 = pl.read_parquet(t / "dpo_pairs" / "code_generation.parquet")
        for r in dpo5.iter_rows(named=True):
            assert r["chosen_source"] == "reference" and r["chosen_pass_rate"] - r["rejected_pass_rate"] >= 0.5
        # a rerun of the executions redoes nothing: coder answers and sandbox runs come from the caches
        summary = materialize_all(load_config(), instance=instance, log=logs.append, select="plan_executions")
        assert all(s.failed == 0 for s in summary), logs
        rec = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("plan_executions"), asset_partitions=["reference"]), limit=1
        )
        meta = rec.records[0].event_log_entry.asset_materialization.metadata
        ran = ex.filter(pl.col("scored_by") == "tests").height
        assert meta["sandbox_cache_hits"].value == ran - coded.filter(pl.col("status") == "no_diff").height
        v = pl.read_parquet(t / "validated_outputs" / "plan_generation" / "local.parquet")
        assert v.height == 1 and (v["kept"][0] or v["drop_reason"][0] in {"parse_error", "invalid", "call_error"})
    finally:
        instance.dispose()
