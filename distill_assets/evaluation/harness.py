"""Everything one stage's evaluation needs besides its inputs, behind one call: which held-out tasks are
evaluated, which systems answer them (the base student, the candidate adapter, the live adapter, the
teacher), the fixed coder, the sandbox and the judge of stage-4 plans, the llama.cpp engine's life time,
and the summary. Teacher calls go through ``answers`` (name, requests -> answers, cached by the caller), so
this module knows nothing of Dagster or of where a teacher runs."""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import polars as pl

from distill_assets.config import ConfigError, DistillConfig, resolve_model_file
from distill_assets.evaluation.judge import SCHEMA as JUDGE_SCHEMA
from distill_assets.evaluation.judge import judge_messages, messages_hash, parse_judge
from distill_assets.evaluation.run import (
    Downstream,
    EvalCache,
    EvalItem,
    ExecOutcome,
    Generation,
    System,
    evaluate_stage,
    student_generator,
    summarise,
)
from distill_assets.plans.schema import Plan
from distill_assets.router.plan_decoder import PLAN_DECODER_VERSION
from distill_assets.sandbox import Limits
from distill_assets.scoring.executions import PlanToRun, SandboxCache, coder_requests, parse_diff, run_in_sandbox
from distill_assets.teachers.client import TeacherAnswer, TeacherRequest

Answers = Callable[[str, list[TeacherRequest]], list[TeacherAnswer]]  # teacher name, requests -> answers


class EvaluationSetupError(Exception):
    """What is missing to evaluate a stage, in one line (no base model, a broken adapter)."""


@dataclass
class StudentAdapter:
    sha256: str
    gguf_path: str
    base_gguf: str


@dataclass
class StageEvaluation:
    rows: pl.DataFrame
    summary: pl.DataFrame
    systems: list[str]
    cache_hits: list[str]
    teacher: str | None
    coder: str | None
    judge: str | None
    n_tasks: int
    counts: dict[str, int] = field(default_factory=dict)


def held_out_items(
    cfg: DistillConfig,
    stage_prompts: pl.DataFrame,
    reference_plans: pl.DataFrame,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
    selections: Mapping[str, Mapping[str, Any]],
) -> tuple[list[EvalItem], dict[str, int]]:
    """Test-split prompts with a usable reference plan; tasks with selected tests first (they give execution
    metrics), then by id; at most evaluation.max_tasks. Also how many test prompts were seen and dropped."""
    tasks = {r["task_id"]: r for r in change_tasks.iter_rows(named=True)}
    ctxs = {r["task_id"]: r for r in task_contexts.iter_rows(named=True)}
    refs = {r["task_id"]: r["plan_json"] for r in reference_plans.filter(pl.col("usable")).iter_rows(named=True)}
    counts = {"test_prompts": 0, "no_reference_plan": 0}
    items = []
    for r in stage_prompts.filter(pl.col("split") == "test").sort("task_id").iter_rows(named=True):
        counts["test_prompts"] += 1
        tid = r["task_id"]
        if tid not in refs or tid not in tasks or tid not in ctxs:
            counts["no_reference_plan"] += 1
            continue
        items.append(
            EvalItem(
                tasks[tid],
                ctxs[tid],
                json.loads(r["messages_json"]),
                json.loads(r["schema_json"]) if r["schema_json"] else None,
                r["prompt_hash"],
                Plan.model_validate_json(refs[tid]),
            )
        )
    items.sort(key=lambda i: (selections.get(i.task["task_id"], {}).get("status") != "selected", i.task["task_id"]))
    if cfg.evaluation.max_tasks:
        items = items[: cfg.evaluation.max_tasks]
    return items, counts


def first_available(cfg: DistillConfig, stage: str, preferred: str | None) -> str | None:
    """The preferred teacher when it is usable, else the stage's first available teacher."""
    names = [preferred] if preferred else cfg.stage(stage).teachers
    for name in names:
        if cfg.stage_teacher_status(stage, name)[0] or (preferred and cfg.teacher(name).availability()[0]):
            return name
    return None


