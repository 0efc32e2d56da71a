"""The promotion gate as a blocking check: a rejected adapter fails it, so nothing downstream of the live
set (deployment, retraining from it) runs on a regressed adapter in the same run; the UI shows why."""

import json

import dagster as dg
import polars as pl

from distill_assets.defs.evaluation.assets import promoted_adapters
from distill_assets.defs.partitions import stage_partitions


@dg.asset_check(asset=promoted_adapters, blocking=True, partitions_def=stage_partitions,
                description="Fails when the evaluated adapter regressed a headline metric beyond the tolerance "
                "(the live adapter stays live).")
def no_headline_regression(promoted_adapters: pl.DataFrame) -> dg.AssetCheckResult:
    row = promoted_adapters.row(0, named=True) if promoted_adapters.height else {}
    status = row.get("status") or "missing"
    regressions = json.loads(row.get("regressions_json") or "{}")
    return dg.AssetCheckResult(
        passed=status != "rejected",
        metadata={"decision": status, "reason": row.get("reason") or "", "regressed_metrics": len(regressions),
                  "regressions": dg.MetadataValue.json(regressions)},
    )
