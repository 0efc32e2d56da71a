"""Which plans plan_executions runs and the rows it writes, without Dagster or a sandbox."""

import polars as pl

from distill_assets.sandbox import RunResult
from distill_assets.scoring.executions import EXECUTION_SCHEMA, execution_plan, execution_row, overlap_only_row

PLAN = '{"task_summary": "s", "affected_files": [], "execution_order": [], "rationale": ""}'


def test_plans_run_where_tests_are_selected_and_a_capped_coder_takes_train_tasks_first():
    tasks = {
        t: {"split": split}
        for t, split in (("a", "test"), ("b", "train"), ("c", "val"), ("d", "train"), ("e", "train"))
    }
    contexts = {t: {} for t in ("a", "b", "c", "d")}  # e has no context: it cannot be prompted
    by_source = {
        t: {"teacher1": [(f"{t}:k{i}", PLAN, None) for i in range(3)], "other": [(f"{t}:o", PLAN, None)]} for t in tasks
    }
    selections = {
        "a": {"status": "selected"},
        "b": {"status": "selected"},
        "c": {"status": "selected"},
        "d": {"status": "no_tests"},
    }
    ex = execution_plan(by_source, "teacher1", tasks, contexts, selections, max_plans_per_task=2, coder_max_tasks=2)
    assert sorted(p.key for p in ex.plans) == ["a:k0", "a:k1", "b:k0", "b:k1", "c:k0", "c:k1", "d:k0", "d:k1"]
    assert {p.task_id for p in ex.scored} == {"a", "b", "c"}  # d has no selected tests
    assert {p.task_id for p in ex.coded} == {"b", "c"}  # train first, then val; the test-split task waits
    assert execution_plan(by_source, "teacher1", tasks, contexts, selections, 2, None).coded == ex.scored


def test_rows_say_how_each_plan_was_scored():
    ex = execution_plan(
        {"a": {"t": [("a:k", PLAN, None)]}},
        "t",
        {"a": {"split": "train"}},
        {"a": {}},
        {"a": {"status": "selected"}},
        1,
        None,
    )
    p = ex.plans[0]
    ran = execution_row(
        p,
        "coder",
        "m",
        1,
        "ck",
        "diff --git",
        None,
        RunResult(status="passed", pass_rate=1.0, selected=["t1", "t2"], duration_s=2.5),
        True,
    )
    none = execution_row(p, "coder", "m", 0, "ck", None, "no diff in the answer", None, False)
    only = overlap_only_row(p)
    df = pl.DataFrame([ran, none, only], schema=EXECUTION_SCHEMA)
    assert df["status"].to_list() == ["passed", "no_diff", "no_tests"]
    assert df["pass_rate"].to_list() == [1.0, 0.0, None] and df["n_selected"].to_list() == [2, 0, 0]
    assert df["scored_by"].to_list() == ["tests", "tests", "overlap_only"] and df["plan_hash"].n_unique() == 1
