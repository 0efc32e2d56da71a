"""Per-stage metrics against the reference (the gold patch's plan) and the teacher's labels, bootstrap
confidence intervals, the student's share of teacher quality, and judge-vs-execution calibration.

Every function takes parsed outputs (or None when the output did not parse) and returns plain dicts of
floats; a metric that does not apply to a row is None and is left out of its mean, never counted as 0.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from distill_assets.plans.repair import repair_plan
from distill_assets.plans.schema import Plan
from distill_assets.plans.validator import PlanContext, validate_plan
from distill_assets.scoring.agreement import kendall_tau, plan_sets

# the metrics each stage reports, in report order; the headline ones gate promotion
STAGE_METRICS: dict[str, list[str]] = {
    "task_analysis": ["validity", "scope_accuracy", "kind_agreement"],
    "relevance": ["validity", "file_precision", "file_recall", "file_f1", "file_accuracy"],
    "symbol_selection": ["validity", "symbol_precision", "symbol_recall", "symbol_f1"],
    "plan_generation": [
        "validity",
        "structural_validity",
        "repaired_validity",
        "file_recall",
        "file_precision",
        "symbol_recall",
        "order_tau",
        "exec_pass_rate",
        "judge_completeness",
        "judge_ordering",
        "judge_rationale",
    ],
    "code_generation": ["validity", "diff_applies", "pass_rate"],
}
HEADLINE: dict[str, list[str]] = {
    "task_analysis": ["validity", "scope_accuracy"],
    "relevance": ["validity", "file_f1"],
    "symbol_selection": ["validity", "symbol_f1"],
    "plan_generation": ["structural_validity", "file_recall", "symbol_recall", "exec_pass_rate"],
    "code_generation": ["pass_rate"],
}
# the one metric a candidate must beat the base student on (paired, interval above zero) to be promoted
GAIN_METRIC: dict[str, str] = {
    "task_analysis": "scope_accuracy",
    "relevance": "file_f1",
    "symbol_selection": "symbol_f1",
    "plan_generation": "file_recall",
    "code_generation": "pass_rate",
}


def prf(pred: Iterable[str], gold: Iterable[str]) -> dict[str, float]:
    """Precision, recall and F1 of a predicted set. Nothing to find and nothing found is perfect;
    nothing found when something was to be found scores 0."""
    p, g = set(pred), set(gold)
    hit = len(p & g)
    precision = hit / len(p) if p else (1.0 if not g else 0.0)
    recall = hit / len(g) if g else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def reference_scope(plan: Plan, languages: Mapping[str, str | None]) -> str:
    """The stage-1 scope label implied by the reference plan: how many files, modules and languages."""
    files = [f.path for f in plan.affected_files]
    langs = {languages.get(p) for p in files} - {None}
    if len(langs) > 1:
        return "cross_language"
    if len(files) <= 1:
        return "single_file"
    top = {p.split("/")[0] if "/" in p else "." for p in files}
    return "cross_module" if len(top) > 1 else "multi_file"


def task_analysis_metrics(out, ref_scope: str | None, teacher_label=None) -> dict[str, float | None]:
    if out is None:
        return {
            "validity": 0.0,
            "scope_accuracy": 0.0 if ref_scope else None,
            "kind_agreement": 0.0 if teacher_label is not None else None,
        }
    return {
        "validity": 1.0,
        "scope_accuracy": float(out.scope == ref_scope) if ref_scope else None,
        "kind_agreement": float(out.change_kind == teacher_label.change_kind) if teacher_label is not None else None,
    }


def relevance_metrics(out, gold: set[str], shown: Sequence[str]) -> dict[str, float | None]:
    """Files judged relevant against the reference plan's files, over the candidates shown."""
    gold = gold & set(shown) if shown else gold
    if out is None:
        return {
            "validity": 0.0,
            "file_precision": 0.0,
            "file_recall": 0.0 if gold else None,
            "file_f1": 0.0,
            "file_accuracy": 0.0,
        }
    said = {f.path: f.relevant for f in out.files}
    m = prf({p for p, r in said.items() if r}, gold)
    acc = [float(said.get(p, False) == (p in gold)) for p in shown] if shown else []
    return {
        "validity": 1.0,
        "file_precision": m["precision"],
        "file_recall": m["recall"] if gold else None,
        "file_f1": m["f1"],
        "file_accuracy": float(np.mean(acc)) if acc else None,
    }


