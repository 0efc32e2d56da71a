"""Materialize the whole asset graph through the Dagster instance (used by `distill demo`).

Assets are grouped in dependency order into runs of the same partitioning, one
run per partition: every repository for repo-partitioned assets, every valid
stage x teacher pair (invalid pairs are skipped with their reason), every key
of other static partitions. Blocking checks act inside a run; an asset whose
upstream failed (or whose blocking check failed) is not attempted.

Before anything runs the `source_repos` partitions are made to match distill.yaml:
new repositories get a partition, repositories no longer listed lose theirs (their
materializations stay in the event log).

Each failure is reported as one line (`log`): the asset, the partition and the real
reason (the `dg.Failure` description, or the user exception under Dagster's
wrappers); the stack trace stays in the run's event log, for the UI. The runs'
console logger prints nothing below CRITICAL, so no trace reaches the console.
"""

import fnmatch
import time
from dataclasses import dataclass
from typing import Callable

import dagster as dg

from distill_assets.config import DistillConfig


@dataclass
class AssetRunSummary:
    asset: str
    partitions: int
    ok: int
    failed: int
    seconds: float


class SelectionError(ValueError):
    """A selection that matches no asset and no group: one message that lists the groups."""


def _partition_keys(pdef, cfg: DistillConfig, instance: dg.DagsterInstance, log) -> list[str | None]:
    from distill_assets.defs.partitions import REPO_PARTITIONS_NAME, stage_teacher_skip

    if pdef is None:
        return [None]
    if isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name == REPO_PARTITIONS_NAME:
        return list(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    if isinstance(pdef, dg.MultiPartitionsDefinition) and set(pdef.partition_dimension_names) == {"stage", "teacher"}:
        keys = []
        for k in pdef.get_partition_keys():
            reason = stage_teacher_skip(cfg, k)
            if reason is None:
                keys.append(k)
            else:
                log(f"  skip partition {k}: {reason}")
        return keys
    from distill_assets.defs.partitions import plan_source_partitions

    if pdef == plan_source_partitions:  # plans of the reference, and of teachers usable for stage 4
        keys = []
        for k in pdef.get_partition_keys():
            ok, reason = (True, "") if k == "reference" else cfg.stage_teacher_status("plan_generation", k)
            if ok:
                keys.append(k)
            else:
                log(f"  skip partition {k}: {reason}")
        return keys
    return list(pdef.get_partition_keys(dynamic_partitions_store=instance))


# --------------------------------------------------------------------------- selection


def select_asset_keys(graph, select: str = "*", groups: set[str] | None = None) -> list[dg.AssetKey]:
    """Materializable asset keys, toposorted, chosen by ``select``:

    - ``group:NAME`` (NAME may be a glob): the assets of the matching groups;
    - a group name (``sources``): that group's assets, plus any asset key it matches as a glob;
    - otherwise an asset-key glob (``mined_*``, ``*``).

    ``groups`` narrows the result further. Raises SelectionError when nothing matches."""
    keys = [k for k in graph.toposorted_asset_keys if graph.get(k).is_materializable]
    all_groups = sorted({graph.get(k).group_name for k in keys})
    if select.startswith("group:"):
        pattern = select[len("group:") :]
        chosen = {g for g in all_groups if fnmatch.fnmatchcase(g, pattern)}
        picked = [k for k in keys if graph.get(k).group_name in chosen]
    else:
        picked = [
            k for k in keys if fnmatch.fnmatchcase(k.to_user_string(), select) or graph.get(k).group_name == select
        ]
    if groups is not None:
        picked = [k for k in picked if graph.get(k).group_name in groups]
    if not picked:
        within = f" within groups {', '.join(sorted(groups))}" if groups is not None else ""
        raise SelectionError(
            f"{select!r} matches no asset key and no asset group{within}; groups: "
            f"{', '.join(all_groups)} (select a group by name or as group:NAME, "
            "or assets by key glob, e.g. 'mined_*')"
        )
    return picked


# --------------------------------------------------------------------------- repository partitions


def sync_repo_partitions(
    cfg: DistillConfig, instance: dg.DagsterInstance, log: Callable[[str], None] = print
) -> tuple[list[str], list[str]]:
    """Add a `source_repos` partition per configured repository, delete those of repositories no longer
    in distill.yaml. Returns (added, removed). Deleting a partition keeps its materializations in the
    event log; only the partition (what runs and automation iterate over) goes."""
    from distill_assets.defs.partitions import REPO_PARTITIONS_NAME

    wanted = [r.name for r in cfg.sources.repos]
    have = list(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    added = [n for n in wanted if n not in have]
    removed = [n for n in have if n not in wanted]
    if added:
        instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, added)
    for name in removed:
        instance.delete_dynamic_partition(REPO_PARTITIONS_NAME, name)
        log(f"remove partition {name}: no longer in distill.yaml sources.repos (its history stays in the event log)")
    return added, removed


# --------------------------------------------------------------------------- failure lines

_MAX_REASON = 500
_RETRY_WRAPPERS = ("RetryRequested", "RetryRequestedFromPolicy")


def _one_line(text: str) -> str:
    s = " | ".join(ln.strip() for ln in str(text).splitlines() if ln.strip())
    if len(s) > _MAX_REASON:  # keep the start (what failed) and the end (a log's last lines)
        s = s[:200] + " ... " + s[-(_MAX_REASON - 205) :]
    return s


def _error_text(err) -> str:
    """'ValueError: msg' from a SerializableErrorInfo (whose message reads 'pkg.mod.ValueError: msg')."""
    msg = err.message.strip()
    head, sep, rest = msg.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == err.cls_name:
        return rest if err.cls_name == "Failure" else f"{err.cls_name}: {rest}"
    return msg


def _is_wrapper(err) -> bool:
    """Dagster's own wrappers around a user error (step execution, input loading, retries)."""
    if err.cause is None:
        return False
    return err.cls_name.startswith("Dagster") or err.cls_name in _RETRY_WRAPPERS


def failure_reason(step_failure_data) -> str:
    """One line: the `dg.Failure` description, else the first exception under Dagster's wrappers
    (with the innermost cause added when it is another exception)."""
    user = getattr(step_failure_data, "user_failure_data", None)
    if user is not None and user.description:
        return _one_line(user.description)
    err = step_failure_data.error if hasattr(step_failure_data, "error") else step_failure_data
    if err is None:
        return "failed (no error recorded)"
    chain = []
    while err is not None:
        chain.append(err)
        err = err.cause
    user_errs = [e for e in chain if not _is_wrapper(e)] or chain[-1:]
    first, innermost = user_errs[0], chain[-1]
    text = _error_text(first)
    if innermost is not first:
        text += f" (caused by {_error_text(innermost)})"
    return _one_line(text)


def _step_entities(job: dg.JobDefinition, step_key: str | None) -> set:
    """The asset and check keys a step computes (empty when Dagster cannot tell)."""
    if step_key is None:
        return set()
    try:
        from dagster._core.definitions.dependency import NodeHandle

        return set(job.asset_layer.get_selected_entity_keys_for_node(NodeHandle(step_key.split("[")[0], None)))
    except Exception:  # noqa: BLE001 - naming only: the line then names the step
        return set()


def _entity_name(key) -> str:
    if isinstance(key, dg.AssetCheckKey):
        return f"check {key.name} on {key.asset_key.to_user_string()}"
    return key.to_user_string()


@dataclass
class RunReport:
    lines: list[str]
    materialized: set[dg.AssetKey]
    blocked: set[dg.AssetKey]  # assets whose blocking check failed (materialized, but downstream must wait)


def report_run(result, job: dg.JobDefinition, selected: list[dg.AssetKey], partition_key: str | None) -> RunReport:
    """One line per failed step (its assets, the partition, the reason), one per failed check, one per
    selected asset the run did not reach; never a stack trace, never a failure twice (retries and the
    run failure repeat the step's error)."""
    part = f" [{partition_key}]" if partition_key else ""
    lines: list[str] = []
    materialized = {e.asset_key for e in result.get_asset_materialization_events()}
    blocked: set[dg.AssetKey] = set()
    failed: set = set()
    failed_steps = 0
    for ev in result.all_events:
        if ev.event_type_value == "ASSET_CHECK_EVALUATION":
            data = ev.event_specific_data
            if not data.passed:
                blocks = data.blocking and data.severity == dg.AssetCheckSeverity.ERROR  # WARN never blocks
                kind = "check failed (blocking)" if blocks else "check failed"
                why = f": {_one_line(data.description)}" if data.description else ""
                lines.append(f"  {kind}: {data.check_name} on {data.asset_key.to_user_string()}{part}{why}")
                if blocks:
                    blocked.add(data.asset_key)
        elif ev.is_step_failure:
            failed_steps += 1
            data = ev.step_failure_data
            if data.error is not None and data.error.cls_name == "DagsterAssetCheckFailedError":
                continue  # a blocking check failed: its own line above says which and why
            entities = _step_entities(job, ev.step_key)
            failed.update(entities)
            names = ", ".join(sorted(_entity_name(k) for k in entities)) or str(ev.step_key)
            lines.append(f"  failed: {names}{part}: {failure_reason(data)}")
    if not result.success and not failed_steps:  # the run failed outside any step
        run_failure = next((e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE"), None)
        err = getattr(run_failure.event_specific_data, "error", None) if run_failure is not None else None
        reason = failure_reason(err) if err is not None else (run_failure.message if run_failure else "run failed")
        lines.append(f"  failed: run{part}: {_one_line(reason)}")
    if not result.success:
        for k in selected:
            if k not in materialized and k not in failed:
                lines.append(f"  skip {k.to_user_string()}{part}: not run (an upstream step or blocking check failed)")
    return RunReport(lines, materialized, blocked)


# --------------------------------------------------------------------------- materialize everything


def _in_stages(pdef, key: str | None, stages: set[str] | None) -> bool:
    """Whether a partition key belongs to one of ``stages`` (keys of other partitionings always do)."""
    from distill_assets.defs.partitions import stage_partitions

    if stages is None or key is None:
        return True
    if pdef == stage_partitions:
        return key in stages
    if isinstance(pdef, dg.MultiPartitionsDefinition) and "stage" in pdef.partition_dimension_names:
        return str(key).split("|")[pdef.partition_dimension_names.index("stage")] in stages
    return True


def materialize_all(
    cfg: DistillConfig,
    *,
    select: str = "*",
    groups: set[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    stages: set[str] | None = None,
    log: Callable[[str], None] = print,
    log_level: str = "CRITICAL",
) -> list[AssetRunSummary]:
    """Materialize the selected assets (see select_asset_keys) for every partition that applies
    (``stages``: only these stages' partitions of stage-partitioned assets).

    ``log_level`` is the runs' console logger level: at the default CRITICAL it prints nothing
    (step failures are logged at ERROR with their stack trace; they stay in the event log and the
    failures come through ``log`` as one line each)."""
    from distill_assets.definitions import defs as lazy_defs

    defs = lazy_defs() if callable(lazy_defs) and not isinstance(lazy_defs, dg.Definitions) else lazy_defs
    instance = instance or dg.DagsterInstance.get()
    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    keys = select_asset_keys(graph, select, groups)  # before anything changes: a bad selection does nothing
    sync_repo_partitions(cfg, instance, log)

    # consecutive assets with the same partitioning run together (blocking checks then gate downstream)
    runs: list[list[dg.AssetKey]] = []
    for k in keys:
        pdef = graph.get(k).partitions_def
        if runs and graph.get(runs[-1][0]).partitions_def == pdef:
            runs[-1].append(k)
        else:
            runs.append([k])

    failed_keys: set[dg.AssetKey] = set()
    summaries: list[AssetRunSummary] = []
    for group in runs:
        runnable = []
        for k in group:  # toposorted: a skipped asset also skips what depends on it
            if graph.get(k).parent_keys & failed_keys:
                failed_keys.add(k)
                log(f"skip {k.to_user_string()}: an upstream asset failed")
            else:
                runnable.append(k)
        if not runnable:
            continue
        pdef = graph.get(runnable[0]).partitions_def
        names = ", ".join(k.to_user_string() for k in runnable)
        t0 = time.time()
        ok = bad = 0
        pkeys = [k for k in _partition_keys(pdef, cfg, instance, log) if _in_stages(pdef, k, stages)]
        for pk in pkeys:
            log(f"materialize {names}" + (f" [{pk}]" if pk else ""))
            result = job.execute_in_process(
                instance=instance,
                asset_selection=runnable,
                partition_key=pk,
                raise_on_error=False,
                tags={"distill/launched_by": "distill demo"},
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )
            report = report_run(result, job, runnable, pk)
            for line in report.lines:
                log(line)
            failed_keys.update(report.blocked)
            if result.success:
                ok += 1
            else:
                bad += 1
                failed_keys.update(k for k in runnable if k not in report.materialized)
        summaries.append(AssetRunSummary(names, len(pkeys), ok, bad, time.time() - t0))
    return summaries
