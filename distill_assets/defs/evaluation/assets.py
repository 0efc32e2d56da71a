"""Evaluation: held-out metrics for base student, trained adapter and teacher per stage, the report,
and the promotion gate that decides which adapter the router serves."""

import datetime as dt
import json
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import polars as pl

from distill_assets.config import ConfigError, resolve_model_file
from distill_assets.defs.automation_conditions import NIGHTLY, REFRESH
from distill_assets.defs.metadata import md_table, table_meta
from distill_assets.defs.partitions import stage_partitions
from distill_assets.defs.resources import TRANSIENT_RETRY, DistillConfigResource
from distill_assets.defs.teachers.resources import TeachersResource
from distill_assets.evaluation.gate import Registry, decide
from distill_assets.evaluation.judge import SCHEMA as JUDGE_SCHEMA
from distill_assets.evaluation.judge import judge_messages, messages_hash, parse_judge
from distill_assets.evaluation.metrics import HEADLINE
from distill_assets.evaluation.report import HISTORY_SCHEMA, render, stage_bars
from distill_assets.evaluation.run import (EVAL_VERSION, ROW_SCHEMA, SUMMARY_SCHEMA, Downstream, EvalCache, EvalItem,
                                           ExecOutcome, Generation, System, evaluate_stage, judge_calibration,
                                           student_generator, summarise)
from distill_assets.plans.schema import Plan
from distill_assets.router.engine import RouterError, StageEngine
from distill_assets.sandbox import Limits, SandboxUnavailable
from distill_assets.scoring.executions import PlanToRun, SandboxCache, coder_requests, parse_diff, run_in_sandbox
from distill_assets.teachers.client import TeacherPermanentError, TeacherRequest
from distill_assets.teachers.runner import all_cached, run_teacher

GROUP = "evaluation"
ALL = {"partition_mapping": dg.AllPartitionMapping(), "metadata": {"allow_missing_partitions": True}}
PROMOTED_SCHEMA = {"stage": pl.Utf8, "status": pl.Utf8, "reason": pl.Utf8, "candidate_sha256": pl.Utf8,
                   "live_sha256": pl.Utf8, "gguf_path": pl.Utf8, "base_gguf": pl.Utf8, "metrics_json": pl.Utf8,
                   "regressions_json": pl.Utf8}


def _by_id(df: pl.DataFrame) -> dict:
    return {r["task_id"]: r for r in df.iter_rows(named=True)}


def _first_available(cfg, stage: str, preferred: str | None) -> str | None:
    names = [preferred] if preferred else cfg.stage(stage).teachers
    for name in names:
        if cfg.stage_teacher_status(stage, name)[0] or (preferred and cfg.teacher(name).availability()[0]):
            return name
    return None


class _Endpoints:
    """Teacher endpoints opened once per step, only when a call is not in the cache."""

    def __init__(self, teachers: TeachersResource, cfg, stack: ExitStack):
        self.teachers, self.cfg, self.stack = teachers, cfg, stack
        self.cache = teachers.response_cache(cfg)
        stack.callback(self.cache.close)
        self.open: dict[str, tuple[str, str | None]] = {}

    def answers(self, name: str, requests: list[TeacherRequest]):
        if not requests:
            return []
        teacher = self.cfg.teacher(name)
        if teacher.kind == "local_llama_cpp" and all_cached(teacher, self.cache, requests):
            url, key = "http://127.0.0.1:9/v1", None
        else:
            if name not in self.open:
                self.open[name] = self.stack.enter_context(self.teachers.endpoint(teacher))
            url, key = self.open[name]
        try:
            return run_teacher(teacher, url, key, self.cache, requests)[0]
        except TeacherPermanentError as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None


def _items(cfg, stage: str, stage_prompts: pl.DataFrame, reference_plans: pl.DataFrame, change_tasks: pl.DataFrame,
           task_contexts: pl.DataFrame, selections: dict) -> tuple[list[EvalItem], dict]:
    """Test-split prompts with a valid reference plan; tasks with selected tests first (they give execution
    metrics), then by id; at most evaluation.max_tasks."""
    tasks, ctxs = _by_id(change_tasks), _by_id(task_contexts)
    refs = {r["task_id"]: r["plan_json"] for r in reference_plans.filter(pl.col("usable")).iter_rows(named=True)}
    counts = {"test_prompts": 0, "no_reference_plan": 0}
    items = []
    for r in stage_prompts.filter(pl.col("split") == "test").sort("task_id").iter_rows(named=True):
        counts["test_prompts"] += 1
        if r["task_id"] not in refs or r["task_id"] not in tasks or r["task_id"] not in ctxs:
            counts["no_reference_plan"] += 1
            continue
        items.append(EvalItem(tasks[r["task_id"]], ctxs[r["task_id"]], json.loads(r["messages_json"]),
                              json.loads(r["schema_json"]) if r["schema_json"] else None, r["prompt_hash"],
                              Plan.model_validate_json(refs[r["task_id"]])))
    items.sort(key=lambda i: (selections.get(i.task["task_id"], {}).get("status") != "selected", i.task["task_id"]))
    if cfg.evaluation.max_tasks:
        items = items[: cfg.evaluation.max_tasks]
    return items, counts


