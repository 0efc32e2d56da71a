"""Evaluation assets for real on a small repository: the base student and a GGUF adapter on llama.cpp and
the local teacher answer held-out tasks, plans are coded and run in the sandbox and judged, the report
names every metric for every system; the promotion gate decides on the real rows, promotes an adapter that
beats the base, and keeps the live adapter when a new one regresses against it (evaluated on the same tasks,
its rows reused from the cache)."""

import json
import shutil

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
    return job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        asset_selection=[dg.AssetKey(k) for k in keys],
        partition_key=partition,
        raise_on_error=False,
    )


def _check(result):
    (check,) = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return check.event_specific_data


def _write_rows(tables, recall: dict[str, float], n: int = 6):
    """Evaluation rows as the evaluations asset writes them, with chosen stage-4 file recall per system."""
    rows = [
        {
            "stage": STAGE,
            "system": system,
            "system_id": system,
            "task_id": f"t{i}",
            "file_recall": value,
            "structural_validity": 1.0,
            "symbol_recall": value,
            "exec_pass_rate": None,
        }
        for system, value in recall.items()
        for i in range(n)
    ]
    pl.DataFrame(rows, schema_overrides={"exec_pass_rate": pl.Float64}).write_parquet(
        tables / "evaluations" / f"{STAGE}.parquet"
    )


def _meta(result, node):
    (mat,) = result.asset_materializations_for_node(node)
    return mat.metadata


def test_evaluation_report_and_promotion_gate(shop_repo, tmp_path, dagster_home, monkeypatch, smollm2_dir):
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["sources"] = {"repos": [{"name": "shop", "path": str(shop_repo.path)}], "external": []}
    data["split"] = {"val_fraction": 0.0, "test_fraction": 0.4}
    data["teachers"][0].update(
        max_tasks=1, max_samples=1, max_output_tokens=200, n_ctx=4096, max_parse_failure_rate=1.0
    )
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
        row = {
            "stage": STAGE,
            "status": "exported",
            "reason": "",
            "gguf_path": info["path"],
            "sha256": info["sha256"],
            "bytes": info["bytes"],
            "tensors": info["tensors"],
            "rank": info["rank"],
            "alpha": info["alpha"],
            "arch": info["arch"],
            "base_gguf": str(base),
            "adapter_sha256": "peft-" + info["sha256"][:8],
        }
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

        # the gate on the real rows: promoted or not, the decision is the gate's on these rows, recorded
        # with its comparisons, and live.json changes only on promotion
        cfg = load_config()
        promotions = cfg.resolved_cache_dir() / "promotions"
        first = _run(["promoted_adapters"], STAGE)
        assert first.success  # not promoting is a decision, not a failure
        decision = json.loads((promotions / "decisions.jsonl").read_text().splitlines()[-1])
        assert decision["comparisons"][0]["against"] == "base" and decision["comparisons"][0]["metric"] == "file_recall"
        status = _meta(first, "promoted_adapters")["decision"].value
        assert status == ("promoted" if decision["promote"] else "rejected")
        assert (json.loads((promotions / "live.json").read_text()) if (promotions / "live.json").exists() else {}).get(
            STAGE, {}
        ).get("adapter_sha256") == (info["sha256"] if decision["promote"] else None)
        check = _check(first)
        assert check.passed is decision["promote"]
        if not decision["promote"]:
            assert check.severity == dg.AssetCheckSeverity.WARN and "router keeps serving base" in check.description

        # rows where the adapter beats the base on every task: promoted, and the router will serve it
        shutil.rmtree(promotions)
        _write_rows(tables, {"base": 0.0, "adapter": 1.0})
        promoted = _run(["promoted_adapters"], STAGE)
        assert _meta(promoted, "promoted_adapters")["decision"].value == "promoted" and _check(promoted).passed
        live = json.loads((promotions / "live.json").read_text())
        assert live[STAGE]["adapter_sha256"] == info["sha256"]

        # a second adapter: the evaluation adds the live one on the same tasks, its rows from the cache
        peft2 = make_peft_adapter(smollm2_dir, tmp_path / "peft2", seed=4, std=0.01)
        info2 = export_gguf_lora(peft2, base, tmp_path / "b.gguf")
        pl.DataFrame([{**row, "gguf_path": info2["path"], "sha256": info2["sha256"]}]).write_parquet(
            tables / "gguf_adapters" / f"{STAGE}.parquet"
        )
        ev2 = _run(["evaluations"], STAGE)
        assert ev2.success, [e.message for e in ev2.all_events if e.is_failure]
        assert _meta(ev2, "evaluations")["systems"].value == "base, adapter, live, teacher"
        assert _meta(ev2, "evaluations")["cache_hits"].value == "base, live, teacher"
        # better than the base, worse than the live adapter: not promoted, the live one stays
        _write_rows(tables, {"base": 0.0, "adapter": 0.5, "live": 1.0})
        second = _run(["promoted_adapters"], STAGE)
        assert second.success
        assert _meta(second, "promoted_adapters")["decision"].value == "rejected"
        check = _check(second)
        assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
        assert "regression" in check.metadata["reason"].value and "vs live" in check.description
        assert json.loads((promotions / "live.json").read_text())[STAGE]["adapter_sha256"] == info["sha256"]
    finally:
        instance.dispose()
