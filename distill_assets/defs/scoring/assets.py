"""Scoring: validated candidates, agreement, sandboxed plan executions, scores, SFT rows and DPO pairs."""

import time
from collections import Counter

import dagster as dg
import polars as pl

from distill_assets.datasets.build import dpo_rows, reference_rows, sft_rows
from distill_assets.environments.build import environment_cache, wants_environment
from distill_assets.environments.selection import ENV_SCHEMA, env_by_task, environments_for_tasks, selection_for_task
from distill_assets.plans.schema import Plan
from distill_assets.sandbox import Limits, SandboxUnavailable
from distill_assets.scoring.agreement import agreement_table
from distill_assets.scoring.executions import (
    EXECUTION_SCHEMA,
    SELECTION_SCHEMA,
    PlanRunner,
    coder_requests_for,
    execution_plan,
    execution_rows,
)
from distill_assets.scoring.plans import code_dpo_candidates, plan_dpo_candidates, plans_by_source, score_plans
from distill_assets.scoring.validate import validate_candidates
from distill_assets.defs.automation_conditions import REFRESH
from distill_assets.defs.metadata import md_counts, md_table, table_meta
from distill_assets.defs.partitions import (
    plan_source_partitions,
    repo_partitions,
    stage_partitions,
    stage_teacher_partitions,
    stage_teacher_skip,
)
from distill_assets.defs.resources import TRANSIENT_RETRY, DistillConfigResource
from distill_assets.defs.sandbox import backends
from distill_assets.defs.scoring.env_metadata import environment_metadata, selection_metadata
from distill_assets.defs.teachers.resources import TeachersResource

GROUP = "scoring"
ALL = {"partition_mapping": dg.AllPartitionMapping(), "metadata": {"allow_missing_partitions": True}}


def _concat(tables) -> pl.DataFrame | None:
    items = list(tables.values()) if isinstance(tables, dict) else [tables]
    items = [t for t in items if t is not None and t.height]
    return pl.concat(items, how="diagonal_relaxed") if items else None


def _by_id(df: pl.DataFrame) -> dict:
    return {r["task_id"]: r for r in df.iter_rows(named=True)}