@dg.asset(automation_condition=NIGHTLY, group_name=GROUP, partitions_def=stage_partitions, code_version=EVAL_VERSION,
          pool="teacher_api",
          kinds={"polars"}, retry_policy=TRANSIENT_RETRY, ins={"reference_plans": dg.AssetIn(), "change_tasks": dg.AssetIn(),
                                 "task_contexts": dg.AssetIn(), "test_selections": dg.AssetIn()},
          description="Held-out (test split) tasks of the stage answered by the base student, the trained adapter "
          "(llama.cpp, the student's trained format) and the teacher; per-task metrics against the gold patch's "
          "plan and the teacher's labels; stage-4 plans coded by one fixed coder and run in the sandbox, and "
          "judged. Cached per system by content: a new adapter re-evaluates only itself.")
def evaluations(context: dg.AssetExecutionContext, distill: DistillConfigResource, teachers: TeachersResource,
                stage_prompts: pl.DataFrame, reference_plans: pl.DataFrame, change_tasks: pl.DataFrame,
                task_contexts: pl.DataFrame, test_selections: pl.DataFrame,
                gguf_adapters: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    st, ev = cfg.stage(stage), cfg.evaluation
    sel = _by_id(test_selections)
    items, counts = _items(cfg, stage, stage_prompts, reference_plans, change_tasks, task_contexts, sel)
    if not items:
        df = pl.DataFrame(schema=ROW_SCHEMA)
        reason = "no held-out (test split) task with a reference plan for this stage"
        context.log.warning(reason)
        return dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason, **counts})
    adapter = gguf_adapters.row(0, named=True) if gguf_adapters.height else {}
    exported = adapter.get("status") == "exported"
    try:
        base_gguf = adapter["base_gguf"] if exported else str(resolve_model_file(st.inference_gguf() or ""))
    except ConfigError as exc:
        raise dg.Failure(description=f"{stage}: no base GGUF to evaluate the student on: {exc}",
                         allow_retries=False) from None
    max_tokens = ev.max_output_tokens or st.max_output_tokens
    sbx = cfg.sandbox
    limits = Limits(timeout_s=sbx.timeout_s, memory_mb=sbx.memory_mb, max_processes=sbx.max_processes)
    sandbox_cache = SandboxCache(cfg.resolved_cache_dir() / "sandbox_runs")

    with ExitStack() as stack:
        eps = _Endpoints(teachers, cfg, stack)
        engine = None

        def get_engine() -> StageEngine:
            nonlocal engine
            if engine is None:
                engine = StageEngine(n_ctx=cfg.router.n_ctx, n_threads=cfg.router.n_threads)
                stack.callback(engine.close)
            return engine

        def student(with_adapter: bool):
            def generate(stage_key, its):
                gen = student_generator(get_engine(), base_gguf, (stage, adapter["gguf_path"]) if with_adapter else None,
                                        max_tokens=max_tokens, max_string_chars=cfg.router.max_string_chars)
                try:
                    return gen(stage_key, its)
                except RouterError as exc:
                    raise dg.Failure(description=f"{stage}: {exc}", allow_retries=False) from None
            return generate

        base_file = Path(base_gguf)
        systems = [System("base", f"base:{base_file}:{base_file.stat().st_size}", student(False))]
        if exported:
            systems.append(System("adapter", f"adapter:{adapter['sha256']}", student(True)))
        teacher_name = _first_available(cfg, stage, ev.teacher)
        if teacher_name:
            teacher = cfg.teacher(teacher_name)

            def teacher_generate(stage_key, its):
                cap = min(st.max_output_tokens, teacher.max_output_tokens or st.max_output_tokens,
                          ev.max_output_tokens or st.max_output_tokens)
                reqs = [TeacherRequest(i.task["task_id"], stage_key, i.prompt_hash, 0, i.messages, i.schema,
                                       st.temperature, cap) for i in its]
                by_task = {a.request.task_id: a for a in eps.answers(teacher_name, reqs)}
                out = []
                for i in its:
                    a = by_task.get(i.task["task_id"])
                    out.append(Generation(None, error="no answer") if a is None else
                               Generation(a.content, a.tokens_out, a.latency_s * 1000, a.error))
                return out

            systems.append(System("teacher", f"teacher:{teacher_name}:{teacher.model}", teacher_generate, labels=True))

        coder_name = _first_available(cfg, "code_generation", None)
        code_st = cfg.stage("code_generation")

        def coder(pairs):
            coder_t = cfg.teacher(coder_name)
            plans = [PlanToRun(i.task["task_id"], "evaluation", f"eval:{i.task['task_id']}", pj) for i, pj in pairs]
            tasks = {i.task["task_id"]: i.task for i, _ in pairs}
            ctxs = {i.task["task_id"]: i.context for i, _ in pairs}
            cap = min(code_st.max_output_tokens, coder_t.max_output_tokens or code_st.max_output_tokens)
            reqs = coder_requests(plans, tasks, ctxs, code_st.prompt_token_budget, cfg.context.chars_per_token, 1,
                                  code_st.temperature, cap)
            answers = eps.answers(coder_name, [r for _, r in reqs])
            return [parse_diff(a.content) if a.error is None else (None, a.error) for a in answers]

        def execute(item, diff):
            s = sel.get(item.task["task_id"])
            if s is None or s["status"] != "selected":
                return ExecOutcome("no_tests", None)
            if not diff:
                return ExecOutcome("no_diff", 0.0)
            try:
                res, _ = run_in_sandbox(item.task, s, diff, sbx.test_commands.get(item.task["repo"], []),
                                        sbx.backend, sbx.docker_image, limits, sandbox_cache, context)
            except SandboxUnavailable as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from None
            return ExecOutcome(res.status, res.pass_rate)

        judge_name = _first_available(cfg, "plan_generation", ev.judge) if ev.judge_enabled else None

        def judge(pairs):
            reqs = []
            for i, pj in pairs:
                msgs = judge_messages(i.task, pj)
                reqs.append(TeacherRequest(i.task["task_id"], "judge", messages_hash(msgs), 0, msgs, JUDGE_SCHEMA,
                                           0.0, 300))
            answers = eps.answers(judge_name, reqs)
            return [parse_judge(a.content) if a.error is None else (None, a.error) for a in answers]

        down = Downstream(coder=coder if coder_name else None, coder_id=coder_name or "", execute=execute,
                          judge=judge if judge_name else None, judge_id=judge_name or "")
        settings = {"max_tokens": max_tokens, "max_string_chars": cfg.router.max_string_chars,
                    "n_ctx": cfg.router.n_ctx, "sandbox": [sbx.backend, sbx.test_commands]}
        rows, hits = evaluate_stage(stage, items, systems, down, EvalCache(cfg.resolved_cache_dir() / "evaluations"),
                                    settings, progress=context.log.info)
    summary = summarise(stage, rows, n_boot=ev.bootstrap, level=ev.ci_level, seed=ev.seed)
    heads = {f"{r['system']}/{r['metric']}": dg.MetadataValue.float(round(r["mean"], 4))
             for r in summary.filter(pl.col("headline") & pl.col("mean").is_not_null()).iter_rows(named=True)}
    bars = stage_bars(summary, stage)
    calib = judge_calibration(rows.filter(pl.col("stage") == "plan_generation")) if stage == "plan_generation" else {}
    return dg.Output(rows, metadata={
        **table_meta(rows), "tasks": len(items), **counts, "systems": ", ".join(s.name for s in systems),
        "teacher": teacher_name or "none available", "coder": coder_name or "none", "judge": judge_name or "off",
        "cache_hits": ", ".join(s.name for s in systems if hits.get(s.name)) or "none",
        "adapter_sha256": adapter.get("sha256") or "not trained", **heads,
        "summary": md_table(summary, ["system", "metric", "n", "mean", "ci_low", "ci_high", "share_of_teacher"],
                            n=60),
        **({"metrics_plot": dg.MetadataValue.md(f"![{stage}](data:image/png;base64,{bars})")} if bars else {}),
        **({"judge_exec_spearman": dg.MetadataValue.float(calib["spearman"])} if calib.get("spearman") is not None
           else {}),
        "preview": md_table(rows, ["task_id", "system", "parse_error", "exec_status", "validity"], n=15),
    })


