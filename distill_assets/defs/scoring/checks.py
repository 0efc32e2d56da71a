"""Blocking checks on scoring: execution scoring must have something to stand on."""

import dagster as dg
import polars as pl

from distill_assets.defs.metadata import md_counts
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.scoring.assets import sft_datasets, test_selections
from distill_assets.environments.selection import NOT_JUDGED


@dg.asset_check(
    asset=test_selections,
    blocking=True,
    description="Every repository whose tasks touch tests (and can be run here: a local checkout, a "
    "configured source or test_commands) has at least one task with a usable test selection; fails with "
    "the reasons when one has none, or when there is nothing to judge.",
)
def test_selections_usable(test_selections: pl.DataFrame) -> dg.AssetCheckResult:
    df = test_selections
    with_tests = df.filter(~pl.col("status").is_in(NOT_JUDGED)) if df.height else df
    if not with_tests.height:
        counts = dict(df.group_by("status").len().rows()) if df.height else {}
        return dg.AssetCheckResult(
            passed=False,
            description="nothing to judge: no task that touches a test file can "
            "be run here (" + (", ".join(f"{k} {v}" for k, v in counts.items()) or "no tasks") + ")",
            metadata={"tasks": df.height},
        )
    bad = []
    for (repo,), g in with_tests.group_by(["repo"], maintain_order=True):
        if not (g["status"] == "selected").any():
            reasons = g.group_by("status").len().sort("len", descending=True).rows()
            bad.append(
                f"{repo}: none of {g.height} test-touching tasks has a usable selection ("
                + ", ".join(f"{s} {n}" for s, n in reasons)
                + f"; e.g. {g['detail'][0]})"
            )
    counts = dict(with_tests.group_by("status").len().rows())
    return dg.AssetCheckResult(
        passed=not bad,
        description="; ".join(bad) or "every repository with tests has usable selections",
        metadata={
            "repositories_without_selection": len(bad),
            "reasons": md_counts(counts, key="status", value="tasks"),
            "details": dg.MetadataValue.md("\n".join(f"- {b}" for b in bad) or "_(none)_"),
        },
    )


@dg.asset_check(
    asset=sft_datasets,
    blocking=True,
    partitions_def=stage_partitions,
    description="The stage has SFT rows in the train split; fails with the rows per split and source "
    "when it has none (as a warning: the adapters asset then records a skip with its reason, and the "
    "promotion check fails for want of an evaluated adapter; other stages go on).",
)
def sft_has_train_rows(sft_datasets: pl.DataFrame) -> dg.AssetCheckResult:
    df = sft_datasets
    counts = (
        {f"{split}/{source}": n for split, source, n in df.group_by("split", "source").len().rows()}
        if df.height
        else {}
    )
    n_train = int((df["split"] == "train").sum()) if df.height else 0
    return dg.AssetCheckResult(
        passed=n_train > 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"train_rows": n_train, "rows": md_counts(counts, key="split/source", value="rows")},
        description=None
        if n_train
        else "nothing to train on: no SFT row in the train split ("
        + (", ".join(f"{k} {v}" for k, v in counts.items()) or "no rows at all")
        + "); check teacher_outputs, "
        "validated_outputs and plan_executions for this stage",
    )
