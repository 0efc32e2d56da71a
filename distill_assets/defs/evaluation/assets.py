"""Evaluation: held-out metrics for base student, trained adapter and teacher per stage, the report,
and the promotion gate that decides which adapter the router serves."""

import datetime as dt
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.defs.sandbox import backends
from distill_assets.defs.automation_conditions import NIGHTLY, REFRESH
from distill_assets.defs.metadata import md_table, table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import TRANSIENT_RETRY, DistillConfigResource
from distill_assets.defs.teachers.resources import TeachersResource
from distill_assets.evaluation.gate import (
    GateSettings,
    Promotion,
    Registry,
    comparisons_table,
    decisions_table,
    run_gate,
)
from distill_assets.evaluation.harness import EvaluationSetupError, StudentAdapter, evaluate, held_out_items
from distill_assets.evaluation.metrics import GAIN_METRIC, HEADLINE
from distill_assets.evaluation.report import HISTORY_SCHEMA, render, stage_bars
from distill_assets.evaluation.run import EVAL_VERSION, ROW_SCHEMA, SUMMARY_SCHEMA, judge_calibration, summarise
from distill_assets.sandbox import SandboxUnavailable

GROUP = "evaluation"
ALL = {"partition_mapping": dg.AllPartitionMapping(), "metadata": {"allow_missing_partitions": True}}
PROMOTED_SCHEMA = {
    "stage": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "candidate_sha256": pl.Utf8,
    "live_sha256": pl.Utf8,
    "serving": pl.Utf8,
    "gguf_path": pl.Utf8,
    "base_gguf": pl.Utf8,
    "metrics_json": pl.Utf8,
    "regressions_json": pl.Utf8,
    "comparisons_json": pl.Utf8,
}
EVALUATED = dg.AssetCheckSpec(
    "evaluated_tasks",
    asset="evaluations",
    blocking=True,
    description="Fails when no held-out task of the stage was evaluated (nothing to judge "
    "an adapter on), with the reason.",
)


def _registry(cfg) -> Registry:
    return Registry(cfg.resolved_cache_dir() / "promotions")


def _candidate(gguf_adapters: pl.DataFrame) -> StudentAdapter | None:
    row = gguf_adapters.row(0, named=True) if gguf_adapters.height else {}
    return (
        StudentAdapter(row["sha256"], row["gguf_path"], row["base_gguf"]) if row.get("status") == "exported" else None
    )


def _live(cfg, stage: str) -> StudentAdapter | None:
    entry = _registry(cfg).live().get(stage)
    return StudentAdapter(entry["adapter_sha256"], entry["gguf_path"], entry["base_gguf"]) if entry else None


@dg.asset(
    automation_condition=NIGHTLY,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version=EVAL_VERSION,
    pool="teacher_api",
    check_specs=[EVALUATED],
    kinds={"polars"},
    retry_policy=TRANSIENT_RETRY,
    ins={
        "reference_plans": dg.AssetIn(),
        "change_tasks": dg.AssetIn(),
        "task_contexts": dg.AssetIn(),
        "test_selections": dg.AssetIn(metadata={"optional_table": True}),
    },
    description="Held-out (test split) tasks of the stage answered by the base student, the trained adapter, "
    "the live adapter (when another one is live) on llama.cpp in the student's trained format, and the "
    "teacher; per-task metrics against the gold patch's plan and the teacher's labels; stage-4 plans coded "
    "by one fixed coder, run in the sandbox and judged. Cached per system by content: a new adapter "
    "re-evaluates only itself.",
)
def evaluations(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    teachers: TeachersResource,
    stage_prompts: pl.DataFrame,
    reference_plans: pl.DataFrame,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
    test_selections: pl.DataFrame,
    gguf_adapters: pl.DataFrame,
):
    cfg = distill.load()
    stage = context.partition_key
    sel = {r["task_id"]: r for r in test_selections.iter_rows(named=True)}
    items, counts = held_out_items(cfg, stage_prompts, reference_plans, change_tasks, task_contexts, sel)
    if not items:
        df = pl.DataFrame(schema=ROW_SCHEMA)
        reason = (
            f"no held-out (test split) task with a reference plan for {stage}: {counts['test_prompts']} test "
            f"prompt(s), {counts['no_reference_plan']} without a usable reference plan"
        )
        yield dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason, **counts})
        yield dg.AssetCheckResult(
            check_name="evaluated_tasks", passed=False, description=reason, metadata={"tasks": 0, **counts}
        )
        return
    candidate = _candidate(gguf_adapters)
    with ExitStack() as stack:
        try:
            res = evaluate(
                cfg,
                stage,
                items,
                candidate=candidate,
                live=_live(cfg, stage),
                answers=teachers.calls(cfg, stack),
                selections=sel,
                sandbox_backends=backends(context),
                progress=context.log.info,
            )
        except (EvaluationSetupError, SandboxUnavailable) as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
    yield dg.Output(res.rows, metadata=_evaluation_metadata(stage, res, counts, candidate))
    yield dg.AssetCheckResult(check_name="evaluated_tasks", passed=True, metadata={"tasks": res.n_tasks, **counts})


