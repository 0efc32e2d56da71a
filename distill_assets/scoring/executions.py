"""Execution scoring: plan -> the stage-5 teacher writes code -> the sandbox runs the task's tests.

Coder answers are cached by the teacher response cache (its key covers the
plan, the coder model and the sample index); sandbox runs are cached by task,
diff and selected tests. A rerun after a crash redoes neither.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import polars as pl

from distill_assets.config import DistillConfig, Teacher
from distill_assets.filecache import FileCache, content_key
from distill_assets.prompts.builders import build_prompt
from distill_assets.prompts.schemas import parse_output
from distill_assets.sandbox import Limits, RunResult, SandboxUnavailable, execute, get_backend, partition_patch
from distill_assets.sandbox.plans import TestPlan, plan_for_commands
from distill_assets.teachers.client import TeacherRequest
from distill_assets.teachers.runner import samples_for

SELECTION_SCHEMA = {
    "task_id": pl.Utf8,
    "repo": pl.Utf8,
    "status": pl.Utf8,
    "detail": pl.Utf8,
    "fail_to_pass": pl.List(pl.Utf8),
    "pass_to_pass": pl.List(pl.Utf8),
    "before_status": pl.Utf8,
    "after_status": pl.Utf8,
    "gold_pass_rate": pl.Float64,
    "backend": pl.Utf8,
    "env_key": pl.Utf8,
    "runner": pl.Utf8,
    "plan_json": pl.Utf8,
    "seconds": pl.Float64,
}

EXECUTION_SCHEMA = {
    "task_id": pl.Utf8,
    "plan_source": pl.Utf8,
    "plan_key": pl.Utf8,
    "plan_hash": pl.Utf8,
    "coder": pl.Utf8,
    "coder_model": pl.Utf8,
    "sample_index": pl.Int64,
    "code_key": pl.Utf8,
    "diff": pl.Utf8,
    "code_error": pl.Utf8,
    "status": pl.Utf8,
    "pass_rate": pl.Float64,
    "n_selected": pl.Int64,
    "duration_s": pl.Float64,
    "sandbox_cached": pl.Boolean,
    "scored_by": pl.Utf8,
}


def plan_hash(plan_json: str) -> str:
    return hashlib.sha256(json.dumps(json.loads(plan_json), sort_keys=True).encode()).hexdigest()


@dataclass
class PlanToRun:
    task_id: str
    source: str  # the plan's teacher, or "reference"
    key: str  # the candidate's request key, or "reference:<task>"
    plan_json: str  # the Plan (not the reasoning wrapper)


@dataclass
class ExecutionPlan:
    plans: list[PlanToRun]  # every plan of the source whose task has a context
    scored: list[PlanToRun]  # those whose task has selected tests: scored by running them
    coded: list[PlanToRun]  # those the coder writes code for


def execution_plan(
    by_source: Mapping[str, Mapping[str, list]],
    source: str,
    tasks: Mapping[str, Mapping],
    contexts: Mapping[str, Mapping],
    selections: Mapping[str, Mapping],
    max_plans_per_task: int,
    coder_max_tasks: int | None,
) -> ExecutionPlan:
    """Which plans of ``source`` run: at most ``max_plans_per_task`` per task; tests only where the task's
    selection is "selected" (the rest are scored by overlap only); a capped (small, local) coder writes code
    for its first ``coder_max_tasks`` tasks, train split first."""
    plans = [
        PlanToRun(task_id, source, key, plan_json)
        for task_id, by_src in by_source.items()
        if task_id in tasks and task_id in contexts
        for key, plan_json, _ in by_src.get(source, [])[:max_plans_per_task]
    ]
    scored = [p for p in plans if (selections.get(p.task_id) or {}).get("status") == "selected"]
    coded = scored
    if coder_max_tasks:
        rank = {"train": 0, "val": 1, "test": 2}
        first = set(
            sorted({p.task_id for p in scored}, key=lambda t: (rank.get(tasks[t]["split"], 3), t))[:coder_max_tasks]
        )
        coded = [p for p in scored if p.task_id in first]
    return ExecutionPlan(plans, scored, coded)


def execution_row(
    p: PlanToRun,
    coder: str | None,
    model: str | None,
    sample_index: int,
    code_key: str | None,
    diff: str | None,
    code_error: str | None,
    result: RunResult | None,
    cached: bool,
) -> dict[str, Any]:
    """One plan_executions row: a diff run in the sandbox (``result``), or no diff ("no_diff", pass rate 0)."""
    return {
        "task_id": p.task_id,
        "plan_source": p.source,
        "plan_key": p.key,
        "plan_hash": plan_hash(p.plan_json),
        "coder": coder,
        "coder_model": model,
        "sample_index": sample_index,
        "code_key": code_key,
        "diff": diff,
        "code_error": code_error,
        "status": result.status if result else "no_diff",
        "pass_rate": result.pass_rate if result else 0.0,
        "n_selected": len(result.selected) if result else 0,
        "duration_s": result.duration_s if result else 0.0,
        "sandbox_cached": cached,
        "scored_by": "tests",
    }


def overlap_only_row(p: PlanToRun) -> dict[str, Any]:
    """A plan whose task has no selected tests: nothing runs; it is scored by agreement only."""
    return {
        "task_id": p.task_id,
        "plan_source": p.source,
        "plan_key": p.key,
        "plan_hash": plan_hash(p.plan_json),
        "coder": None,
        "coder_model": None,
        "sample_index": 0,
        "code_key": None,
        "diff": None,
        "code_error": None,
        "status": "no_tests",
        "pass_rate": None,
        "n_selected": 0,
        "duration_s": 0.0,
        "sandbox_cached": False,
        "scored_by": "overlap_only",
    }


def coder_requests_for(
    cfg: DistillConfig,
    coder: Teacher,
    plans: list[PlanToRun],
    tasks: Mapping[str, Mapping],
    contexts: Mapping[str, Mapping],
) -> list[tuple[PlanToRun, TeacherRequest]]:
    """The coder's requests for ``plans``: the stage-5 prompt budget, temperature and output cap (lowered to
    the coder's own cap), ``scoring.executions_per_plan`` samples (at most what the coder may give)."""
    st = cfg.stage("code_generation")
    max_tokens = min(st.max_output_tokens, coder.max_output_tokens or st.max_output_tokens)
    samples = min(cfg.scoring.executions_per_plan, samples_for(st, coder))
    budget, cpt = st.prompt_token_budget, cfg.context.chars_per_token
    return coder_requests(plans, tasks, contexts, budget, cpt, samples, st.temperature, max_tokens)


