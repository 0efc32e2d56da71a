"""Sensors: the nightly retrain (declarative automation), new commits in source repositories, production
logs past a threshold, and failed runs recorded where the UI shows them."""

import datetime as dt
import json

import dagster as dg

from distill_assets.config import STAGE_ORDER, load_config
from distill_assets.defs.automation_conditions import CRON, TIMEZONE
from distill_assets.defs.evaluation.assets import evaluations
from distill_assets.defs.export.assets import gguf_adapters
from distill_assets.defs.feedback.assets import log_url, production_feedback, self_improvement_data
from distill_assets.defs.sources.assets import mined_commits
from distill_assets.defs.training.assets import adapters
from distill_assets.mining.miner import repo_head
from distill_assets.router.logstore import LogStore

nightly_retrain = dg.AutomationConditionSensorDefinition(
    "nightly_retrain",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description=f"Runs the assets' automation conditions: data preparation on upstream change, and the whole "
    f"pipeline every night at {CRON} ({TIMEZONE}) in dependency order (mining, new teacher answers, scoring, "
    "training in pool gpu, export, evaluation, promotion).",
)


@dg.sensor(
    name="source_repos_new_commits",
    minimum_interval_seconds=300,
    asset_selection=[mined_commits],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Mines a repository again when its branch moves; what depends on the mined commits follows "
    "(their automation conditions).",
)
def source_repos_new_commits(context: dg.SensorEvaluationContext):
    seen = json.loads(context.cursor) if context.cursor else {}
    requests, unreachable = [], []
    for repo in load_config().sources.repos:
        head = repo_head(repo)
        if head is None:
            unreachable.append(repo.name)
            continue
        if seen.get(repo.name) != head:
            requests.append(
                dg.RunRequest(
                    partition_key=repo.name, run_key=f"{repo.name}@{head}", tags={"distill/trigger": "new_commits"}
                )
            )
            seen[repo.name] = head
    context.update_cursor(json.dumps(seen, sort_keys=True))
    if not requests:
        return dg.SkipReason("no new commits" + (f"; unreachable: {', '.join(unreachable)}" if unreachable else ""))
    return requests


RETRAIN_ASSETS = [production_feedback, self_improvement_data, adapters, gguf_adapters, evaluations]


@dg.sensor(
    name="production_logs_retrain",
    minimum_interval_seconds=600,
    asset_selection=RETRAIN_ASSETS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When automation.feedback_threshold more routed tasks have an outcome in the production log "
    "store: refresh the self-improvement data of every stage and request a retrain (training in pool gpu; "
    "the promotion gate decides what goes live).",
)
def production_logs_retrain(context: dg.SensorEvaluationContext):
    cfg = load_config()
    store = LogStore(log_url(cfg))
    try:
        known = sum(1 for o in store.outcomes() if o["tests_passed"] is not None)
    finally:
        store.close()
    last = int(context.cursor or 0)
    if known - last < cfg.automation.feedback_threshold:
        return dg.SkipReason(
            f"{known - last} new tasks with an outcome; a retrain needs {cfg.automation.feedback_threshold}"
        )
    context.update_cursor(str(known))
    return [
        dg.RunRequest(
            partition_key=stage,
            run_key=f"feedback-{known}-{stage}",
            tags={"distill/trigger": "production_logs", "distill/outcomes": str(known)},
        )
        for stage in STAGE_ORDER
    ]


@dg.run_failure_sensor(
    name="record_run_failures",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
    description="Records every failed run on the assets it was materializing (an observation with "
    "the error, shown on the asset's page) and in failures.jsonl under the cache folder.",
)
def record_run_failures(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    errors = {}
    for ev in context.get_step_failure_events():
        err = ev.step_failure_data.error
        errors[ev.step_key] = (err.message if err else "unknown error").strip()[:1000]
    message = "; ".join(f"{k}: {v}" for k, v in errors.items()) or (context.failure_event.message or "run failed")
    partition = run.tags.get("dagster/partition")
    keys = sorted(run.asset_selection or [], key=lambda k: k.to_user_string())
    failed = [k for k in keys if any(k.to_user_string().replace("/", "__") in s for s in errors)] or keys
    for key in failed:
        context.instance.report_runless_asset_event(
            dg.AssetObservation(
                asset_key=key,
                partition=partition,
                metadata={
                    "failed_run": dg.MetadataValue.dagster_run(run.run_id),
                    "error": message[:2000],
                    "status": "failed",
                },
            )
        )
    try:
        cache = load_config().resolved_cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / "failures.jsonl", "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "run_id": run.run_id,
                        "partition": partition,
                        "assets": [k.to_user_string() for k in failed],
                        "error": message,
                    }
                )
                + "\n"
            )
    except Exception as exc:  # noqa: BLE001 - the observation above is the record; the file is a convenience
        context.log.warning(f"could not append to failures.jsonl: {exc}")
