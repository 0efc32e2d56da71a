"""Checks on teacher answers."""

import dagster as dg
import polars as pl

from distill_assets.defs.partitions import stage_teacher_of, stage_teacher_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.defs.teachers.assets import teacher_outputs


def parse_failure_result(df: pl.DataFrame, limit: float, teacher: str) -> dg.AssetCheckResult:
    answered = df.filter(pl.col("call_error").is_null()) if df.height else df
    failed = answered.filter(pl.col("parse_error").is_not_null()).height if answered.height else 0
    rate = failed / answered.height if answered.height else 0.0
    return dg.AssetCheckResult(
        passed=rate <= limit,
        metadata={"parse_failure_rate": round(rate, 3), "limit": limit, "answers": answered.height,
                  "parse_failures": failed, "teacher": teacher},
    )


@dg.asset_check(asset=teacher_outputs, blocking=True, partitions_def=stage_teacher_partitions,
                description="Fails when more answers than the teacher's max_parse_failure_rate do not parse.")
def teacher_outputs_parse_rate(context: dg.AssetCheckExecutionContext, distill: DistillConfigResource,
                               teacher_outputs: pl.DataFrame) -> dg.AssetCheckResult:
    cfg = distill.load()
    _, name = stage_teacher_of(context.partition_key)
    return parse_failure_result(teacher_outputs, cfg.teacher(name).max_parse_failure_rate, name)