def coder_requests(
    plans: list[PlanToRun],
    tasks: Mapping[str, Mapping],
    contexts: Mapping[str, Mapping],
    budget_tokens: int,
    chars_per_token: float,
    samples: int,
    temperature: float,
    max_tokens: int,
) -> list[tuple[PlanToRun, TeacherRequest]]:
    out = []
    for p in plans:
        prompt = build_prompt(
            "code_generation",
            tasks[p.task_id],
            contexts[p.task_id],
            budget_tokens=budget_tokens,
            chars_per_token=chars_per_token,
            reference_plan=p.plan_json,
        )
        for i in range(samples):
            out.append(
                (
                    p,
                    TeacherRequest(
                        task_id=p.task_id,
                        stage="code_generation",
                        prompt_hash=prompt.prompt_hash,
                        sample_index=i,
                        messages=prompt.messages,
                        schema=prompt.schema,
                        temperature=temperature,
                        max_tokens=max_tokens,
                    ),
                )
            )
    return out


class SandboxCache(FileCache[RunResult]):
    """Sandbox results by content: task, diff, selected tests, commands, backend."""

    key = staticmethod(content_key)

    def __init__(self, root: Path):
        super().__init__(
            root, ".json", lambda r, p: p.write_text(r.to_json()), lambda p: RunResult.from_json(p.read_text())
        )


def selection_plan(selection: Mapping[str, Any] | None, commands: list[str]) -> TestPlan:
    """The test plan a task's selection ran with (its environment included); plain commands for old rows."""
    if selection is not None and selection.get("plan_json"):
        return TestPlan(**json.loads(selection["plan_json"]))
    return plan_for_commands(commands)


