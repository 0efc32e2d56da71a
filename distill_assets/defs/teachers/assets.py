"""Teachers: stage prompts -> N candidates per teacher (cached, resumable, costed) -> cost estimate."""

import json
from collections import Counter

import dagster as dg
import polars as pl

from distill_assets.prompts.builders import stage_prompt_rows
from distill_assets.teachers.cost import cost_table
from distill_assets.teachers.runner import CANDIDATE_SCHEMA, build_requests, candidates_table, too_long_for_context
from distill_assets.defs.automation_conditions import REFRESH
from distill_assets.defs.metadata import md_counts, md_table, percentiles, table_meta
from distill_assets.defs.partitions import (
    stage_partitions,
    stage_teacher_of,
    stage_teacher_partitions,
    stage_teacher_skip,
)
from distill_assets.defs.resources import TRANSIENT_RETRY, DistillConfigResource
from distill_assets.defs.teachers.resources import TeachersResource

GROUP = "teachers"
STAGE_PROMPTS_VERSION = "1"
TEACHER_OUTPUTS_VERSION = "1"
COST_VERSION = "1"

PROMPT_SCHEMA = {
    "task_id": pl.Utf8,
    "stage": pl.Utf8,
    "split": pl.Utf8,
    "prompt_hash": pl.Utf8,
    "messages_json": pl.Utf8,
    "schema_json": pl.Utf8,
    "prompt_tokens": pl.Int64,
    "files_shown": pl.Int64,
    "files_truncated": pl.Int64,
}


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version=STAGE_PROMPTS_VERSION,
    kinds={"polars"},
    description="Per stage, one prompt per task with a usable context: messages, the per-task JSON schema "
    "(enums of real paths and symbols), estimated tokens within the stage's budget.",
)
def stage_prompts(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
    reference_plans: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    stage = context.partition_key
    st = cfg.stage(stage)
    ctx_by = {r["task_id"]: r for r in task_contexts.iter_rows(named=True)}
    plan_by = {r["task_id"]: r["plan_json"] for r in reference_plans.filter(pl.col("usable")).iter_rows(named=True)}
    filtered = set(reference_plans.filter(pl.col("status") == "filtered")["task_id"].to_list())
    rows, skipped = stage_prompt_rows(
        stage,
        change_tasks.iter_rows(named=True),
        ctx_by,
        plan_by,
        filtered,
        budget_tokens=st.prompt_token_budget,
        chars_per_token=cfg.context.chars_per_token,
    )
    df = pl.DataFrame(rows, schema=PROMPT_SCHEMA) if rows else pl.DataFrame(schema=PROMPT_SCHEMA)
    tok = percentiles(df["prompt_tokens"].to_list(), qs=(50, 90, 99))
    example = json.loads(df["messages_json"][0])[1]["content"][:3000] if df.height else ""
    context.add_output_metadata(
        {
            **table_meta(df),
            "prompts": df.height,
            **{f"prompt_tokens_{k}": v for k, v in tok.items()},
            "prompt_tokens_max": int(df["prompt_tokens"].max()) if df.height else 0,
            "token_budget": st.prompt_token_budget,
            "prompts_with_truncated_files": int((df["files_truncated"] > 0).sum()) if df.height else 0,
            "skipped": md_counts(dict(skipped)),
            "example_prompt": dg.MetadataValue.md(f"```\n{example}\n```"),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_teacher_partitions,
    code_version=TEACHER_OUTPUTS_VERSION,
    pool="teacher_api",
    kinds={"openai", "polars"},
    retry_policy=TRANSIENT_RETRY,
    ins={
        "stage_prompts": dg.AssetIn(
            partition_mapping=dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name="stage")
        )
    },
    description="Every candidate answer of one teacher for one stage: prompt hash, sample index, raw text, "
    "reasoning kept apart, parsed output or the parse error, tokens, cost, latency. Answers are cached: a "
    "rerun after a crash repeats no finished call.",
)
def teacher_outputs(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    teachers: TeachersResource,
    stage_prompts: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    stage, name = stage_teacher_of(context.partition_key)
    reason = stage_teacher_skip(cfg, context.partition_key)
    if reason is not None:
        context.log.info(f"skipped: {reason}")
        empty = pl.DataFrame(schema=CANDIDATE_SCHEMA)
        context.add_output_metadata({**table_meta(empty), "skipped": reason})
        return empty
    teacher, st = cfg.teacher(name), cfg.stage(stage)
    requests = build_requests(stage_prompts, st, teacher)

    def progress(i: int, n: int) -> None:
        if i == n or i % 10 == 0:
            context.log.info(f"{name}/{stage}: {i}/{n} answers")

    answers, stats = teachers.answer(cfg, teacher, requests, progress)
    df = candidates_table(answers, teacher)
    context.add_output_metadata(_candidates_metadata(df, stats, teacher, st, stage_prompts))
    return df


def _candidates_metadata(df: pl.DataFrame, stats: dict, teacher, st, stage_prompts: pl.DataFrame) -> dict:
    fresh = df.filter(~pl.col("cache_hit") & pl.col("call_error").is_null())
    answered = df.filter(pl.col("call_error").is_null())
    parse_fail = answered.filter(pl.col("parse_error").is_not_null()).height
    lat = percentiles(fresh["latency_s"].to_list(), qs=(50, 95))
    errors = Counter(e.split(":")[0] for e in answered["parse_error"].drop_nulls().to_list())
    return {
        **table_meta(df),
        "tasks": df["task_id"].n_unique() if df.height else 0,
        "candidates": df.height,
        "calls_made": int(stats.get("calls", 0)),
        "cache_hits": int(stats.get("cache_hits", 0)),
        "retries": int(stats.get("retries", 0)),
        "failed_calls": df.height - answered.height,
        "prompts_too_long_for_context": too_long_for_context(stage_prompts, st, teacher),
        "parse_failures": parse_fail,
        "parse_failure_rate": round(parse_fail / answered.height, 3) if answered.height else 0.0,
        "parse_errors": md_counts(dict(errors), key="kind"),
        "tokens_in": int(df["tokens_in"].sum()),
        "tokens_out": int(df["tokens_out"].sum()),
        "cost_usd_this_run": dg.MetadataValue.float(round(float(fresh["cost_usd"].sum()), 6)),
        "cost_usd_total": dg.MetadataValue.float(round(float(df["cost_usd"].sum()), 6)),
        "latency_p50_s": round(lat["p50"], 3),
        "latency_p95_s": round(lat["p95"], 3),
        "teacher_model": teacher.model,
        "preview": md_table(df, ["task_id", "sample_index", "parse_error", "tokens_out", "raw_text"], width=80),
    }


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=COST_VERSION,
    kinds={"polars"},
    ins={
        "stage_prompts": dg.AssetIn(
            partition_mapping=dg.AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        ),
        "teacher_outputs": dg.AssetIn(
            partition_mapping=dg.AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        ),
    },
    description="Projected teacher tokens and dollars (tasks at hand, and the full-scale task counts of the "
    "research report's section 5) per stage and teacher, next to what was actually spent.",
)
def teacher_cost_estimate(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, stage_prompts, teacher_outputs
) -> pl.DataFrame:
    cfg = distill.load()
    prompts = stage_prompts if isinstance(stage_prompts, dict) else {}
    outs = list(teacher_outputs.values()) if isinstance(teacher_outputs, dict) else [teacher_outputs]
    outs = [o for o in outs if o is not None and o.height]
    outputs = pl.concat(outs) if outs else pl.DataFrame(schema=CANDIDATE_SCHEMA)
    df = cost_table(cfg, prompts, outputs)
    context.add_output_metadata(
        {
            **table_meta(df),
            "projected_usd_target_scale": dg.MetadataValue.float(round(float(df["target_usd"].sum()), 2)),
            "projected_usd_tasks_at_hand": dg.MetadataValue.float(round(float(df["projected_usd"].sum()), 6)),
            "spent_usd": dg.MetadataValue.float(round(float(df["spent_usd"].sum()), 6)),
            "by_stage_and_teacher": md_table(
                df,
                [
                    "stage",
                    "teacher",
                    "available",
                    "calls",
                    "output_tokens_per_call",
                    "projected_usd",
                    "target_calls",
                    "target_usd",
                    "spent_usd",
                ],
                n=30,
            ),
        }
    )
    return df