def symbol_metrics(out, gold: set[str]) -> dict[str, float | None]:
    """Selected ``path:symbol`` against the reference plan's changes (``<module>`` changes excluded)."""
    if out is None:
        return {"validity": 0.0, "symbol_precision": 0.0, "symbol_recall": 0.0 if gold else None, "symbol_f1": 0.0}
    m = prf({f"{s.path}:{s.symbol}" for s in out.symbols}, gold)
    return {
        "validity": 1.0,
        "symbol_precision": m["precision"],
        "symbol_recall": m["recall"] if gold else None,
        "symbol_f1": m["f1"],
    }


def gold_symbols(ref: Plan) -> set[str]:
    return {s for s in plan_sets(ref)[1] if not s.endswith(":<module>")}


def plan_metrics(plan: Plan | None, ref: Plan, ctx: PlanContext | None = None) -> dict[str, float | str | None]:
    """Stage 4 against the reference plan: parsed, structurally valid as written (the validator: real files
    and symbols, mutual edges, no cycle, order respects edges) and after ``repair_plan`` derived its
    bookkeeping (what the pipeline uses), file recall/precision, symbol recall, Kendall tau of the execution
    order over the files both orders share (None under two). ``violations`` are the plan's as written,
    ``repairs`` what the repair changed."""
    if plan is None:
        return {
            "validity": 0.0,
            "structural_validity": 0.0,
            "repaired_validity": 0.0,
            "file_recall": 0.0,
            "file_precision": 0.0,
            "symbol_recall": 0.0,
            "order_tau": None,
            "violations": "unparsed",
            "repairs": None,
        }
    files, symbols = plan_sets(plan)
    ref_files, _ = plan_sets(ref)
    fm = prf(files, ref_files)
    gs = gold_symbols(ref)
    repaired = repair_plan(plan)
    report = validate_plan(plan, ctx) if ctx is not None else None
    after = validate_plan(repaired.plan, ctx) if ctx is not None else None
    return {
        "validity": 1.0,
        "structural_validity": float(report.valid) if report is not None else None,
        "repaired_validity": float(after.valid) if after is not None else None,
        "file_recall": fm["recall"],
        "file_precision": fm["precision"],
        "symbol_recall": prf(symbols, gs)["recall"] if gs else None,
        "order_tau": kendall_tau(plan.execution_order, ref.execution_order),
        "violations": ",".join(report.codes) if report is not None else "",
        "repairs": repaired.summary(),
    }


def bootstrap_ci(
    values: Sequence[float | None], n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, float | int | None]:
    """Mean and percentile-bootstrap interval over the rows where the metric applies."""
    x = np.array([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return {"n": 0, "mean": None, "ci_low": None, "ci_high": None}
    if x.size == 1:
        return {"n": 1, "mean": float(x[0]), "ci_low": float(x[0]), "ci_high": float(x[0])}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"n": int(x.size), "mean": float(x.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def paired_gain(
    candidate: Mapping[str, float | None],
    other: Mapping[str, float | None],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | int | None]:
    """Mean per-task difference ``candidate - other`` over the tasks both were measured on, with a paired
    percentile-bootstrap interval (tasks resampled, each keeping both of its scores); also both means on
    those tasks."""
    ids = sorted(t for t in candidate if candidate[t] is not None and other.get(t) is not None)
    ci = bootstrap_ci([candidate[t] - other[t] for t in ids], n_boot=n_boot, level=level, seed=seed)
    return {
        "n": ci["n"],
        "candidate": float(np.mean([candidate[t] for t in ids])) if ids else None,
        "other": float(np.mean([other[t] for t in ids])) if ids else None,
        "gain": ci["mean"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
    }


def correlation(xs: Sequence[float | None], ys: Sequence[float | None]) -> dict[str, float | int | None]:
    """Pearson and Spearman over the pairs where both are known (None when constant or under 3 pairs)."""
    from scipy.stats import pearsonr, spearmanr

    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    out: dict[str, float | int | None] = {"n": len(pairs), "pearson": None, "spearman": None}
    if len(pairs) < 3:
        return out
    a, b = np.array(pairs, dtype=float).T
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    out["pearson"] = float(pearsonr(a, b).statistic)
    out["spearman"] = float(spearmanr(a, b).statistic)
    return out


def share_of_teacher(student: float | None, teacher: float | None) -> float | None:
    """The student's score as a fraction of the teacher's (None when the teacher scores 0 or is unknown)."""
    if student is None or teacher is None or teacher <= 0:
        return None
    return student / teacher