def _evaluation_metadata(stage: str, res, counts: dict, candidate: StudentAdapter | None) -> dict:
    summary, rows = res.summary, res.rows
    heads = {
        f"{r['system']}/{r['metric']}": dg.MetadataValue.float(round(r["mean"], 4))
        for r in summary.filter(pl.col("headline") & pl.col("mean").is_not_null()).iter_rows(named=True)
    }
    bars = stage_bars(summary, stage)
    calib = judge_calibration(rows.filter(pl.col("stage") == "plan_generation")) if stage == "plan_generation" else {}
    return {
        **table_meta(rows),
        "tasks": res.n_tasks,
        **counts,
        "systems": ", ".join(res.systems),
        "teacher": res.teacher or "none available",
        "coder": res.coder or "none",
        "judge": res.judge or "off",
        "cache_hits": ", ".join(res.cache_hits) or "none",
        "adapter_sha256": candidate.sha256 if candidate else "not trained",
        **heads,
        "summary": md_table(summary, ["system", "metric", "n", "mean", "ci_low", "ci_high", "share_of_teacher"], n=60),
        **({"metrics_plot": dg.MetadataValue.md(f"![{stage}](data:image/png;base64,{bars})")} if bars else {}),
        **(
            {"judge_exec_spearman": dg.MetadataValue.float(calib["spearman"])}
            if calib.get("spearman") is not None
            else {}
        ),
        "preview": md_table(rows, ["task_id", "system", "parse_error", "exec_status", "validity"], n=15),
    }


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=EVAL_VERSION,
    kinds={"html", "polars"},
    ins={"evaluations": dg.AssetIn(**ALL)},
    description="The evaluation report: every metric of every stage for base, adapter and teacher with "
    "bootstrap intervals, the adapter's share of teacher quality, judge calibration and the history across "
    "adapter versions; a self-contained HTML file and a markdown summary shown in the UI.",
)
def eval_report(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, evaluations
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    ev = cfg.evaluation
    parts = {k: v for k, v in (evaluations or {}).items() if v is not None and v.height}
    rows = pl.concat(list(parts.values()), how="diagonal_relaxed") if parts else pl.DataFrame(schema=ROW_SCHEMA)
    summaries = [
        summarise(stage, df, n_boot=ev.bootstrap, level=ev.ci_level, seed=ev.seed) for stage, df in parts.items()
    ]
    summary = pl.concat(summaries) if summaries else pl.DataFrame(schema=SUMMARY_SCHEMA)
    calib = judge_calibration(rows.filter(pl.col("stage") == "plan_generation"))
    folder = cfg.resolved_cache_dir() / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    history = _update_history(folder / "history.parquet", rows, summary)
    tasks = {stage: df["task_id"].n_unique() for stage, df in parts.items()}
    md, page, plots = render(summary, rows, history, calib, ev.target_share, tasks)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    html_path, md_path = folder / "eval_report.html", folder / "eval_report.md"
    for path, text in ((html_path, page), (md_path, md), (folder / f"eval_report-{stamp}.html", page)):
        path.write_text(text)
    return dg.Output(
        summary,
        metadata={
            **table_meta(summary),
            "stages": len(parts),
            "report_html": dg.MetadataValue.path(str(html_path)),
            "report_md": dg.MetadataValue.path(str(md_path)),
            "report": dg.MetadataValue.md(md),
            "plots": ", ".join(plots),
            "adapter_versions_in_history": history["adapter_sha256"].n_unique() if history.height else 0,
            **(
                {"judge_exec_spearman": dg.MetadataValue.float(calib["spearman"])}
                if calib.get("spearman") is not None
                else {}
            ),
        },
    )


def _update_history(path: Path, rows: pl.DataFrame, summary: pl.DataFrame) -> pl.DataFrame:
    """One entry per (stage, adapter version, headline metric), the first time that version is evaluated."""
    old = pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=HISTORY_SCHEMA)
    seen = set(zip(old["stage"].to_list(), old["adapter_sha256"].to_list()))
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    new = []
    for stage in summary["stage"].unique().to_list() if summary.height else []:
        ids = rows.filter((pl.col("stage") == stage) & (pl.col("system") == "adapter"))["system_id"].unique().to_list()
        if not ids:
            continue
        sha = ids[0].split(":", 1)[1]
        if (stage, sha) in seen:
            continue
        for r in summary.filter(
            (pl.col("stage") == stage)
            & (pl.col("system") == "adapter")
            & pl.col("headline")
            & pl.col("mean").is_not_null()
        ).iter_rows(named=True):
            new.append({"ts": now, "stage": stage, "adapter_sha256": sha, "metric": r["metric"], "mean": r["mean"]})
    if new:
        old = pl.concat([old, pl.DataFrame(new, schema=HISTORY_SCHEMA)])
        old.write_parquet(path)
    return old


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=stage_partitions,
    code_version=EVAL_VERSION,
    kinds={"polars"},
    deps=[eval_report],
    description="The live adapter per stage: a newly evaluated adapter goes live only if it beats the base "
    "student on the stage's gain metric (paired bootstrap interval above 0, at least "
    "evaluation.min_gain_over_base) and no headline metric drops more than evaluation.tolerance against "
    "what the router serves now; the decision, both comparisons and their intervals are recorded "
    "(decisions.jsonl) and the router serves the live set (or the base student).",
)
def promoted_adapters(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    evaluations: pl.DataFrame,
    gguf_adapters: pl.DataFrame,
) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage, ev = context.partition_key, cfg.evaluation
    registry = _registry(cfg)
    settings = GateSettings(ev.min_gain_over_base, ev.tolerance, ev.bootstrap, ev.ci_level, ev.seed)
    result = run_gate(registry, stage, _candidate(gguf_adapters), evaluations, settings)
    df = pl.DataFrame([result.row()], schema=PROMOTED_SCHEMA)
    context.log.info(f"{stage}: {result.status}: {result.reason}")
    return dg.Output(df, metadata={**table_meta(df), **_gate_metadata(result, ev, registry)})


def _gate_metadata(result: Promotion, ev, registry: Registry) -> dict:
    d = result.decision
    if d is None:
        return {"status": result.status, "reason": result.reason}
    return {
        "decision": result.status,
        "reason": result.reason,
        "serving": d.serving,
        "candidate_sha256": result.candidate_sha256,
        "live_sha256": result.live.get("adapter_sha256") or "none",
        "gain_metric": GAIN_METRIC[result.stage],
        "min_gain_over_base": ev.min_gain_over_base,
        "tolerance": ev.tolerance,
        "headline_metrics": ", ".join(HEADLINE[result.stage]),
        **{
            f"candidate/{k}": dg.MetadataValue.float(round(v, 4))
            for k, v in d.candidate_metrics.items()
            if v is not None
        },
        "comparisons": dg.MetadataValue.md(comparisons_table(d.comparisons)),
        "decisions": dg.MetadataValue.md(decisions_table(registry.decisions(result.stage))),
    }
