"""Materialize the whole asset graph through the Dagster instance (used by `distill demo`).

Assets are grouped in dependency order into runs of the same partitioning, one
run per partition: every repository for repo-partitioned assets, every valid
stage x teacher pair (invalid pairs are skipped with their reason), every key
of other static partitions. Blocking checks act inside a run; an asset whose
upstream failed is not attempted.
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


def materialize_all(cfg: DistillConfig, *, select: str = "*", groups: set[str] | None = None,
                    instance: dg.DagsterInstance | None = None,
                    log: Callable[[str], None] = print, log_level: str = "WARNING") -> list[AssetRunSummary]:
    from distill_assets.definitions import defs as lazy_defs
    from distill_assets.defs.partitions import REPO_PARTITIONS_NAME

    defs = lazy_defs() if callable(lazy_defs) and not isinstance(lazy_defs, dg.Definitions) else lazy_defs
    instance = instance or dg.DagsterInstance.get()
    wanted = [r.name for r in cfg.sources.repos]
    have = set(instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    if [n for n in wanted if n not in have]:
        instance.add_dynamic_partitions(REPO_PARTITIONS_NAME, [n for n in wanted if n not in have])

    graph = defs.resolve_asset_graph()
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [k for k in graph.toposorted_asset_keys
            if graph.get(k).is_materializable and fnmatch.fnmatch(k.to_user_string(), select)
            and (groups is None or graph.get(k).group_name in groups)]

    # consecutive assets with the same partitioning run together (blocking checks then gate downstream)
    groups: list[list[dg.AssetKey]] = []
    for k in keys:
        pdef = graph.get(k).partitions_def
        if groups and graph.get(groups[-1][0]).partitions_def == pdef:
            groups[-1].append(k)
        else:
            groups.append([k])

    failed_keys: set[dg.AssetKey] = set()
    summaries: list[AssetRunSummary] = []
    for group in groups:
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
        pkeys = _partition_keys(pdef, cfg, instance, log)
        for pk in pkeys:
            log(f"materialize {names}" + (f" [{pk}]" if pk else ""))
            result = job.execute_in_process(
                instance=instance, asset_selection=runnable, partition_key=pk, raise_on_error=False,
                tags={"distill/launched_by": "distill demo"},
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            )
            if result.success:
                ok += 1
            else:
                bad += 1
                for ev in result.all_events:
                    if ev.is_failure and ev.event_specific_data is not None:
                        err = getattr(ev.event_specific_data, "error", None)
                        log(f"  failed: {ev.step_key}: {err.message.strip() if err else ev.message}")
                    if ev.event_type_value == "ASSET_CHECK_EVALUATION":
                        data = ev.event_specific_data
                        if not data.passed:
                            log(f"  check failed: {data.check_name} on {data.asset_key.to_user_string()}")
                materialized = {e.asset_key for e in result.get_asset_materialization_events()}
                failed_keys.update(k for k in runnable if k not in materialized)
        summaries.append(AssetRunSummary(names, len(pkeys), ok, bad, time.time() - t0))
    return summaries
