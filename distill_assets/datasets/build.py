"""Training sets: TRL conversational prompt/completion rows (SFT) and preference pairs (DPO).

Stage 4 completions are ``[REASONING] ... [PLAN] {json}``: the reasoning span
first, the plan span second (the trainer weighs the plan span higher). Every
row says where it came from (``source``: a teacher or ``reference``) and
carries the task's split and curriculum difficulty.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any, Iterable, Mapping

import polars as pl

from distill_assets.plans.schema import MODULE, Plan
from distill_assets.prompts.schemas import (
    MAX_SYMBOLS,
    STAGE_MODELS,
    FileRelevance,
    RelevanceOutput,
    SelectedSymbol,
    SymbolSelectionOutput,
    selection_allowed,
)

from distill_assets.prompts.tags import PLAN_TAG, REASONING_TAG

SFT_SCHEMA = {
    "task_id": pl.Utf8,
    "stage": pl.Utf8,
    "split": pl.Utf8,
    "source": pl.Utf8,
    "difficulty": pl.Utf8,
    "prompt": pl.Utf8,
    "completion": pl.Utf8,
    "pass_rate": pl.Float64,
    "candidate_key": pl.Utf8,
}
DPO_SCHEMA = {
    "task_id": pl.Utf8,
    "stage": pl.Utf8,
    "split": pl.Utf8,
    "difficulty": pl.Utf8,
    "prompt": pl.Utf8,
    "chosen": pl.Utf8,
    "rejected": pl.Utf8,
    "chosen_source": pl.Utf8,
    "rejected_source": pl.Utf8,
    "chosen_pass_rate": pl.Float64,
    "rejected_pass_rate": pl.Float64,
    "margin": pl.Float64,
}


def plan_completion(reasoning: str, plan: Plan | str) -> str:
    plan_json = plan if isinstance(plan, str) else plan.model_dump_json()
    return f"{REASONING_TAG} {reasoning.strip()}\n{PLAN_TAG} {plan_json}"


def completion_text(stage: str, parsed_json: str) -> str:
    data = STAGE_MODELS[stage].model_validate_json(parsed_json)
    if stage == "plan_generation":
        return plan_completion(data.reasoning, data.plan)
    return data.model_dump_json()


def reference_plan_completion(plan_json: str) -> str:
    plan = Plan.model_validate_json(plan_json)
    return plan_completion(plan.rationale or plan.task_summary, plan)


_VERB = {"modify": "modifies", "add": "adds", "delete": "deletes", "rename": "renames"}


def _what_changes(f) -> str:
    named = [f"{_VERB[c.action]} {c.symbol if c.symbol != MODULE else 'module-level code'}" for c in f.changes]
    return "the change " + ", ".join(named[:6]) + (f" and {len(named) - 6} more" if len(named) > 6 else "")


def reference_relevance_completion(plan_json: str, shown: list[str]) -> str | None:
    """Stage 2 as the gold patch answers it: every candidate file shown in the prompt, relevant exactly when
    the reference plan changes it (None when the prompt showed no candidate)."""
    if not shown:
        return None
    plan = Plan.model_validate_json(plan_json)
    changed = {f.path: f for f in plan.affected_files}
    files = [
        FileRelevance(
            path=p,
            relevant=p in changed,
            reason=_what_changes(changed[p]) if p in changed else "the change does not touch this file",
        )
        for p in shown
    ]
    return RelevanceOutput(files=files).model_dump_json()


def reference_symbols_completion(
    plan_json: str, schema: dict[str, Any] | None = None, stats: Counter | None = None
) -> str | None:
    """Stage 3 as the gold patch answers it: the reference plan's named symbols with their actions (module-level
    changes are not symbols; None when the plan names none). With the task's stage-3 ``schema``, only the
    selections it allows: an existing symbol the prompt does not show is one the student could not have read
    nor, under the schema's grammar, write, so training on it teaches invention (``stats`` counts them)."""
    plan = Plan.model_validate_json(plan_json)
    named = [(f.path, c) for f in plan.affected_files for c in f.changes if c.symbol != MODULE]
    if schema is not None:
        kept = [(p, c) for p, c in named if selection_allowed(schema, p, c.symbol, c.action)]
        if stats is not None:
            stats["symbols_shown"] += len(kept)
            stats["symbols_not_shown"] += len(named) - len(kept)
            stats["tasks_with_no_shown_symbol"] += bool(named and not kept)
        named = kept
    symbols = [
        SelectedSymbol(
            path=p, symbol=c.symbol, action=c.action, reason=c.description or f"{c.action} {c.symbol} for the change"
        )
        for p, c in named
    ][:MAX_SYMBOLS]
    return SymbolSelectionOutput(symbols=symbols).model_dump_json() if symbols else None


