"""The promotion gate as a check the UI shows per stage: a promoted adapter passes; a candidate the gate
did not promote fails with a warning that says why and what the router keeps serving (a normal outcome,
not a broken run); a stage with no evaluated adapter fails, since there was nothing to judge."""

import json

import dagster as dg
import polars as pl

from distill_assets.defs.evaluation.assets import promoted_adapters
from distill_assets.defs.partitions import stage_partitions


@dg.asset_check(
    asset=promoted_adapters,
    blocking=True,
    partitions_def=stage_partitions,
    description="Passes when the evaluated adapter was promoted; warns when the gate kept it out "
    "(no gain over the base, or a headline regression against what is served); fails when no adapter "
    "was evaluated for the stage.",
)
def no_headline_regression(promoted_adapters: pl.DataFrame) -> dg.AssetCheckResult:
    row = promoted_adapters.row(0, named=True) if promoted_adapters.height else {}
    status = row.get("status") or "missing"
    regressions = json.loads(row.get("regressions_json") or "{}")
    meta = {
        "decision": status,
        "reason": row.get("reason") or "",
        "serving": row.get("serving") or "",
        "regressed_metrics": len(regressions),
        "regressions": dg.MetadataValue.json(regressions),
    }
    if status == "promoted":
        return dg.AssetCheckResult(passed=True, metadata=meta)
    if status == "rejected":
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata=meta,
            description=f"not promoted; the router keeps serving {row.get('serving')}: {row.get('reason')}",
        )
    return dg.AssetCheckResult(
        passed=False, metadata=meta, description=f"nothing to judge: {row.get('reason') or 'no promotion row'}"
    )
