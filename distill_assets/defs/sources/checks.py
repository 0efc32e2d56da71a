"""Blocking checks on the sources: a failing check stops downstream assets in the run."""

from collections import Counter

import dagster as dg
import polars as pl

from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.tasks.build import split_leaks
from distill_assets.defs.metadata import md_counts
from distill_assets.defs.sources.assets import change_tasks, reference_plans


@dg.asset_check(asset=reference_plans, blocking=True, additional_ins={"task_contexts": dg.AssetIn()},
                description="Every reference plan passes the structural validator; violations reported by name.")
def reference_plans_valid(reference_plans: pl.DataFrame, task_contexts: pl.DataFrame) -> dg.AssetCheckResult:
    ctx_by_id = {r["task_id"]: r for r in task_contexts.iter_rows(named=True)}
    counts: Counter = Counter()
    failing: list[str] = []
    checked = 0
    for row in reference_plans.filter(pl.col("status") == "ok").iter_rows(named=True):
        ctx = ctx_by_id.get(row["task_id"])
        if ctx is None:
            counts["missing_context"] += 1
            failing.append(row["task_id"])
            continue
        report = validate_plan(row["plan_json"], PlanContext.from_rows(ctx["file_tree"], ctx["symbols"]))
        checked += 1
        for v in report.violations:
            counts[v.code] += 1
        if not report.valid:
            failing.append(f"{row['task_id']}: " + "; ".join(str(v) for v in report.violations[:3]))
    return dg.AssetCheckResult(
        passed=not failing,
        metadata={
            "plans_checked": checked,
            "plans_failing": len(failing),
            **{f"violation_{k}": v for k, v in counts.items()},
            "violations_by_name": md_counts(dict(counts), key="violation"),
            "failing_examples": dg.MetadataValue.md("\n".join(f"- {f}" for f in failing[:10]) or "_(none)_"),
        },
    )


@dg.asset_check(asset=change_tasks, blocking=True,
                description="No repository's future leaks into its past: train < val < test in time, per repo.")
def change_tasks_split_is_temporal(change_tasks: pl.DataFrame) -> dg.AssetCheckResult:
    leaks = split_leaks(change_tasks)
    return dg.AssetCheckResult(
        passed=not leaks,
        metadata={"leaks": len(leaks), "details": dg.MetadataValue.md("\n".join(f"- {x}" for x in leaks[:20]) or "_(none)_")},
    )