def base_model(cfg: DistillConfig, stage: str, candidate: StudentAdapter | None) -> str:
    """The base GGUF the students run on: the candidate's, else the stage's configured inference base."""
    if candidate is not None:
        return candidate.base_gguf
    try:
        return str(resolve_model_file(cfg.stage(stage).inference_gguf() or ""))
    except ConfigError as exc:
        raise EvaluationSetupError(f"{stage}: no base GGUF to evaluate the student on: {exc}") from None


class _Students:
    """One llama.cpp engine for every student system of the step, opened on first use."""

    def __init__(self, cfg: DistillConfig, stage: str, stack: ExitStack, max_tokens: int):
        self.cfg, self.stage, self.stack, self.max_tokens = cfg, stage, stack, max_tokens
        self.engine = None

    def system(self, name: str, base_gguf: str, adapter: StudentAdapter | None) -> System:
        from distill_assets.router.engine import RouterError, StageEngine

        def generate(stage_key: str, items: Sequence[EvalItem]) -> list[Generation]:
            if self.engine is None:
                self.engine = StageEngine.for_config(self.cfg)
                self.stack.callback(self.engine.close)
            slot = (f"{self.stage}@{name}", adapter.gguf_path) if adapter is not None else None
            gen = student_generator(
                self.engine,
                base_gguf,
                slot,
                max_tokens=self.max_tokens,
                max_string_chars=self.cfg.router.max_string_chars,
                plan_decoder=self.cfg.router.plan_decoder,
            )
            try:
                return gen(stage_key, items)
            except RouterError as exc:
                raise EvaluationSetupError(f"{self.stage}: {name}: {exc}") from None

        if adapter is not None:
            return System(name, f"adapter:{adapter.sha256}", generate)
        base = Path(base_gguf)
        return System(name, f"base:{base}:{base.stat().st_size}", generate)


def _teacher_system(cfg: DistillConfig, stage: str, name: str, answers: Answers) -> System:
    st, ev, teacher = cfg.stage(stage), cfg.evaluation, cfg.teacher(name)
    cap = min(
        st.max_output_tokens,
        teacher.max_output_tokens or st.max_output_tokens,
        ev.max_output_tokens or st.max_output_tokens,
    )

    def generate(stage_key: str, items: Sequence[EvalItem]) -> list[Generation]:
        reqs = [
            TeacherRequest(i.task["task_id"], stage_key, i.prompt_hash, 0, i.messages, i.schema, st.temperature, cap)
            for i in items
        ]
        by_task = {a.request.task_id: a for a in answers(name, reqs)}
        out = []
        for i in items:
            a = by_task.get(i.task["task_id"])
            out.append(
                Generation(None, error="no answer")
                if a is None
                else Generation(a.content, a.tokens_out, a.latency_s * 1000, a.error)
            )
        return out

    return System("teacher", f"teacher:{name}:{teacher.model}", generate, labels=True)


