"""Blocking checks on the sources: a failing check stops downstream assets in the run."""

import dagster as dg
import polars as pl

from distill_assets.plans.reference import summarize_reference_plans
from distill_assets.tasks.build import split_leaks
from distill_assets.defs.metadata import md_counts
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.defs.sources.assets import change_tasks, reference_plans


@dg.asset_check(
    asset=reference_plans,
    blocking=True,
    description="Reference plans are structurally valid: fails when more than plans.max_invalid_rate of "
    "the built plans are invalid, or when no plan was built at all; violations reported by kind.",
)
def reference_plans_valid(distill: DistillConfigResource, reference_plans: pl.DataFrame) -> dg.AssetCheckResult:
    limit = distill.load().plans.max_invalid_rate
    s = summarize_reference_plans(reference_plans)
    if s.built == 0:
        why = (
            "no reference plan was built: " + "; ".join(f"{k} ({v})" for k, v in list(s.reasons.items())[:5])
            if reference_plans.height
            else "no tasks to build reference plans for"
        )
    elif s.invalid_rate > limit:
        why = f"{s.invalid} of {s.built} plans are invalid ({s.invalid_rate:.1%} > plans.max_invalid_rate {limit:.1%})"
    else:
        why = ""
    examples = [f"- `{code}`: {ex}" for code, exs in s.violation_examples.items() for ex in exs]
    return dg.AssetCheckResult(
        passed=not why,
        description=why or f"{s.invalid} of {s.built} plans invalid ({s.invalid_rate:.1%}, limit {limit:.1%})",
        metadata={
            "plans_checked": s.built,
            "plans_failing": s.invalid,
            "invalid_rate": round(s.invalid_rate, 4),
            "max_invalid_rate": limit,
            **{f"violation_{k}": v for k, v in s.violations.items()},
            "violations_by_name": md_counts(s.violations, key="violation"),
            "failing_examples": dg.MetadataValue.md("\n".join(examples) or "_(none)_"),
        },
    )


@dg.asset_check(
    asset=change_tasks,
    blocking=True,
    description="No repository's future leaks into its past: train < val < test in time, per repo; "
    "fails when there are no tasks at all.",
)
def change_tasks_split_is_temporal(change_tasks: pl.DataFrame) -> dg.AssetCheckResult:
    if not change_tasks.height:  # nothing to judge is not a pass: everything downstream would run on nothing
        return dg.AssetCheckResult(
            passed=False,
            description="nothing to judge: no change tasks (every commit was "
            "dropped or every repository failed: see the metadata of mined_commits and "
            "change_tasks)",
            metadata={"tasks": 0},
        )
    leaks = split_leaks(change_tasks)
    return dg.AssetCheckResult(
        passed=not leaks,
        metadata={
            "leaks": len(leaks),
            "details": dg.MetadataValue.md("\n".join(f"- {x}" for x in leaks[:20]) or "_(none)_"),
        },
    )
