"""Self-improvement data from production logs: successful queries become student rows, the pool only
grows, teacher rows are never replaced, stage 4 is gated last, and diversity is measured."""

import json

import polars as pl
import pytest

from distill_assets.datasets.build import SFT_SCHEMA
from distill_assets.feedback.selfimprove import accumulate, diversity, feedback_rows, mix, stage4_gate, student_sft_rows
from distill_assets.router.logstore import LogStore

PLAN = {
    "task_summary": "s",
    "affected_files": [
        {"path": "a.py", "role": "primary", "changes": [{"symbol": "f", "action": "modify", "description": "d"}]}
    ],
    "execution_order": ["a.py"],
    "rationale": "r",
}


def _log(store: LogStore, run: str, tests_passed, plan_ok: bool = True):
    out = "[REASONING] because\n[PLAN] " + json.dumps(PLAN) if plan_ok else "garbage"
    store.record_query(
        run_id=run,
        repo="/r",
        base_commit="c",
        task_text=f"task {run}",
        stage="plan_generation",
        adapter_sha256="sha",
        prompt=[{"role": "user", "content": f"plan {run}"}],
        output=out,
        parsed_ok=plan_ok,
        latency_ms=1.0,
    )
    store.record_query(
        run_id=run,
        repo="/r",
        base_commit="c",
        task_text=f"task {run}",
        stage="code_generation",
        adapter_sha256="sha5",
        prompt=[{"role": "user", "content": f"code {run}"}],
        output=json.dumps({"diff": "diff --git a/a.py b/a.py\n"}),
        parsed_ok=True,
        latency_ms=1.0,
    )
    store.record_outcome(
        run, repo="/r", task_text=f"task {run}", plan_valid=plan_ok, diff_applied=True, tests_passed=tests_passed
    )


def test_successful_production_queries_become_student_rows_and_accumulate(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path / 'logs.sqlite'}")
    _log(store, "r1", True)
    _log(store, "r2", False)
    _log(store, "r3", None)  # no outcome reported yet: not a success, not a failure
    fb = feedback_rows(store.queries(), store.outcomes())
    assert fb.height == 6 and fb.filter(pl.col("success")).height == 2  # r1's two stages
    rows = student_sft_rows(fb, "plan_generation", round_no=1)
    assert rows["candidate_key"].to_list() == ["prod:r1:plan_generation"]
    completion = json.loads(rows["completion"][0])[0]["content"]
    assert completion.startswith("[REASONING] because\n[PLAN] {")  # the stage-4 training format
    pool, added = accumulate(None, rows)
    assert added == 1
    _log(store, "r4", True)
    fb2 = feedback_rows(store.queries(), store.outcomes())
    pool, added = accumulate(pool, student_sft_rows(fb2, "plan_generation", round_no=2))
    assert added == 1 and pool.height == 2 and pool["round"].to_list() == [1, 2]  # r1 kept from round 1
    pool_again, added = accumulate(pool, student_sft_rows(fb2, "plan_generation", round_no=3))
    assert added == 0 and pool_again.height == 2
    store.close()


def test_mix_keeps_every_teacher_row_and_caps_student_share():
    teacher = pl.DataFrame(
        [{k: None for k in SFT_SCHEMA} | {"candidate_key": f"t{i}", "source": "local"} for i in range(7)],
        schema=SFT_SCHEMA,
    )
    student = pl.DataFrame(
        [{k: None for k in SFT_SCHEMA} | {"candidate_key": f"s{i}", "source": "student"} for i in range(10)],
        schema=SFT_SCHEMA,
    )
    mixed = mix(teacher, student, 0.3)
    assert mixed.filter(pl.col("source") == "local").height == 7  # never dropped
    assert mixed.filter(pl.col("source") == "student").height == 3  # 7 * 0.3 / 0.7
    assert mix(teacher, student, 0.3).equals(mixed)  # deterministic
    assert mix(teacher, student.head(1), 0.3).height == 8 and mix(teacher, student, 0.0).height == 7