@dg.asset(automation_condition=REFRESH, group_name=GROUP, code_version=EVAL_VERSION, kinds={"html", "polars"}, ins={"evaluations": dg.AssetIn(**ALL)},
          description="The evaluation report: every metric of every stage for base, adapter and teacher with "
          "bootstrap intervals, the adapter's share of teacher quality, judge calibration and the history across "
          "adapter versions; a self-contained HTML file and a markdown summary shown in the UI.")
def eval_report(context: dg.AssetExecutionContext, distill: DistillConfigResource, evaluations) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    ev = cfg.evaluation
    parts = {k: v for k, v in (evaluations or {}).items() if v is not None and v.height}
    rows = pl.concat(list(parts.values()), how="diagonal_relaxed") if parts else pl.DataFrame(schema=ROW_SCHEMA)
    summaries = [summarise(stage, df, n_boot=ev.bootstrap, level=ev.ci_level, seed=ev.seed) for stage, df in parts.items()]
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
    return dg.Output(summary, metadata={
        **table_meta(summary), "stages": len(parts), "report_html": dg.MetadataValue.path(str(html_path)),
        "report_md": dg.MetadataValue.path(str(md_path)), "report": dg.MetadataValue.md(md),
        "plots": ", ".join(plots), "adapter_versions_in_history": history["adapter_sha256"].n_unique()
        if history.height else 0,
        **({"judge_exec_spearman": dg.MetadataValue.float(calib["spearman"])} if calib.get("spearman") is not None
           else {}),
    })


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
        for r in summary.filter((pl.col("stage") == stage) & (pl.col("system") == "adapter") & pl.col("headline")
                                & pl.col("mean").is_not_null()).iter_rows(named=True):
            new.append({"ts": now, "stage": stage, "adapter_sha256": sha, "metric": r["metric"], "mean": r["mean"]})
    if new:
        old = pl.concat([old, pl.DataFrame(new, schema=HISTORY_SCHEMA)])
        old.write_parquet(path)
    return old


