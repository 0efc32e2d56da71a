"""Checks on teacher answers."""

import dagster as dg
import polars as pl

from distill_assets.defs.partitions import stage_teacher_of, stage_teacher_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.defs.teachers.assets import teacher_outputs


def parse_failure_result(df: pl.DataFrame, limit: float, teacher: str, skipped: str = "") -> dg.AssetCheckResult:
    """Passes when at most ``limit`` of the answered rows fail to parse. Nothing to judge fails (a teacher that
    answered nothing, e.g. because it was down, must not let everything downstream run on nothing), except for a
    partition the configuration skips (``skipped``: why)."""
    if skipped:
        return dg.AssetCheckResult(
            passed=True,
            description=f"skipped: {skipped}",
            metadata={"skipped": skipped, "teacher": teacher, "answers": 0},
        )
    answered = df.filter(pl.col("call_error").is_null()) if df.height else df
    if not answered.height:
        errors = df.filter(pl.col("call_error").is_not_null()) if df.height else df
        why = (
            f"teacher {teacher!r} answered none of {df.height} requests ({errors.height} call errors, e.g. "
            f"{str(errors['call_error'][0])[:200]})"
            if errors.height
            else f"teacher {teacher!r} was asked nothing: no prompt for this stage"
        )
        return dg.AssetCheckResult(
            passed=False,
            description=f"nothing to judge: {why}",
            metadata={
                "answers": 0,
                "requests": df.height,
                "call_errors": errors.height,
                "limit": limit,
                "teacher": teacher,
            },
        )
    failed = answered.filter(pl.col("parse_error").is_not_null()).height
    rate = failed / answered.height
    return dg.AssetCheckResult(
        passed=rate <= limit,
        metadata={
            "parse_failure_rate": round(rate, 3),
            "limit": limit,
            "answers": answered.height,
            "parse_failures": failed,
            "teacher": teacher,
        },
    )


@dg.asset_check(
    asset=teacher_outputs,
    blocking=True,
    partitions_def=stage_teacher_partitions,
    description="Fails when more answers than the teacher's max_parse_failure_rate do not parse, or when "
    "an available teacher answered nothing (nothing to judge); a pair the configuration skips passes "
    "with its reason.",
)
def teacher_outputs_parse_rate(
    context: dg.AssetCheckExecutionContext, distill: DistillConfigResource, teacher_outputs: pl.DataFrame
) -> dg.AssetCheckResult:
    cfg = distill.load()
    stage, name = stage_teacher_of(context.partition_key)
    ok, why = cfg.stage_teacher_status(stage, name)
    return parse_failure_result(
        teacher_outputs, cfg.teacher(name).max_parse_failure_rate, name, skipped="" if ok else why
    )
