"""Cross-teacher agreement on plans: file and symbol Jaccard, Kendall tau of the execution order."""

from __future__ import annotations

from itertools import combinations
from typing import Mapping

import polars as pl

from distill_assets.plans.schema import Plan

AGREEMENT_SCHEMA = {
    "task_id": pl.Utf8,
    "source_a": pl.Utf8,
    "source_b": pl.Utf8,
    "file_jaccard": pl.Float64,
    "symbol_jaccard": pl.Float64,
    "order_tau": pl.Float64,
    "agreement": pl.Float64,
    "label": pl.Utf8,
    "hard_example": pl.Boolean,
}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def kendall_tau(order_a: list[str], order_b: list[str]) -> float | None:
    """Kendall tau over the items both orders share (None with fewer than two)."""
    from scipy.stats import kendalltau

    common = list(dict.fromkeys(x for x in order_a if x in set(order_b)))
    if len(common) < 2:
        return None
    pos_b = {x: i for i, x in enumerate(order_b)}
    return float(kendalltau(range(len(common)), [pos_b[x] for x in common]).statistic)


def plan_sets(plan: Plan) -> tuple[set[str], set[str]]:
    files = {f.path for f in plan.affected_files}
    symbols = {f"{f.path}:{c.symbol}" for f in plan.affected_files for c in f.changes}
    return files, symbols


def compare(a: Plan, b: Plan) -> dict[str, float | None]:
    fa, sa = plan_sets(a)
    fb, sb = plan_sets(b)
    return {
        "file_jaccard": jaccard(fa, fb),
        "symbol_jaccard": jaccard(sa, sb),
        "order_tau": kendall_tau(a.execution_order, b.execution_order),
    }


def agreement_score(m: Mapping[str, float | None]) -> float:
    tau = m["order_tau"]
    parts = [m["file_jaccard"], m["symbol_jaccard"]] + ([(tau + 1) / 2] if tau is not None else [])
    return sum(parts) / len(parts)


def label_for(score: float, agree: float, disagree: float) -> str:
    return "agree" if score >= agree else "disagree" if score < disagree else "partial"


def agreement_table(plans: Mapping[str, Mapping[str, Plan]], agree: float, disagree: float) -> pl.DataFrame:
    """``plans``: task_id -> {source: its representative plan}. One row per task and source pair;
    strong disagreement is flagged as a hard example, never dropped."""
    rows = []
    for task_id, by_source in plans.items():
        for sa, sb in combinations(sorted(by_source), 2):
            m = compare(by_source[sa], by_source[sb])
            score = agreement_score(m)
            label = label_for(score, agree, disagree)
            rows.append(
                {
                    "task_id": task_id,
                    "source_a": sa,
                    "source_b": sb,
                    **m,
                    "agreement": round(score, 4),
                    "label": label,
                    "hard_example": label == "disagree",
                }
            )
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA) if rows else pl.DataFrame(schema=AGREEMENT_SCHEMA)
