"""Evaluation assets for real on a small repository: the base student and a GGUF adapter on llama.cpp and
the local teacher answer held-out tasks, plans are coded and run in the sandbox and judged, the report
names every metric for every system, and the promotion gate promotes, then refuses a regression."""

import json

import dagster as dg
import polars as pl
import yaml

from distill_assets.config import load_config
from distill_assets.evaluation.metrics import STAGE_METRICS
from distill_assets.export.gguf_lora import export_gguf_lora
from distill_assets.orchestrate import materialize_all
from distill_assets_tests.conftest import PROJECT, use_config
from distill_assets_tests.router.conftest import SMOLLM2_GGUF, make_peft_adapter

STAGE = "plan_generation"


def _run(keys, partition=None):
    from distill_assets.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=dg.DagsterInstance.get(), asset_selection=[dg.AssetKey(k) for k in keys],
                                  partition_key=partition, raise_on_error=False)


def _meta(result, node):
    (mat,) = result.asset_materializations_for_node(node)
    return mat.metadata


def test_evaluation_report_and_promotion_gate(shop_repo, tmp_path, dagster_home, monkeypatch, smollm2_dir):
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": [{"name": "shop", "path": str(shop_repo.path)}], "external": []}
    data["split"] = {"val_fraction": 0.0, "test_fraction": 0.4}
    data["teachers"][0].update(max_tasks=1, max_samples=1, max_output_tokens=200, n_ctx=4096, max_parse_failure_rate=1.0)
    for st in data["stages"]:
        st["prompt_token_budget"] = 900
        st["base_gguf"] = SMOLLM2_GGUF
    data["sandbox"]["test_commands"] = {"shop": ["python3 -m unittest discover -s tests -t . -v"]}
    data["evaluation"] = {"max_tasks": 1, "max_output_tokens": 160, "bootstrap": 200, "tolerance": 0.02}
    data["router"] = {"n_ctx": 4096, "n_threads": 2, "max_string_chars": 60}
    use_config(tmp_path, monkeypatch, data)
    instance = dg.DagsterInstance.get()
    try:
        logs: list[str] = []
        summary = materialize_all(load_config(), instance=instance, log=logs.append, groups={"sources"})
        for key in ("stage_prompts", "test_selections"):
            summary += materialize_all(load_config(), instance=instance, log=logs.append, select=key)
        assert all(s.failed == 0 for s in summary), logs
        tables = dagster_home / "storage" / "tables"
        tasks = pl.read_parquet(tables / "change_tasks.parquet")
        n_test = tasks.filter(pl.col("split") == "test").height
        assert n_test >= 1

        # a stage-4 adapter as the gguf_adapters asset records it (a real PEFT LoRA, exported to GGUF)
        from distill_assets.config import resolve_model_file

        base = resolve_model_file(SMOLLM2_GGUF)
        peft = make_peft_adapter(smollm2_dir, tmp_path / "peft", seed=3, std=0.01)
        info = export_gguf_lora(peft, base, tmp_path / "a.gguf")
        row = {"stage": STAGE, "status": "exported", "reason": "", "gguf_path": info["path"], "sha256": info["sha256"],
               "bytes": info["bytes"], "tensors": info["tensors"], "rank": info["rank"], "alpha": info["alpha"],
               "arch": info["arch"], "base_gguf": str(base), "adapter_sha256": "peft-" + info["sha256"][:8]}
        (tables / "gguf_adapters").mkdir(parents=True, exist_ok=True)
        pl.DataFrame([row]).write_parquet(tables / "gguf_adapters" / f"{STAGE}.parquet")

        ev = _run(["evaluations"], STAGE)
        assert ev.success, [e.message for e in ev.all_events if e.is_failure]
        meta = _meta(ev, "evaluations")
        rows = pl.read_parquet(tables / "evaluations" / f"{STAGE}.parquet")
        assert set(rows["system"]) == {"base", "adapter", "teacher"}
        assert rows.group_by("system").len()["len"].to_list() == [1] * 3
        assert meta["systems"].value == "base, adapter, teacher" and meta["cache_hits"].value == "none"
        assert meta["coder"].value == "local" and meta["judge"].value == "local"
        # every plan that parsed was coded and run in the sandbox (or has no tests); no plan: pass rate 0
        for r in rows.iter_rows(named=True):
            assert r["exec_status"] is not None and r["validity"] in (0.0, 1.0)
            if r["validity"] == 0.0:
                assert r["exec_status"] == "no_plan" and r["exec_pass_rate"] == 0.0
        base_out = rows.filter(pl.col("system") == "base")["output"].to_list()
        assert all(o.startswith("[REASONING] ") for o in base_out if o)  # the student's trained format

        again = _run(["evaluations"], STAGE)  # same adapter, prompts and settings: nothing recomputed
        assert _meta(again, "evaluations")["cache_hits"].value == "base, adapter, teacher"

        rep = _run(["eval_report"])
        assert rep.success, [e.message for e in rep.all_events if e.is_failure]
        md = _meta(rep, "eval_report")["report"].value
        for m in STAGE_METRICS[STAGE]:  # every metric for base, adapter and teacher (not which wins)
            line = next(line for line in md.splitlines() if line.startswith(f"| {STAGE} | {m}"))
            assert line.count(" n=") == 3, line
        assert "bars_plan_generation" in _meta(rep, "eval_report")["plots"].value
        page = open(_meta(rep, "eval_report")["report_html"].value).read()
        assert page.startswith("<!doctype html>") and "data:image/png;base64," in page

        first = _run(["promoted_adapters"], STAGE)
        assert first.success
        assert _meta(first, "promoted_adapters")["decision"].value == "promoted"
        cfg = load_config()
        live_path = cfg.resolved_cache_dir() / "promotions" / "live.json"
        live = json.loads(live_path.read_text())
        assert live[STAGE]["adapter_sha256"] == info["sha256"]

        # the live adapter is now "another, better one": the same candidate must not replace it
        live[STAGE] = {**live[STAGE], "adapter_sha256": "previous", "metrics": {k: 1.0 for k in live[STAGE]["metrics"]}}
        live_path.write_text(json.dumps(live))
        second = _run(["promoted_adapters"], STAGE)
        assert not second.success  # the blocking check fails the run
        assert _meta(second, "promoted_adapters")["decision"].value == "rejected"
        (check,) = [e for e in second.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert check.event_specific_data.passed is False
        assert "regression" in check.event_specific_data.metadata["reason"].value
        assert json.loads(live_path.read_text())[STAGE]["adapter_sha256"] == "previous"  # still live
    finally:
        instance.dispose()
