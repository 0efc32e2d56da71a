"""Plan candidates by source, their scores, and the candidates a preference pair is chosen from.

Plain functions over polars tables, called by the scoring assets.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import polars as pl

from distill_assets.datasets.build import completion_text, reference_plan_completion
from distill_assets.prompts.schemas import PlanOutput

SCORE_SCHEMA = {
    "task_id": pl.Utf8,
    "source": pl.Utf8,
    "plan_key": pl.Utf8,
    "valid": pl.Boolean,
    "pass_rate": pl.Float64,
    "executions": pl.Int64,
    "agreement": pl.Float64,
    "score": pl.Float64,
}


def plans_by_source(
    validated: pl.DataFrame | None, reference_plans: pl.DataFrame, parsed_only: bool = False
) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    """task -> {source: [(candidate key, plan json, training completion)]}: kept teacher plans (or, with
    ``parsed_only``, every plan that parsed, kept ones first) and valid reference plans."""
    out: dict = defaultdict(lambda: defaultdict(list))
    if validated is not None and validated.height:
        keep = pl.col("parsed_json").is_not_null() if parsed_only else pl.col("kept")
        rows = validated.filter((pl.col("stage") == "plan_generation") & keep)
        for r in rows.sort(["kept", "sample_index"], descending=[True, False]).iter_rows(named=True):
            po = PlanOutput.model_validate_json(r["parsed_json"])
            out[r["task_id"]][r["source"]].append(
                (r["request_key"], po.plan.model_dump_json(), completion_text("plan_generation", r["parsed_json"]))
            )
    for r in reference_plans.filter(pl.col("usable")).iter_rows(named=True):
        out[r["task_id"]]["reference"].append(
            (f"reference:{r['task_id']}", r["plan_json"], reference_plan_completion(r["plan_json"]))
        )
    return out


def score_plans(by_source: dict, executions: pl.DataFrame | None, agreement: pl.DataFrame) -> pl.DataFrame:
    """Per plan: best pass rate over its coder samples first, then mean agreement, then validity;
    ``rank`` 1 is the best plan of its task. The gold-code rows do not score plans."""
    rates: dict[str, list[float]] = defaultdict(list)
    if executions is not None and executions.height:
        for r in executions.filter(pl.col("coder") != "gold").iter_rows(named=True):
            if r["pass_rate"] is not None:
                rates[r["plan_key"]].append(r["pass_rate"])
    agree: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in agreement.iter_rows(named=True):
        agree[(r["task_id"], r["source_a"])].append(r["agreement"])
        agree[(r["task_id"], r["source_b"])].append(r["agreement"])
    rows = []
    for task_id, by_src in by_source.items():
        for src, items in by_src.items():
            for key, _plan, _completion in items:
                pr = rates.get(key)
                rate = max(pr) if pr else None
                ag = agree.get((task_id, src))
                mean_agree = sum(ag) / len(ag) if ag else None
                score = (rate or 0.0) * 100 + (mean_agree or 0.0) * 10 + 1.0
                rows.append(
                    {
                        "task_id": task_id,
                        "source": src,
                        "plan_key": key,
                        "valid": True,
                        "pass_rate": rate,
                        "executions": len(pr or []),
                        "agreement": mean_agree,
                        "score": round(score, 4),
                    }
                )
    df = pl.DataFrame(rows, schema=SCORE_SCHEMA) if rows else pl.DataFrame(schema=SCORE_SCHEMA)
    if df.height:
        df = df.with_columns(pl.col("score").rank("ordinal", descending=True).over("task_id").alias("rank"))
    return df


def plan_dpo_candidates(
    by_source: dict, rates: dict[str, float | None], include_reference: bool
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Stage-4 candidates per task. The reference plan counts as passing (its code is the gold patch)
    when the task's teacher plans were scored by tests; it is never the rejected side."""
    scored: dict = defaultdict(list)
    for task_id, by_src in by_source.items():
        tested = any(rates.get(k) is not None for s, items in by_src.items() if s != "reference" for k, _, _ in items)
        for src, items in by_src.items():
            if src == "reference" and not include_reference:
                continue
            for key, _plan, completion in items:
                rate = rates.get(key)
                if src == "reference" and rate is None and tested:
                    rate = 1.0
                scored[(task_id, task_id)].append(
                    {
                        "completion": completion,
                        "source": src,
                        "pass_rate": rate,
                        "valid": True,
                        "can_reject": src != "reference",
                    }
                )
    return scored


def code_dpo_candidates(
    executions: pl.DataFrame | None, include_reference: bool
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Stage-5 candidates: the coder's diffs for each reference plan (the stage-5 prompt) and the gold
    code. A diff that does not apply is a real failing outcome (pass rate 0), so a fair rejected side;
    an answer without a diff is not a candidate."""
    scored: dict = defaultdict(list)
    if executions is None or not executions.height:
        return scored
    rows = executions.filter((pl.col("plan_source") == "reference") & pl.col("pass_rate").is_not_null())
    for r in rows.iter_rows(named=True):
        gold = r["coder"] == "gold"
        if gold and not include_reference:
            continue
        scored[(r["task_id"], r["task_id"])].append(
            {
                "completion": json.dumps({"diff": r["diff"] or ""}),
                "source": "reference" if gold else r["coder"],
                "pass_rate": r["pass_rate"],
                "valid": r["diff"] is not None,
                "can_reject": not gold,
            }
        )
    return scored