@dg.asset(automation_condition=REFRESH, group_name=GROUP, partitions_def=stage_partitions,
          code_version=EVAL_VERSION, kinds={"polars"}, deps=[eval_report],
          description="The live adapter per stage: a newly evaluated adapter replaces the live one only if none of "
          "the stage's headline metrics drops more than evaluation.tolerance; the decision and its reason are "
          "recorded (decisions.jsonl) and the router serves the live set.")
def promoted_adapters(context: dg.AssetExecutionContext, distill: DistillConfigResource, evaluations: pl.DataFrame,
                      gguf_adapters: pl.DataFrame) -> dg.Output[pl.DataFrame]:
    cfg = distill.load()
    stage = context.partition_key
    registry = Registry(cfg.resolved_cache_dir() / "promotions")
    adapter = gguf_adapters.row(0, named=True) if gguf_adapters.height else {}
    live_before = registry.live().get(stage)
    cand_rows = evaluations.filter(pl.col("system") == "adapter") if evaluations.height else evaluations
    if adapter.get("status") != "exported" or not cand_rows.height:
        reason = "no evaluated adapter for this stage (train, export and evaluate it first)"
        df = pl.DataFrame([{"stage": stage, "status": "skipped", "reason": reason,
                            "live_sha256": (live_before or {}).get("adapter_sha256")}], schema=PROMOTED_SCHEMA)
        return dg.Output(df, metadata={**table_meta(df), "status": "skipped", "reason": reason})
    ev = cfg.evaluation
    summary = summarise(stage, evaluations, n_boot=ev.bootstrap, level=ev.ci_level, seed=ev.seed)
    metrics = {r["metric"]: r["mean"] for r in summary.filter((pl.col("system") == "adapter") & pl.col("headline"))
               .iter_rows(named=True)}
    decision = decide(stage, adapter["sha256"], metrics, live_before, ev.tolerance)
    registry.record(decision, {"gguf_path": adapter["gguf_path"], "base_gguf": adapter["base_gguf"]})
    live = registry.live().get(stage) or {}
    df = pl.DataFrame([{"stage": stage, "status": "promoted" if decision.promote else "rejected",
                        "reason": decision.reason, "candidate_sha256": adapter["sha256"],
                        "live_sha256": live.get("adapter_sha256"), "gguf_path": live.get("gguf_path"),
                        "base_gguf": live.get("base_gguf"), "metrics_json": json.dumps(metrics),
                        "regressions_json": json.dumps(decision.regressions)}], schema=PROMOTED_SCHEMA)
    history = registry.decisions(stage)
    return dg.Output(df, metadata={
        **table_meta(df), "decision": "promoted" if decision.promote else "rejected", "reason": decision.reason,
        "candidate_sha256": adapter["sha256"], "live_sha256": live.get("adapter_sha256") or "none",
        "tolerance": ev.tolerance, "headline_metrics": ", ".join(HEADLINE[stage]),
        **{f"candidate/{k}": dg.MetadataValue.float(round(v, 4)) for k, v in metrics.items() if v is not None},
        "decisions": dg.MetadataValue.md("| when | candidate | promoted | reason |\n|---|---|---|---|\n" + "\n".join(
            f"| {d['ts']} | {d['candidate_sha256'][:12]} | {d['promote']} | {d['reason'][:120]} |"
            for d in history[-10:])),
    })