def _limits(cfg) -> Limits:
    return Limits(
        timeout_s=cfg.sandbox.timeout_s, memory_mb=cfg.sandbox.memory_mb, max_processes=cfg.sandbox.max_processes
    )


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_teacher_partitions,
    code_version="1",
    kinds={"polars"},
    description="Every candidate with kept/drop_reason: stage 4 plans through the plan validator, stages "
    "1-3 checked against the context, stage 5 diffs must apply; exact and MinHash near-duplicates dropped.",
)
def validated_outputs(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    teacher_outputs: pl.DataFrame,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    reason = stage_teacher_skip(cfg, context.partition_key)
    df = validate_candidates(
        teacher_outputs, _by_id(change_tasks), _by_id(task_contexts), cfg.scoring.near_duplicate_threshold
    )
    drops = Counter(r for r in df["drop_reason"].to_list() if r) if df.height else Counter()
    checks = Counter(c for cs in df["check_reasons"].to_list() for c in (cs or [])) if df.height else Counter()
    kept = int(df["kept"].sum()) if df.height else 0
    context.add_output_metadata(
        {
            **table_meta(df),
            "kept": kept,
            "dropped": df.height - kept,
            "kept_rate": round(kept / df.height, 3) if df.height else 0.0,
            **{f"dropped_{k}": v for k, v in drops.items()},
            "drop_reasons": md_counts(dict(drops)),
            "check_failures": md_counts(dict(checks), key="check"),
            **({"skipped": reason} if reason else {}),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=repo_partitions,
    code_version="1",
    kinds={"uv", "npm", "polars"},
    retry_policy=TRANSIENT_RETRY,
    description="One test environment per dependency-manifest content of a repository's test-touching tasks "
    "(Python: a uv virtual environment with the test dependencies on a fitting interpreter; JS/TS: npm ci), "
    "cached by that hash and reused: status ready / install_failed / unsupported, with the reason.",
)
def test_environments(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, change_tasks: pl.DataFrame
) -> pl.DataFrame:
    cfg = distill.load()
    repo = context.partition_key
    wanted, why = wants_environment(cfg, repo)
    tasks = (
        change_tasks.filter((pl.col("repo") == repo) & (pl.col("source") == "git"))
        if change_tasks.height
        else change_tasks
    )
    if not wanted:
        df = pl.DataFrame(schema=ENV_SCHEMA)
        context.add_output_metadata({**table_meta(df), "skipped": why})
        return df
    cache = environment_cache(cfg)
    df = environments_for_tasks(tasks.iter_rows(named=True), cache, repo, progress=context.log.info)
    context.add_output_metadata(environment_metadata(df, tasks))
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version="2",
    kinds={"sandbox", "polars"},
    retry_policy=TRANSIENT_RETRY,
    ins={"test_environments": dg.AssetIn(**ALL)},
    description="SWE-bench-style test selection per task: fail->pass and pass->pass tests from one sandboxed "
    "run without and one with the gold code, in the task's test environment, read from the runner's "
    "structured report (cached by task, plan and environment); every task without a selection says why.",
)
def test_selections(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, change_tasks: pl.DataFrame, test_environments
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    try:
        backend = backends(context)(cfg.sandbox.backend, cfg.sandbox.docker_image)
    except SandboxUnavailable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    envs = _concat(test_environments)
    by_task = env_by_task(envs) if envs is not None else {}
    cache_dir = cfg.resolved_cache_dir() / "test_selection"
    rows = []
    for t in change_tasks.iter_rows(named=True):
        t0 = time.perf_counter()
        row = selection_for_task(
            t,
            by_task.get(t["task_id"]),
            cfg.sandbox.test_commands.get(t["repo"]),
            backend,
            _limits(cfg),
            cache_dir,
            full_suite=cfg.sandbox.full_suite,
        )
        row.update(repo=t["repo"], seconds=round(time.perf_counter() - t0, 2))
        rows.append(row)
    df = pl.DataFrame(rows, schema=SELECTION_SCHEMA) if rows else pl.DataFrame(schema=SELECTION_SCHEMA)
    context.add_output_metadata({**selection_metadata(df), "backend": backend.name})
    return dg.Output(df)  # explicit: with the dagster_docker backend the step has opened Pipes sessions


def _plans_by_source(validated, reference_plans: pl.DataFrame, parsed_only: bool = False) -> dict:
    return plans_by_source(_concat(validated), reference_plans, parsed_only=parsed_only)


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version="1",
    kinds={"polars"},
    ins={"validated_outputs": dg.AssetIn(**ALL)},
    description="Per task and pair of plan sources (teachers and the reference plan): file and symbol "
    "Jaccard, Kendall tau of the execution order, a label; strong disagreement is a flagged hard example.",
)
def plan_agreement(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, validated_outputs, reference_plans: pl.DataFrame
) -> pl.DataFrame:
    cfg = distill.load()
    # every plan that parsed takes part (kept plans first): agreement is informative even for invalid ones
    plans = {
        task: {src: Plan.model_validate_json(items[0][1]) for src, items in by_src.items()}
        for task, by_src in _plans_by_source(validated_outputs, reference_plans, parsed_only=True).items()
    }
    df = agreement_table(plans, cfg.scoring.agree_threshold, cfg.scoring.disagree_threshold)
    labels = Counter(df["label"].to_list())
    context.add_output_metadata(
        {
            **table_meta(df),
            **{f"label_{k}": v for k, v in labels.items()},
            "hard_examples": int(df["hard_example"].sum()) if df.height else 0,
            "mean_file_jaccard": round(float(df["file_jaccard"].mean()), 3) if df.height else 0.0,
            "preview": md_table(
                df, ["task_id", "source_a", "source_b", "file_jaccard", "symbol_jaccard", "order_tau", "label"]
            ),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=plan_source_partitions,
    code_version="1",
    pool="teacher_api",
    retry_policy=TRANSIENT_RETRY,
    kinds={"sandbox", "polars"},
    ins={"validated_outputs": dg.AssetIn(**ALL)},
    description="Each valid plan of one source -> the stage-5 teacher writes the code from plan + context -> "
    "the sandbox runs the task's selected tests -> pass rate. Coder answers and sandbox runs are cached.",
)
def plan_executions(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    teachers: TeachersResource,
    validated_outputs,
    reference_plans: pl.DataFrame,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
    test_selections: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    source = context.partition_key
    empty = pl.DataFrame(schema=EXECUTION_SCHEMA)
    if source != "reference":
        ok, why = cfg.stage_teacher_status("plan_generation", source)
        if not ok:
            context.add_output_metadata({**table_meta(empty), "skipped": why})
            return dg.Output(empty)
    coder = _coder(cfg)
    tasks, ctxs, sel = _by_id(change_tasks), _by_id(task_contexts), _by_id(test_selections)
    plans = _plans_by_source(validated_outputs, reference_plans)
    ex = execution_plan(plans, source, tasks, ctxs, sel, cfg.scoring.max_plans_per_task, coder.max_tasks)
    reqs = coder_requests_for(cfg, coder, ex.coded, tasks, ctxs)
    answers, _ = teachers.answer(cfg, coder, [r for _, r in reqs])
    run = PlanRunner.from_config(cfg, tasks, sel, backends(context))
    coded = [(p, ans) for (p, _), ans in zip(reqs, answers)]
    try:
        rows = execution_rows(ex, coded, coder.name, coder.model, run, with_gold=source == "reference")
    except SandboxUnavailable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    df = pl.DataFrame(rows, schema=EXECUTION_SCHEMA) if rows else empty
    context.add_output_metadata(_executions_metadata(df, ex, coder.name))
    return dg.Output(df)  # explicit: with the dagster_docker backend the step has opened Pipes sessions


def _coder(cfg):
    """The stage-5 teacher that writes code from plans: the first available one."""
    coders = [t for t in cfg.stage("code_generation").teachers if cfg.stage_teacher_status("code_generation", t)[0]]
    if not coders:
        raise dg.Failure(description="no stage-5 teacher is available to write code from plans", allow_retries=False)
    return cfg.teacher(coders[0])


def _executions_metadata(df: pl.DataFrame, ex, coder: str) -> dict:
    ran = df.filter(pl.col("scored_by") == "tests")
    return {
        **table_meta(df),
        "plans": len(ex.plans),
        "plans_scored_by_tests": len(ex.scored),
        "plans_scored_by_overlap_only": len(ex.plans) - len(ex.scored),
        "coder": coder,
        "plans_coded": len(ex.coded),
        **{f"status_{k}": v for k, v in Counter(df["status"].to_list()).items()},
        "mean_pass_rate": round(float(ran["pass_rate"].mean()), 3) if ran.height else 0.0,
        "sandbox_cache_hits": int(ran["sandbox_cached"].sum()) if ran.height else 0,
        "preview": md_table(df, ["task_id", "coder", "status", "pass_rate", "n_selected", "code_error"]),
    }


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version="1",
    kinds={"polars"},
    ins={"validated_outputs": dg.AssetIn(**ALL), "plan_executions": dg.AssetIn(**ALL)},
    description="Per plan candidate: execution pass rate first, then agreement with the other sources, then "
    "validity; ranked within its task.",
)
def plan_scores(
    context: dg.AssetExecutionContext,
    validated_outputs,
    plan_executions,
    plan_agreement: pl.DataFrame,
    reference_plans: pl.DataFrame,
) -> pl.DataFrame:
    df = score_plans(_plans_by_source(validated_outputs, reference_plans), _concat(plan_executions), plan_agreement)
    context.add_output_metadata(
        {
            **table_meta(df),
            "tasks": df["task_id"].n_unique() if df.height else 0,
            "by_source": md_table(
                df.group_by("source").agg(
                    pl.len().alias("plans"),
                    pl.col("pass_rate").mean().alias("mean_pass_rate"),
                    pl.col("agreement").mean().alias("mean_agreement"),
                )
                if df.height
                else df
            ),
        }
    )
    return df


def _prompts(stage_prompts: pl.DataFrame) -> dict:
    return {r["task_id"]: r["messages_json"] for r in stage_prompts.iter_rows(named=True)}


def _difficulty(reference_plans: pl.DataFrame) -> dict:
    return {r["task_id"]: r["difficulty"] for r in reference_plans.iter_rows(named=True) if r["difficulty"]}


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="2",  # 2: stage-3 gold answers limited to the shown symbols
    kinds={"polars"},
    ins={
        "validated_outputs": dg.AssetIn(**ALL),
        "plan_executions": dg.AssetIn(**ALL),
        # never materialized (a run without test execution, e.g. `distill learn`): empty tables
        "plan_scores": dg.AssetIn(metadata={"optional_table": True}),
        "test_selections": dg.AssetIn(metadata={"optional_table": True}),
    },
    description="TRL conversational prompt/completion rows per stage (stage 4: [REASONING] ... [PLAN] {json}), "
    "with split, source and curriculum difficulty; near-duplicates capped per task; the gold patch's answer "
    "(source reference) for the stages in scoring.reference_stages.",
)
def sft_datasets(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    validated_outputs,
    plan_executions,
    stage_prompts: pl.DataFrame,
    plan_scores: pl.DataFrame,
    reference_plans: pl.DataFrame,
    change_tasks: pl.DataFrame,
    test_selections: pl.DataFrame,
    task_contexts: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    stage = context.partition_key
    v = _concat(validated_outputs)
    cands = v.filter((pl.col("stage") == stage) & pl.col("kept")) if v is not None else pl.DataFrame()
    tasks = _by_id(change_tasks)
    rates: dict = {}
    ex = _concat(plan_executions)
    if stage == "plan_generation":
        rates = {r["plan_key"]: r["pass_rate"] for r in plan_scores.iter_rows(named=True)}
    elif stage == "code_generation" and ex is not None:
        rates = {r["code_key"]: r["pass_rate"] for r in ex.iter_rows(named=True) if r["code_key"]}
    ref_stats: Counter = Counter()
    schemas = {r["task_id"]: r["schema_json"] for r in stage_prompts.iter_rows(named=True) if r.get("schema_json")}
    refs = (
        reference_rows(stage, reference_plans, task_contexts, test_selections, ex, schemas, ref_stats)
        if cfg.scoring.include_reference and stage in cfg.scoring.reference_stages
        else []
    )
    df = sft_rows(
        stage,
        cands if cands.height else pl.DataFrame(schema={"task_id": pl.Utf8, "sample_index": pl.Int64}),
        _prompts(stage_prompts),
        tasks,
        _difficulty(reference_plans),
        rates,
        cfg.scoring.sft_min_pass_rate,
        cfg.scoring.max_sft_per_task,
        refs,
    )
    context.add_output_metadata(
        {
            **table_meta(df),
            "rows": df.height,
            **{f"split_{k}": v for k, v in Counter(df["split"].to_list()).items()},
            **{f"source_{k}": v for k, v in Counter(df["source"].to_list()).items()},
            **{f"difficulty_{k}": v for k, v in Counter(df["difficulty"].to_list()).items()},
            # stage 3: gold symbols the prompt does not show are left out of the reference answers
            **{f"reference_{k}": v for k, v in ref_stats.items()},
            "preview": md_table(df, ["task_id", "split", "source", "difficulty", "completion"], width=100),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"polars"},
    ins={"validated_outputs": dg.AssetIn(**ALL), "plan_executions": dg.AssetIn(**ALL)},
    description="Preference pairs: per task, chosen = highest pass rate, rejected = lowest pass rate among "
    "structurally valid candidates, with a margin; stage 4 from plans, stage 5 from code outcomes.",
)
def dpo_pairs(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    validated_outputs,
    plan_executions,
    stage_prompts: pl.DataFrame,
    plan_scores: pl.DataFrame,
    reference_plans: pl.DataFrame,
    change_tasks: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    stage = context.partition_key
    tasks = _by_id(change_tasks)
    scored: dict = {}
    if stage == "plan_generation":
        rates = {r["plan_key"]: r["pass_rate"] for r in plan_scores.iter_rows(named=True)}
        scored = plan_dpo_candidates(
            _plans_by_source(validated_outputs, reference_plans), rates, cfg.scoring.include_reference
        )
    elif stage == "code_generation":
        scored = code_dpo_candidates(_concat(plan_executions), cfg.scoring.include_reference)
    df = dpo_rows(stage, scored, _prompts(stage_prompts), tasks, _difficulty(reference_plans), cfg.scoring.dpo_margin)
    meta = {
        **table_meta(df),
        "pairs": df.height,
        "tasks_considered": len(scored),
        "mean_margin": round(float(df["margin"].mean()), 3) if df.height else 0.0,
        **{f"chosen_{k}": v for k, v in Counter(df["chosen_source"].to_list()).items()},
        "preview": md_table(
            df, ["task_id", "chosen_source", "rejected_source", "chosen_pass_rate", "rejected_pass_rate", "margin"]
        ),
    }
    if stage not in ("plan_generation", "code_generation"):
        meta["skipped"] = "DPO pairs come from execution outcomes: stages 4 (plans) and 5 (code) only"
    context.add_output_metadata(meta)
    return df