def reference_completion(
    stage: str, plan_json: str, shown: list[str], schema: dict[str, Any] | None = None, stats: Counter | None = None
) -> str | None:
    """The reference (gold patch) answer of a stage, in the stage's trained format; None where the gold patch
    gives no answer for the stage (stage 1 has no gold label, stage 5's is the diff itself). ``schema``: the
    task's schema, which limits the stage-3 answer to what the prompt shows (`reference_symbols_completion`)."""
    if stage == "relevance":
        return reference_relevance_completion(plan_json, shown)
    if stage == "symbol_selection":
        return reference_symbols_completion(plan_json, schema, stats)
    if stage == "plan_generation":
        return reference_plan_completion(plan_json)
    return None


def reference_rows(
    stage: str,
    reference_plans: pl.DataFrame,
    task_contexts: pl.DataFrame,
    test_selections: pl.DataFrame,
    gold_executions: pl.DataFrame | None,
    schemas: Mapping[str, str] | None = None,
    stats: Counter | None = None,
) -> list[tuple[str, str, str, float | None]]:
    """The gold patch's SFT rows of a stage, as ``(task_id, "reference", completion, pass rate)`` for
    :func:`sft_rows`: stages 2-4 from each usable reference plan (stage 2 among the candidates the task's
    context shows; a stage-4 pass rate of 1.0 where the task's tests are selected, the gold patch passing
    them by construction), stage 5 the gold diff of each gold execution with its measured pass rate.
    ``schemas``: task id -> the task's stage prompt schema (JSON); stage 3 keeps only the selections it allows,
    and ``stats`` counts what was left out."""
    rows: list[tuple[str, str, str, float | None]] = []
    if stage in ("relevance", "symbol_selection", "plan_generation"):
        shown = {r["task_id"]: [c["path"] for c in r["candidates"] or []] for r in task_contexts.iter_rows(named=True)}
        selected = (
            {r["task_id"] for r in test_selections.iter_rows(named=True) if r.get("status") == "selected"}
            if "status" in test_selections.columns
            else set()
        )
        for r in reference_plans.filter(pl.col("usable")).iter_rows(named=True):
            schema = (schemas or {}).get(r["task_id"]) if stage == "symbol_selection" else None
            completion = reference_completion(
                stage, r["plan_json"], shown.get(r["task_id"], []), json.loads(schema) if schema else None, stats
            )
            if completion is not None:
                gold = 1.0 if stage == "plan_generation" and r["task_id"] in selected else None
                rows.append((r["task_id"], "reference", completion, gold))
    elif stage == "code_generation" and gold_executions is not None and gold_executions.height:
        for r in gold_executions.filter(pl.col("coder") == "gold").iter_rows(named=True):
            rows.append((r["task_id"], "reference", json.dumps({"diff": r["diff"]}), r["pass_rate"]))
    return rows


def as_messages(completion: str) -> str:
    return json.dumps([{"role": "assistant", "content": completion}])


def prompt_messages(messages_json: str) -> str:
    return messages_json  # TRL conversational: the list of system/user messages, as JSON