def run_in_sandbox(
    task: Mapping[str, Any],
    selection: Mapping[str, Any] | None,
    diff: str,
    commands: list[str],
    backend_name: str,
    image: str | None,
    limits: Limits,
    cache: SandboxCache,
    backends: Callable[[str, str | None], Any] = get_backend,
) -> tuple[RunResult, bool]:
    """(result, from cache). Tasks without selected tests are not run: status 'no_tests'. The run uses the same
    plan (runner, environment) as the task's test selection; ``backends`` makes the backend by name (the
    Dagster layer passes one that also knows dagster_docker)."""
    if selection is None or selection["status"] != "selected":
        return RunResult("no_tests", 0.0, backend=backend_name), False
    selected = sorted(set(selection["fail_to_pass"]) | set(selection["pass_to_pass"]))
    _, test_part = partition_patch(task["gold_patch"], task["test_files"])
    plan = selection_plan(selection, commands)
    key = SandboxCache.key(task["task_id"], task["base_commit"], diff, test_part, selected, plan.key(), backend_name)
    hit = cache.get(key)
    if hit is not None:
        return hit, True
    backend = backends(backend_name, image)
    res = execute(
        task["repo_path"], task["base_commit"], diff, plan, backend, limits, test_patch=test_part, selected=selected
    )
    cache.put(key, res)
    return res, False


def parse_diff(raw_text: str | None) -> tuple[str | None, str | None]:
    parsed, err = parse_output("code_generation", raw_text or "")
    return (parsed.diff, None) if parsed is not None else (None, err)


__all__ = [
    "PlanToRun",
    "SandboxCache",
    "coder_requests",
    "run_in_sandbox",
    "parse_diff",
    "plan_hash",
    "SELECTION_SCHEMA",
    "EXECUTION_SCHEMA",
    "SandboxUnavailable",
]


@dataclass
class PlanRunner:
    """Runs a plan's diff on its task in the sandbox (cached); ``None`` diff: nothing runs."""

    tasks: Mapping[str, Mapping[str, Any]]
    selections: Mapping[str, Mapping[str, Any]]
    test_commands: Mapping[str, list[str]]  # repo -> configured test commands
    backend: str
    image: str | None
    limits: Limits
    cache: SandboxCache
    backends: Callable[[str, str | None], Any] = get_backend

    @classmethod
    def from_config(
        cls,
        cfg: DistillConfig,
        tasks: Mapping[str, Mapping[str, Any]],
        selections: Mapping[str, Mapping[str, Any]],
        backends: Callable[[str, str | None], Any] = get_backend,
    ) -> "PlanRunner":
        sb = cfg.sandbox
        limits = Limits(timeout_s=sb.timeout_s, memory_mb=sb.memory_mb, max_processes=sb.max_processes)
        cache = SandboxCache(cfg.resolved_cache_dir() / "sandbox_runs")
        return cls(tasks, selections, sb.test_commands, sb.backend, sb.docker_image, limits, cache, backends)

    def __call__(self, p: PlanToRun, diff: str | None) -> tuple[RunResult | None, bool]:
        if diff is None:
            return None, False
        task = self.tasks[p.task_id]
        return run_in_sandbox(
            task,
            self.selections.get(p.task_id),
            diff,
            list(self.test_commands.get(task["repo"], [])),
            self.backend,
            self.image,
            self.limits,
            self.cache,
            self.backends,
        )


def execution_rows(
    ex: ExecutionPlan,
    coded: list[tuple[PlanToRun, Any]],
    coder: str,
    coder_model: str,
    run: PlanRunner,
    with_gold: bool = False,
) -> list[dict[str, Any]]:
    """plan_executions rows: each coder answer (``coded``: plan and its TeacherAnswer) parsed and run; with
    ``with_gold`` (the reference source) also the gold code of each scored task, the upper bound and the
    chosen side of stage-5 DPO; then the plans scored by overlap only."""
    rows = []
    for p, ans in coded:
        diff, err = parse_diff(ans.content) if ans.error is None else (None, ans.error)
        rows.append(execution_row(p, coder, coder_model, ans.request.sample_index, ans.key, diff, err, *run(p, diff)))
    if with_gold:
        for p in ex.scored:
            task = run.tasks[p.task_id]
            code, _ = partition_patch(task["gold_patch"], task["test_files"])
            rows.append(execution_row(p, "gold", "gold_patch", 0, f"gold:{p.task_id}", code, None, *run(p, code)))
    rows += [overlap_only_row(p) for p in ex.plans if p not in ex.scored]
    return rows
