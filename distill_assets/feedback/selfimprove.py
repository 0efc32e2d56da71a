"""Self-improvement from production logs: the student's answers on tasks that later passed become training rows.

``feedback_rows``: routed stage queries whose task later succeeded (the diff applied and the tests
passed) become student-generated training rows, in the SFT table's shape (``source = "student"``).
``accumulate``: the pool of such rows only grows across rounds (keyed by run and stage); it never
replaces teacher data. ``mix``: teacher rows plus student rows at a configured share (default 30 %).
``stage4_gate``: stage 4 learns from its own plans last: only once stage 5 is stable, enough logged
tasks have outcomes, and the logged plans' baseline pass rate is high enough.
``diversity``: distinct n-grams and the MinHash spread of completions, for the collapse monitor.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Iterable, Mapping

import polars as pl

from distill_assets.datasets.build import SFT_SCHEMA, plan_completion
from distill_assets.prompts.student import parse_student_output
from distill_assets.scoring.validate import minhash

FEEDBACK_SCHEMA = {
    "run_id": pl.Utf8,
    "stage": pl.Utf8,
    "ts": pl.Utf8,
    "repo": pl.Utf8,
    "task_text": pl.Utf8,
    "adapter_sha256": pl.Utf8,
    "prompt": pl.Utf8,
    "output": pl.Utf8,
    "parsed_ok": pl.Boolean,
    "diff_applied": pl.Boolean,
    "tests_passed": pl.Boolean,
    "success": pl.Boolean,
}
POOL_SCHEMA = {**SFT_SCHEMA, "run_id": pl.Utf8, "round": pl.Int64}


def feedback_rows(queries: Iterable[Mapping[str, Any]], outcomes: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """One row per logged stage query with its task's outcome (None where none was reported)."""
    by_run = {o["run_id"]: o for o in outcomes}
    rows = []
    for q in queries:
        o = by_run.get(q["run_id"], {})
        tests = o.get("tests_passed")
        rows.append(
            {
                "run_id": q["run_id"],
                "stage": q["stage"],
                "ts": str(q.get("ts") or ""),
                "repo": q.get("repo"),
                "task_text": q.get("task_text"),
                "adapter_sha256": q.get("adapter_sha256"),
                "prompt": q.get("prompt"),
                "output": q.get("output"),
                "parsed_ok": bool(q.get("parsed_ok")),
                "diff_applied": o.get("diff_applied"),
                "tests_passed": tests,
                "success": bool(q.get("parsed_ok")) and bool(o.get("diff_applied")) and tests is True,
            }
        )
    return pl.DataFrame(rows, schema=FEEDBACK_SCHEMA) if rows else pl.DataFrame(schema=FEEDBACK_SCHEMA)


def student_sft_rows(feedback: pl.DataFrame, stage: str, round_no: int) -> pl.DataFrame:
    """Successful queries of the stage as SFT rows (completion in the training format of the stage)."""
    rows = []
    for r in feedback.filter((pl.col("stage") == stage) & pl.col("success")).iter_rows(named=True):
        parsed, err = parse_student_output(stage, r["output"] or "")
        if parsed is None:
            continue
        completion = (
            plan_completion(parsed.reasoning, parsed.plan) if stage == "plan_generation" else parsed.model_dump_json()
        )
        rows.append(
            {
                "task_id": f"prod:{r['run_id']}",
                "stage": stage,
                "split": "train",
                "source": "student",
                "difficulty": "medium",
                "prompt": r["prompt"],
                "completion": json.dumps([{"role": "assistant", "content": completion}]),
                "pass_rate": 1.0,
                "candidate_key": f"prod:{r['run_id']}:{stage}",
                "run_id": r["run_id"],
                "round": round_no,
            }
        )
    return pl.DataFrame(rows, schema=POOL_SCHEMA) if rows else pl.DataFrame(schema=POOL_SCHEMA)


def accumulate(pool: pl.DataFrame | None, new: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """The pool plus the new rows it does not hold yet (by candidate key); nothing is ever dropped."""
    pool = pool if pool is not None and pool.columns else pl.DataFrame(schema=POOL_SCHEMA)
    fresh = new.filter(~pl.col("candidate_key").is_in(pool["candidate_key"].implode())) if pool.height else new
    return pl.concat([pool, fresh], how="vertical_relaxed"), fresh.height


def mix(teacher: pl.DataFrame, student: pl.DataFrame, student_share: float, seed: int = 0) -> pl.DataFrame:
    """All teacher rows (never replaced) plus at most ``share/(1-share)`` as many student rows, drawn
    deterministically (newest rounds first is not assumed: a seeded sample)."""
    teacher = teacher.select(list(SFT_SCHEMA))
    if student_share <= 0 or not student.height:
        return teacher
    cap = int(round(teacher.height * student_share / (1 - student_share))) if student_share < 1 else student.height
    keys = sorted(student["candidate_key"].to_list())
    random.Random(seed).shuffle(keys)
    keep = set(keys[:cap])
    chosen = student.filter(pl.col("candidate_key").is_in(list(keep))).select(list(SFT_SCHEMA))
    return pl.concat([teacher, chosen], how="vertical_relaxed")


@dataclass
class GateStatus:
    open: bool
    reason: str
    logged_tasks: int
    plan_pass_rate: float | None


def stage4_gate(feedback: pl.DataFrame, stage5_stable: bool, min_tasks: int, min_pass_rate: float) -> GateStatus:
    """Stage 4 self-improvement starts last: stage 5 stable, enough tasks with an outcome, baseline plan
    pass rate (tasks whose tests passed over tasks with a reported outcome) at least ``min_pass_rate``."""
    runs = feedback.filter((pl.col("stage") == "plan_generation") & pl.col("tests_passed").is_not_null())
    n = runs["run_id"].n_unique() if runs.height else 0
    rate = float(runs["tests_passed"].mean()) if runs.height else None
    if not stage5_stable:
        return GateStatus(
            False,
            "stage 5 is not stable yet (no live code_generation adapter, or its last evaluation was rejected)",
            n,
            rate,
        )
    if n < min_tasks:
        return GateStatus(False, f"{n} logged tasks with an outcome; stage 4 needs {min_tasks}", n, rate)
    if rate is None or rate < min_pass_rate:
        return GateStatus(
            False,
            f"baseline plan pass rate {rate if rate is not None else 0:.0%} is under {min_pass_rate:.0%}",
            n,
            rate,
        )
    return GateStatus(True, f"{n} tasks with outcomes, baseline plan pass rate {rate:.0%}", n, rate)


def diversity(
    texts: list[str], n: int = 2, num_perm: int = 64, max_pairs: int = 2000, seed: int = 0
) -> dict[str, float | int | None]:
    """``distinct_n``: distinct word n-grams over all n-grams; ``mean_similarity``: mean MinHash Jaccard
    over pairs of texts (sampled past ``max_pairs``); 1 - that is the spread."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        words = t.split()
        grams += [tuple(words[i : i + n]) for i in range(max(0, len(words) - n + 1))]
    distinct = len(set(grams)) / len(grams) if grams else None
    pairs = list(combinations(range(len(texts)), 2))
    if len(pairs) > max_pairs:
        pairs = random.Random(seed).sample(pairs, max_pairs)
    hashes = [minhash(t, num_perm) for t in texts]
    sims = [hashes[i].jaccard(hashes[j]) for i, j in pairs]
    return {"texts": len(texts), f"distinct_{n}": distinct, "mean_similarity": sum(sims) / len(sims) if sims else None}