def sft_rows(
    stage: str,
    candidates: pl.DataFrame,
    prompts: Mapping[str, str],
    tasks: Mapping[str, Mapping],
    difficulty: Mapping[str, str],
    pass_rates: Mapping[str, float | None],
    min_pass_rate: float,
    max_per_task: int,
    references: Iterable[tuple[str, str, str, float | None]] = (),
) -> pl.DataFrame:
    """Kept candidates (with a passing execution where the task is scored by tests), capped per task,
    plus reference rows (task_id, source, completion, pass rate)."""
    rows: list[dict[str, Any]] = []
    per_task: dict[str, int] = defaultdict(int)
    for task_id, source, completion, rate in references:
        if task_id in prompts and per_task[task_id] < max_per_task:
            per_task[task_id] += 1
            rows.append(
                _sft(
                    stage,
                    task_id,
                    source,
                    prompts[task_id],
                    completion,
                    rate,
                    f"reference:{task_id}",
                    tasks,
                    difficulty,
                )
            )
    ordered = candidates.sort(["task_id", "sample_index"]) if candidates.height else candidates
    for r in ordered.iter_rows(named=True):
        if r["task_id"] not in prompts or per_task[r["task_id"]] >= max_per_task:
            continue
        rate = pass_rates.get(r["request_key"])
        if rate is not None and rate < min_pass_rate:
            continue  # scored by tests, and the tests did not pass
        per_task[r["task_id"]] += 1
        rows.append(
            _sft(
                stage,
                r["task_id"],
                r["source"],
                prompts[r["task_id"]],
                completion_text(stage, r["parsed_json"]),
                rate,
                r["request_key"],
                tasks,
                difficulty,
            )
        )
    return pl.DataFrame(rows, schema=SFT_SCHEMA) if rows else pl.DataFrame(schema=SFT_SCHEMA)


def _sft(stage, task_id, source, prompt, completion, rate, key, tasks, difficulty) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "stage": stage,
        "split": tasks[task_id]["split"],
        "source": source,
        "difficulty": difficulty.get(task_id, "medium"),
        "prompt": prompt_messages(prompt),
        "completion": as_messages(completion),
        "pass_rate": rate,
        "candidate_key": key,
    }


def dpo_rows(
    stage: str,
    scored: Mapping[tuple[str, str], list[dict[str, Any]]],
    prompts: Mapping[str, str],
    tasks: Mapping[str, Mapping],
    difficulty: Mapping[str, str],
    margin: float,
) -> pl.DataFrame:
    """``scored``: (task_id, prompt key) -> candidates {completion, source, pass_rate, valid, can_reject}.
    chosen = highest pass rate; rejected = lowest pass rate among structurally valid candidates that may
    be rejected (teacher outputs, never the reference); only with at least ``margin`` between them."""
    rows = []
    for (task_id, prompt_key), cands in scored.items():
        rated = [c for c in cands if c["pass_rate"] is not None and c["valid"]]
        if len(rated) < 2 or prompt_key not in prompts:
            continue
        chosen = max(rated, key=lambda c: (c["pass_rate"], c["source"] == "reference"))
        rejectable = [c for c in rated if c.get("can_reject", True) and c is not chosen]
        if not rejectable:
            continue
        rejected = min(rejectable, key=lambda c: c["pass_rate"])
        gap = chosen["pass_rate"] - rejected["pass_rate"]
        if gap < margin or gap <= 0:
            continue
        rows.append(
            {
                "task_id": task_id,
                "stage": stage,
                "split": tasks[task_id]["split"],
                "difficulty": difficulty.get(task_id, "medium"),
                "prompt": prompts[prompt_key],
                "chosen": as_messages(chosen["completion"]),
                "rejected": as_messages(rejected["completion"]),
                "chosen_source": chosen["source"],
                "rejected_source": rejected["source"],
                "chosen_pass_rate": chosen["pass_rate"],
                "rejected_pass_rate": rejected["pass_rate"],
                "margin": round(gap, 4),
            }
        )
    return pl.DataFrame(rows, schema=DPO_SCHEMA) if rows else pl.DataFrame(schema=DPO_SCHEMA)
