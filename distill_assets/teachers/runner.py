"""Fan a stage's prompts out to one teacher N times and turn the answers into candidate rows."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Iterable

import polars as pl

from distill_assets.config import StageConfig, Teacher
from distill_assets.prompts.schemas import parse_output
from distill_assets.teachers.cache import ResponseCache
from distill_assets.teachers.client import TeacherAnswer, TeacherClient, TeacherRequest, cache_key

CANDIDATE_SCHEMA = {
    "task_id": pl.Utf8,
    "stage": pl.Utf8,
    "teacher": pl.Utf8,
    "model": pl.Utf8,
    "source": pl.Utf8,
    "prompt_hash": pl.Utf8,
    "request_key": pl.Utf8,
    "sample_index": pl.Int64,
    "raw_text": pl.Utf8,
    "reasoning": pl.Utf8,
    "parsed_json": pl.Utf8,
    "parse_error": pl.Utf8,
    "call_error": pl.Utf8,
    "finish_reason": pl.Utf8,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "cost_usd": pl.Float64,
    "latency_s": pl.Float64,
    "cache_hit": pl.Boolean,
    "attempts": pl.Int64,
}


def samples_for(stage: StageConfig, teacher: Teacher) -> int:
    return min(stage.n_samples, teacher.max_samples) if teacher.max_samples else stage.n_samples


def build_requests(prompts: pl.DataFrame, stage: StageConfig, teacher: Teacher) -> list[TeacherRequest]:
    """N requests per prompt row (``messages_json``/``schema_json``), capped by the teacher's limits."""
    rank = pl.col("split").replace_strict({"train": 0, "val": 1, "test": 2}, default=3, return_dtype=pl.Int64)
    rows = prompts.with_columns(rank.alias("_rank")).sort(["_rank", "task_id"])
    if teacher.max_tasks:  # a capped teacher answers train tasks first
        rows = rows.head(teacher.max_tasks)
    n = samples_for(stage, teacher)
    max_tokens = min(stage.max_output_tokens, teacher.max_output_tokens or stage.max_output_tokens)
    reqs = []
    for r in rows.iter_rows(named=True):
        if teacher.kind == "local_llama_cpp" and r["prompt_tokens"] + max_tokens > teacher.n_ctx:
            continue  # would overflow the local model's context: see too_long_for_context()
        messages = json.loads(r["messages_json"])
        schema = json.loads(r["schema_json"]) if r["schema_json"] else None
        for i in range(n):
            reqs.append(
                TeacherRequest(
                    task_id=r["task_id"],
                    stage=stage.key.value,
                    prompt_hash=r["prompt_hash"],
                    sample_index=i,
                    messages=messages,
                    schema=schema,
                    temperature=stage.temperature,
                    max_tokens=max_tokens,
                )
            )
    return reqs


def too_long_for_context(prompts: pl.DataFrame, stage: StageConfig, teacher: Teacher) -> int:
    """Prompts a local teacher cannot take (prompt + answer over its n_ctx); they are skipped and counted."""
    if teacher.kind != "local_llama_cpp" or not prompts.height:
        return 0
    max_tokens = min(stage.max_output_tokens, teacher.max_output_tokens or stage.max_output_tokens)
    return int((prompts["prompt_tokens"] + max_tokens > teacher.n_ctx).sum())


def all_cached(teacher: Teacher, cache: ResponseCache, requests: list[TeacherRequest]) -> bool:
    """True when every request already has an answer (then no endpoint is needed at all)."""
    return all(cache.get(cache_key(teacher, None, r)) is not None for r in requests)


def cost_usd(teacher: Teacher, tokens_in: int, tokens_out: int) -> float:
    return tokens_in * teacher.price_input_per_mtok / 1e6 + tokens_out * teacher.price_output_per_mtok / 1e6


async def _gather(
    client: TeacherClient, requests: list[TeacherRequest], progress: Callable[[int, int], None] | None
) -> list[TeacherAnswer]:
    done = 0

    async def one(req: TeacherRequest) -> TeacherAnswer:
        nonlocal done
        ans = await client.complete(req)
        done += 1
        if progress:
            progress(done, len(requests))
        return ans

    try:
        return list(await asyncio.gather(*(one(r) for r in requests)))
    finally:
        await client.aclose()


def run_teacher(
    teacher: Teacher,
    base_url: str,
    api_key: str | None,
    cache: ResponseCache,
    requests: list[TeacherRequest],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[TeacherAnswer], dict[str, int]]:
    """All answers (cached ones included) and call statistics. Permanent errors propagate."""
    client = TeacherClient(teacher, base_url, api_key, cache)
    if teacher.batch:
        from distill_assets.teachers.batch import run_batch

        answers = asyncio.run(run_batch(client, requests, progress))
    else:
        answers = asyncio.run(_gather(client, requests, progress))
    return answers, dict(client.stats)


def candidates_table(answers: Iterable[TeacherAnswer], teacher: Teacher) -> pl.DataFrame:
    rows: list[dict[str, Any]] = []
    for a in answers:
        r = a.request
        parsed, perr = (None, None)
        if a.error is None:
            parsed, perr = parse_output(r.stage, a.content or "")
            if perr and a.finish_reason == "length":
                perr = f"truncated at max_tokens; {perr}"
        rows.append(
            {
                "task_id": r.task_id,
                "stage": r.stage,
                "teacher": teacher.name,
                "model": teacher.model,
                "source": teacher.name,
                "prompt_hash": r.prompt_hash,
                "request_key": a.key,
                "sample_index": r.sample_index,
                "raw_text": a.content,
                "reasoning": a.reasoning,
                "parsed_json": parsed.model_dump_json() if parsed is not None else None,
                "parse_error": perr,
                "call_error": a.error,
                "finish_reason": a.finish_reason,
                "tokens_in": a.tokens_in,
                "tokens_out": a.tokens_out,
                "cost_usd": cost_usd(teacher, a.tokens_in, a.tokens_out),
                "latency_s": a.latency_s,
                "cache_hit": a.cache_hit,
                "attempts": a.attempts,
            }
        )
    return pl.DataFrame(rows, schema=CANDIDATE_SCHEMA) if rows else pl.DataFrame(schema=CANDIDATE_SCHEMA)
