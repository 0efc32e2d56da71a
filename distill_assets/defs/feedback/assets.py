"""Self-improvement: production logs with outcomes -> accumulated student rows that training mixes in
(never replacing teacher data); stage 4 joins last; a diversity check stops a collapsing retrain."""

import json
import os
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.defs.automation_conditions import REFRESH
from distill_assets.defs.metadata import md_table, table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import DistillConfigResource
from distill_assets.evaluation.gate import Registry
from distill_assets.feedback.selfimprove import (
    POOL_SCHEMA,
    accumulate,
    diversity,
    feedback_rows,
    stage4_gate,
    student_sft_rows,
)
from distill_assets.router.logstore import LogStore, default_url

GROUP = "feedback"


def log_url(cfg) -> str:
    return cfg.router.log_url or default_url(Path(os.environ.get("DAGSTER_HOME") or ".dagster_home"))


def pool_path(cfg, stage: str) -> Path:
    return cfg.resolved_cache_dir() / "self_improvement" / f"{stage}.parquet"


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"sql", "polars"},
    description="The router's logged queries of this stage with their task outcome (diff applied, tests "
    "passed), read from the production log store (router.log_url; SQLite or Postgres).",
)
def production_feedback(context: dg.AssetExecutionContext, distill: DistillConfigResource) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    store = LogStore(log_url(cfg))
    try:
        df = feedback_rows(store.queries(), store.outcomes()).filter(pl.col("stage") == stage)
    finally:
        store.close()
    known = df.filter(pl.col("tests_passed").is_not_null())
    return dg.Output(
        df,
        metadata={
            **table_meta(df),
            "queries": df.height,
            "with_outcome": known.height,
            "successes": int(df["success"].sum()) if df.height else 0,
            "success_rate": round(float(known["tests_passed"].mean()), 3) if known.height else 0.0,
            "adapters_seen": df["adapter_sha256"].n_unique() if df.height else 0,
            "log_store": log_url(cfg).split("@")[-1],  # no credentials in metadata
            "preview": md_table(df, ["run_id", "task_text", "parsed_ok", "diff_applied", "tests_passed"]),
        },
    )


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version="1",
    kinds={"polars"},
    description="Student-generated training rows accumulated across rounds (successful production queries; "
    "never replacing teacher data, mixed into SFT at automation.student_share). Stage 4 starts last: once "
    "stage 5 is stable, enough tasks have outcomes and the baseline plan pass rate is high enough.",
)
def self_improvement_data(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, production_feedback: pl.DataFrame
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage, auto = context.partition_key, cfg.automation
    path = pool_path(cfg, stage)
    pool = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=POOL_SCHEMA)
    round_no = (int(pool["round"].max()) + 1) if pool.height else 1
    gate_reason = ""
    if stage == "plan_generation":
        registry = Registry(cfg.resolved_cache_dir() / "promotions")
        last5 = registry.decisions("code_generation")[-1:]
        stable = "code_generation" in registry.live() and bool(last5) and last5[0]["promote"]
        gate = stage4_gate(production_feedback, stable, auto.stage4_min_tasks, auto.stage4_min_pass_rate)
        gate_reason = gate.reason
        new = student_sft_rows(production_feedback, stage, round_no) if gate.open else pl.DataFrame(schema=POOL_SCHEMA)
    else:
        new = student_sft_rows(production_feedback, stage, round_no)
    pool, added = accumulate(pool, new)
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pool.write_parquet(tmp)
        tmp.replace(path)
    return dg.Output(
        pool,
        metadata={
            **table_meta(pool),
            "added_this_round": added,
            "round": round_no if added else round_no - 1,
            "pool_rows": pool.height,
            "student_share": auto.student_share,
            "pool_file": dg.MetadataValue.path(str(path)),
            **({"stage4_gate": gate_reason} if stage == "plan_generation" else {}),
            "preview": md_table(pool, ["task_id", "round", "completion"], width=80),
        },
    )


@dg.asset_check(
    asset=self_improvement_data,
    blocking=True,
    partitions_def=stage_partitions,
    description="Diversity monitor: distinct bigrams and the MinHash spread of the "
    "student rows; a collapse stops the retrain that would learn from them.",
)
def student_rows_diverse(
    context: dg.AssetCheckExecutionContext, distill: DistillConfigResource, self_improvement_data: pl.DataFrame
) -> dg.AssetCheckResult:
    auto = distill.load().automation
    texts = (
        [json.loads(c)[0]["content"] for c in self_improvement_data["completion"].to_list()]
        if self_improvement_data.height
        else []
    )
    d = diversity(texts)
    if len(texts) < 2:  # nothing to judge; the retrain then learns from teacher rows only, so it need not wait
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"texts": len(texts)},
            description=f"nothing to judge: {len(texts)} student row(s) (diversity needs two "
            "or more); the retrain uses teacher rows only",
        )
    ok = d["distinct_2"] >= auto.min_distinct_2 and d["mean_similarity"] <= auto.max_mean_similarity
    return dg.AssetCheckResult(
        passed=ok,
        metadata={
            "texts": len(texts),
            "distinct_2": round(d["distinct_2"], 4),
            "mean_similarity": round(d["mean_similarity"], 4),
            "min_distinct_2": auto.min_distinct_2,
            "max_mean_similarity": auto.max_mean_similarity,
        },
    )