def test_stage4_is_gated_last(tmp_path):
    store = LogStore(f"sqlite:///{tmp_path / 'logs.sqlite'}")
    for i in range(4):
        _log(store, f"r{i}", i < 3)
    fb = feedback_rows(store.queries(), store.outcomes())
    assert not stage4_gate(fb, stage5_stable=False, min_tasks=2, min_pass_rate=0.5).open
    closed = stage4_gate(fb, stage5_stable=True, min_tasks=10, min_pass_rate=0.5)
    assert not closed.open and "4 logged tasks" in closed.reason
    ok = stage4_gate(fb, stage5_stable=True, min_tasks=4, min_pass_rate=0.5)
    assert ok.open and ok.plan_pass_rate == pytest.approx(0.75)
    assert not stage4_gate(fb, stage5_stable=True, min_tasks=4, min_pass_rate=0.8).open
    store.close()


def test_diversity_detects_collapse():
    varied = [
        f"plan {w} changes the {v} of module {u}"
        for w, v, u in zip("abcdefgh", ["cart", "tax", "order", "price", "ship", "stock", "user", "log"], range(8))
    ]
    same = ["plan a changes the cart of module 0"] * 8
    d_var, d_same = diversity(varied), diversity(same)
    assert d_same["mean_similarity"] == 1.0 and d_same["distinct_2"] == pytest.approx(7 / 56)
    assert d_var["mean_similarity"] < 0.6 and d_var["distinct_2"] > d_same["distinct_2"]
    assert diversity([])["distinct_2"] is None


def test_feedback_assets_accumulate_and_the_diversity_check_blocks_a_collapse(tmp_path, dagster_home, monkeypatch):
    import dagster as dg
    import yaml

    from distill_assets_tests.conftest import PROJECT, use_config

    url = f"sqlite:///{tmp_path / 'logs.sqlite'}"
    data = yaml.safe_load((PROJECT / "data" / "distill.yaml").read_text())
    data["router"] = {"log_url": url}
    data["automation"] = {"min_distinct_2": 0.5}
    use_config(tmp_path, monkeypatch, data)
    store = LogStore(url)
    for i in range(3):  # three successful tasks whose stage-5 answers are the same text: a collapse
        _log(store, f"r{i}", True)
    from distill_assets.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.get()
    try:
        run = job.execute_in_process(
            instance=instance,
            partition_key="code_generation",
            raise_on_error=False,
            asset_selection=[dg.AssetKey("production_feedback"), dg.AssetKey("self_improvement_data")],
        )
        assert not run.success  # the blocking diversity check failed
        (check,) = [e for e in run.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert check.event_specific_data.passed is False
        assert check.event_specific_data.metadata["distinct_2"].value < 0.5
        pool = pl.read_parquet(dagster_home / "cache" / "self_improvement" / "code_generation.parquet")
        assert pool.height == 3 and set(pool["source"]) == {"student"}
        # stage 4 is gated: no live stage-5 adapter yet, so no plan rows join however many successes
        run4 = job.execute_in_process(
            instance=instance,
            partition_key="plan_generation",
            raise_on_error=False,
            asset_selection=[dg.AssetKey("production_feedback"), dg.AssetKey("self_improvement_data")],
        )
        assert run4.success
        (mat,) = run4.asset_materializations_for_node("self_improvement_data")
        assert mat.metadata["pool_rows"].value == 0 and "stage 5 is not stable" in mat.metadata["stage4_gate"].value
        # no student rows: the check has nothing to judge and says so, as a warning that does not stop the
        # retrain on teacher rows
        (check4,) = [e.event_specific_data for e in run4.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert check4.passed is False and check4.severity == dg.AssetCheckSeverity.WARN
        assert "nothing to judge: 0 student row(s)" in check4.description
    finally:
        instance.dispose()
        store.close()