def _downstream(
    cfg: DistillConfig, answers: Answers, selections: Mapping[str, Mapping[str, Any]], sandbox_backends=None
) -> Downstream:
    """The fixed coder (the code stage's first available teacher), the sandbox and the judge."""
    sbx, ev = cfg.sandbox, cfg.evaluation
    limits = Limits(timeout_s=sbx.timeout_s, memory_mb=sbx.memory_mb, max_processes=sbx.max_processes)
    sandbox_cache = SandboxCache(cfg.resolved_cache_dir() / "sandbox_runs")
    coder_name = first_available(cfg, "code_generation", None)
    judge_name = first_available(cfg, "plan_generation", ev.judge) if ev.judge_enabled else None
    code_st = cfg.stage("code_generation")

    def coder(pairs):
        coder_t = cfg.teacher(coder_name)
        plans = [PlanToRun(i.task["task_id"], "evaluation", f"eval:{i.task['task_id']}", pj) for i, pj in pairs]
        tasks = {i.task["task_id"]: i.task for i, _ in pairs}
        ctxs = {i.task["task_id"]: i.context for i, _ in pairs}
        cap = min(code_st.max_output_tokens, coder_t.max_output_tokens or code_st.max_output_tokens)
        reqs = coder_requests(
            plans, tasks, ctxs, code_st.prompt_token_budget, cfg.context.chars_per_token, 1, code_st.temperature, cap
        )
        return [
            parse_diff(a.content) if a.error is None else (None, a.error)
            for a in answers(coder_name, [r for _, r in reqs])
        ]

    def execute(item: EvalItem, diff: str | None) -> ExecOutcome:
        s = selections.get(item.task["task_id"])
        if s is None or s["status"] != "selected":
            return ExecOutcome("no_tests", None)
        if not diff:
            return ExecOutcome("no_diff", 0.0)
        res, _ = run_in_sandbox(
            item.task,
            s,
            diff,
            sbx.test_commands.get(item.task["repo"], []),
            sbx.backend,
            sbx.docker_image,
            limits,
            sandbox_cache,
            **({"backends": sandbox_backends} if sandbox_backends else {}),
        )
        return ExecOutcome(res.status, res.pass_rate)

    def judge(pairs):
        reqs = []
        for i, pj in pairs:
            msgs = judge_messages(i.task, pj)
            reqs.append(
                TeacherRequest(i.task["task_id"], "judge", messages_hash(msgs), 0, msgs, JUDGE_SCHEMA, 0.0, 300)
            )
        return [parse_judge(a.content) if a.error is None else (None, a.error) for a in answers(judge_name, reqs)]

    return Downstream(
        coder=coder if coder_name else None,
        coder_id=coder_name or "",
        execute=execute,
        judge=judge if judge_name else None,
        judge_id=judge_name or "",
    )


def evaluate(
    cfg: DistillConfig,
    stage: str,
    items: Sequence[EvalItem],
    *,
    candidate: StudentAdapter | None,
    live: StudentAdapter | None,
    answers: Answers,
    selections: Mapping[str, Mapping[str, Any]],
    sandbox_backends=None,
    progress: Callable[[str], None] | None = None,
) -> StageEvaluation:
    """Base student, candidate adapter, live adapter (when one is live and it is not the candidate) and
    teacher on the same held-out ``items``; per-task rows cached by content, and their summary."""
    ev, st = cfg.evaluation, cfg.stage(stage)
    base_gguf = base_model(cfg, stage, candidate)
    max_tokens = ev.max_output_tokens or st.max_output_tokens
    with ExitStack() as stack:
        students = _Students(cfg, stage, stack, max_tokens)
        systems = [students.system("base", base_gguf, None)]
        if candidate is not None:
            systems.append(students.system("adapter", base_gguf, candidate))
        if (
            live is not None
            and (candidate is None or live.sha256 != candidate.sha256)
            and Path(live.gguf_path).exists()
        ):
            systems.append(students.system("live", live.base_gguf, live))
        teacher_name = first_available(cfg, stage, ev.teacher)
        if teacher_name:
            systems.append(_teacher_system(cfg, stage, teacher_name, answers))
        down = _downstream(cfg, answers, selections, sandbox_backends)
        settings = {
            "max_tokens": max_tokens,
            "max_string_chars": cfg.router.max_string_chars,
            "n_ctx": cfg.router.n_ctx,
            "served": [cfg.router.requantize, cfg.router.flash_attn],
            "sandbox": [cfg.sandbox.backend, cfg.sandbox.test_commands],
        }
        if cfg.router.plan_decoder and stage == "plan_generation":  # (absent otherwise: the cached rows stand)
            settings["plan_decoder"] = PLAN_DECODER_VERSION
        rows, hits = evaluate_stage(
            stage,
            items,
            systems,
            down,
            EvalCache(cfg.resolved_cache_dir() / "evaluations"),
            settings,
            progress=progress,
        )
    summary = summarise(stage, rows, n_boot=ev.bootstrap, level=ev.ci_level, seed=ev.seed)
    return StageEvaluation(
        rows,
        summary,
        [s.name for s in systems],
        [s.name for s in systems if hits.get(s.name)],
        teacher_name,
        down.coder_id or None,
        down.judge_id or None,
        len(items),
    )


__all__ = [
    "Answers",
    "EvaluationSetupError",
    "StudentAdapter",
    "StageEvaluation",
    "held_out_items",
    "first_available",
    "base_model",
    "evaluate",
]
