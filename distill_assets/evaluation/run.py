"""One stage's evaluation on held-out tasks: every system (the base student, the trained adapter, the
teacher) answers the same prompts; answers are parsed, scored against the reference plan and the
teacher's labels, stage-4 plans are coded by one fixed coder and run in the sandbox, and judged.

Systems are callables, so this module knows nothing of Dagster or of where a teacher runs. Per-system
rows are cached by content (system identity, prompts, references, settings), so a new adapter
re-evaluates only itself.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import polars as pl

from distill_assets.filecache import FileCache
from distill_assets.plans.repair import repair_plan
from distill_assets.evaluation.judge import JudgeScores
from distill_assets.evaluation.metrics import (
    HEADLINE,
    STAGE_METRICS,
    bootstrap_ci,
    correlation,
    gold_symbols,
    plan_metrics,
    reference_scope,
    relevance_metrics,
    share_of_teacher,
    symbol_metrics,
    task_analysis_metrics,
)
from distill_assets.plans.schema import Plan
from distill_assets.plans.validator import PlanContext
from distill_assets.prompts.student import parse_student_output
from distill_assets.symbols import language_for_path

EVAL_VERSION = "2"  # 2: stage 4 repaired_validity and repairs; plans are repaired before the coder
SYSTEMS = ("base", "adapter", "live", "teacher")  # live: the adapter the router serves now

ALL_METRICS = sorted({m for ms in STAGE_METRICS.values() for m in ms})
ROW_SCHEMA: dict[str, Any] = {
    "stage": pl.Utf8,
    "system": pl.Utf8,
    "system_id": pl.Utf8,
    "task_id": pl.Utf8,
    "output": pl.Utf8,
    "parse_error": pl.Utf8,
    "latency_ms": pl.Float64,
    "tokens_out": pl.Int64,
    "violations": pl.Utf8,
    "repairs": pl.Utf8,
    "exec_status": pl.Utf8,
    "diff": pl.Utf8,
    "judge_comment": pl.Utf8,
    "judge_error": pl.Utf8,
    **{m: pl.Float64 for m in ALL_METRICS},
}
SUMMARY_SCHEMA: dict[str, Any] = {
    "stage": pl.Utf8,
    "system": pl.Utf8,
    "metric": pl.Utf8,
    "headline": pl.Boolean,
    "n": pl.Int64,
    "mean": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "share_of_teacher": pl.Float64,
}


@dataclass
class EvalItem:
    task: Mapping[str, Any]
    context: Mapping[str, Any]
    messages: list[dict[str, str]]
    schema: dict | None
    prompt_hash: str
    reference: Plan  # the plan of the gold patch


@dataclass
class Generation:
    text: str | None
    tokens_out: int = 0
    latency_ms: float = 0.0
    error: str | None = None


@dataclass
class ExecOutcome:
    status: str  # passed | tests_failed | did_not_apply | timeout | crashed | no_tests | no_diff
    pass_rate: float | None  # None: the task has no selected tests


Generator = Callable[[str, Sequence[EvalItem]], list[Generation]]  # (stage, items) -> answers in order
Coder = Callable[[Sequence[tuple[EvalItem, str]]], list[tuple[str | None, str | None]]]  # -> (diff, error)
Executor = Callable[[EvalItem, str | None], ExecOutcome]  # None diff: no_diff (or no_tests)
Judge = Callable[[Sequence[tuple[EvalItem, str]]], list[tuple[JudgeScores | None, str | None]]]


@dataclass
class System:
    name: str
    identity: str  # what the answers depend on: adapter hash, base file, teacher model
    generate: Generator
    labels: bool = False  # its stage-1 answers are the labels others are compared to


@dataclass
class Downstream:
    """How plans become outcomes: one coder for every system (differences are the plan's), the sandbox,
    and the judge (optional)."""

    coder: Coder | None = None
    coder_id: str = ""
    execute: Executor | None = None
    judge: Judge | None = None
    judge_id: str = ""


def _h(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def items_key(stage: str, items: Sequence[EvalItem]) -> str:
    return _h(stage, [(i.task["task_id"], i.prompt_hash, i.reference.model_dump_json()) for i in items])


def _shown(item: EvalItem) -> list[str]:
    return [c["path"] for c in item.context.get("candidates") or []]


def _plan_ctx(item: EvalItem) -> PlanContext:
    return PlanContext.from_rows(item.context.get("file_tree") or [], item.context.get("symbols") or [])


def score_rows(
    stage: str,
    system: System,
    items: Sequence[EvalItem],
    gens: Sequence[Generation],
    labels: Mapping[str, Any] | None,
    down: Downstream,
) -> list[dict[str, Any]]:
    """Parse and score one system's answers; for stage 4 also code, execute and judge its plans."""
    rows: list[dict[str, Any]] = []
    parsed: list[Any] = []
    for item, g in zip(items, gens):
        out, err = (None, g.error) if g.text is None else parse_student_output(stage, g.text)
        parsed.append(out)
        ref = item.reference
        if stage == "task_analysis":
            langs = {f.path: language_for_path(f.path) for f in ref.affected_files}
            label = None if system.labels or labels is None else labels.get(item.task["task_id"])
            m = task_analysis_metrics(out, reference_scope(ref, langs), label)
        elif stage == "relevance":
            m = relevance_metrics(out, {f.path for f in ref.affected_files}, _shown(item))
        elif stage == "symbol_selection":
            m = symbol_metrics(out, gold_symbols(ref))
        elif stage == "plan_generation":
            m = plan_metrics(out.plan if out is not None else None, ref, _plan_ctx(item))
        else:
            m = {"validity": float(out is not None)}
        rows.append(
            {
                "stage": stage,
                "system": system.name,
                "system_id": system.identity,
                "task_id": item.task["task_id"],
                "output": (g.text or "")[:4000],
                "parse_error": err,
                "latency_ms": g.latency_ms,
                "tokens_out": g.tokens_out,
                "violations": m.pop("violations", None),
                "repairs": m.pop("repairs", None),
                **m,
            }
        )
    if stage == "plan_generation":
        _plans_downstream(rows, items, parsed, down)
    elif stage == "code_generation":
        for row, item, out in zip(rows, items, parsed):
            _execute(row, item, out.diff if out is not None else None, down)
    return rows


def _execute(row: dict, item: EvalItem, diff: str | None, down: Downstream) -> None:
    if down.execute is None:
        row["exec_status"] = "no_sandbox"
        return
    res = down.execute(item, diff or None)  # the executor says no_tests / no_diff
    row["exec_status"] = res.status
    row["diff"] = diff
    row["diff_applies"] = None if res.status == "no_tests" else float(res.status not in ("did_not_apply", "no_diff"))
    row["pass_rate"] = res.pass_rate
    row["exec_pass_rate"] = res.pass_rate


def _plans_downstream(rows: list[dict], items: Sequence[EvalItem], parsed: Sequence[Any], down: Downstream) -> None:
    # the coder and the judge see the plan the pipeline would use: its bookkeeping repaired
    todo = [
        (i, items[i], repair_plan(out.plan).plan.model_dump_json()) for i, out in enumerate(parsed) if out is not None
    ]
    if down.coder is not None and down.execute is not None:
        diffs = down.coder([(item, pj) for _, item, pj in todo])
        for (i, item, _), (diff, err) in zip(todo, diffs):
            _execute(rows[i], item, diff, down)
            rows[i]["pass_rate"] = None  # stage 4 reports its plans' pass rate as exec_pass_rate
            if err and not diff:
                rows[i]["exec_status"] = f"no_diff ({err[:80]})"
        for i, out in enumerate(parsed):
            if out is None:  # no plan: nothing to run; the downstream pass rate is 0
                rows[i].update(exec_status="no_plan", exec_pass_rate=0.0)
    if down.judge is not None and todo:
        for (i, _, _), (scores, err) in zip(todo, down.judge([(item, pj) for _, item, pj in todo])):
            if scores is not None:
                rows[i].update(scores.normalised(), judge_comment=scores.comment[:500])
            rows[i]["judge_error"] = err


class EvalCache(FileCache[pl.DataFrame]):
    """Scored rows per (stage, system identity, items, settings), as parquet files."""

    def __init__(self, root: Path):
        super().__init__(root, ".parquet", lambda df, p: df.write_parquet(p), pl.read_parquet)


def evaluate_stage(
    stage: str,
    items: Sequence[EvalItem],
    systems: Sequence[System],
    down: Downstream,
    cache: EvalCache | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, dict[str, bool]]:
    """Per-task rows for every system, and which systems came from the cache. The labelling system
    (the teacher) runs first: its stage-1 answers are the labels."""
    say = progress or (lambda m: None)
    base_key = items_key(stage, items)
    frames, hits = [], {}
    labels: dict[str, Any] = {}
    label_id = next((s.identity for s in systems if s.labels), "") if stage == "task_analysis" else ""
    for system in sorted(systems, key=lambda s: not s.labels):
        # keyed by what the answers depend on, not the system's role: the adapter evaluated as a candidate
        # yesterday is today's live adapter, and its rows are reused under the new name
        key = _h(
            EVAL_VERSION,
            stage,
            system.identity,
            base_key,
            dict(settings or {}),
            label_id,
            down.coder_id if stage in ("plan_generation", "code_generation") else "",
            down.judge_id if stage == "plan_generation" else "",
        )
        df = cache.get(key) if cache is not None else None
        hits[system.name] = df is not None
        if df is not None:
            df = df.with_columns(system=pl.lit(system.name))
        if df is None:
            say(f"{stage}: {system.name} answers {len(items)} tasks")
            gens = system.generate(stage, items)
            rows = score_rows(stage, system, items, gens, labels, down)
            df = pl.DataFrame(rows, schema=ROW_SCHEMA) if rows else pl.DataFrame(schema=ROW_SCHEMA)
            if cache is not None:
                cache.put(key, df)
        if system.labels and stage == "task_analysis":
            for r in df.iter_rows(named=True):
                out, _ = parse_student_output(stage, r["output"]) if r["output"] else (None, None)
                if out is not None:
                    labels[r["task_id"]] = out
        frames.append(df)
    rows = pl.concat(frames) if frames else pl.DataFrame(schema=ROW_SCHEMA)
    return rows, hits


def summarise(stage: str, rows: pl.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """Mean and bootstrap interval of every metric of the stage, per system, and each student system's
    share of the teacher's mean."""
    out = []
    systems = [s for s in SYSTEMS if s in set(rows["system"].to_list())] if rows.height else []
    teacher_means: dict[str, float | None] = {}
    for system in sorted(systems, key=lambda s: s != "teacher"):
        part = rows.filter(pl.col("system") == system)
        for metric in STAGE_METRICS[stage]:
            ci = bootstrap_ci(part[metric].to_list(), n_boot=n_boot, level=level, seed=seed)
            if system == "teacher":
                teacher_means[metric] = ci["mean"]
            share = None if system == "teacher" else share_of_teacher(ci["mean"], teacher_means.get(metric))
            out.append(
                {
                    "stage": stage,
                    "system": system,
                    "metric": metric,
                    "headline": metric in HEADLINE[stage],
                    **ci,
                    "share_of_teacher": share,
                }
            )
    df = pl.DataFrame(out, schema=SUMMARY_SCHEMA) if out else pl.DataFrame(schema=SUMMARY_SCHEMA)
    order = {s: i for i, s in enumerate(SYSTEMS)}
    return df.sort(pl.col("system").replace_strict(order, default=9), maintain_order=True) if df.height else df


def judge_calibration(rows: pl.DataFrame) -> dict[str, float | int | None]:
    """Correlation of the judge's mean score with the plan's execution pass rate (stage 4 rows)."""
    if not rows.height or "judge_completeness" not in rows.columns:
        return {"n": 0, "pearson": None, "spearman": None}
    judge = rows.select(pl.mean_horizontal("judge_completeness", "judge_ordering", "judge_rationale")).to_series()
    return correlation(judge.to_list(), rows["exec_pass_rate"].to_list())


__all__ = [
    "EvalItem",
    "Generation",
    "ExecOutcome",
    "System",
    "Downstream",
    "EvalCache",
    "evaluate_stage",
    "summarise",
    "judge_calibration",
    "items_key",
    "ROW_SCHEMA",
    "SUMMARY_SCHEMA",
    "SYSTEMS",
    "EVAL_VERSION",
]


def student_generator(
    engine,
    base_gguf: str,
    adapter: tuple[str, str] | None,
    *,
    max_tokens: int,
    max_string_chars: int | None,
    plan_decoder: bool = False,
) -> Generator:
    """Greedy answers of the student on llama.cpp: the base alone, or with the stage's GGUF adapter
    (``(stage, adapter path)``), decoded in the student's trained format (`prompts.student`); stage 4 by the
    bookkeeping plan decoder with ``plan_decoder``."""
    from distill_assets.prompts.student import decoding

    def generate(stage: str, items: Sequence[EvalItem]) -> list[Generation]:
        if adapter is not None and adapter[0] not in engine.adapters:
            engine.load_adapter(adapter[0], base_gguf, adapter[1])
        out = []
        for item in items:
            llm = engine.use(adapter[0]) if adapter is not None else engine.use_base(base_gguf)
            try:
                c = engine.complete(
                    llm,
                    item.messages,
                    max_tokens=max_tokens,
                    max_string_chars=max_string_chars,
                    **decoding(stage, item.schema, list(item.context.get("symbols") or []), plan_decoder),
                )
            except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the context: a counted row
                out.append(Generation(None, error=f"generation: {exc}"[:300]))
                continue
            out.append(Generation(c.text, c.tokens_out, c.latency_ms))
        return out

    return generate
