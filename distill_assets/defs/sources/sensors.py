"""Keeps the `source_repos` dynamic partitions in step with distill.yaml.

A repository added to `sources.repos` gets a partition and is mined once; a repository removed from it
loses its partition (a delete request), so later runs and automation no longer iterate over it. Deleting
a partition keeps its materializations in the event log: its history stays visible.
"""

import json

import dagster as dg

from distill_assets.config import load_config
from distill_assets.defs.partitions import REPO_PARTITIONS_NAME, repo_partitions
from distill_assets.defs.sources.assets import mined_commits


def _run_key(name: str, removals: int) -> str:
    # a repository removed and listed again must be mined again: a fresh run key per re-addition
    return f"mine-{name}" if not removals else f"mine-{name}-{removals}"


@dg.sensor(
    name="source_repos_sync",
    minimum_interval_seconds=60,
    asset_selection=[mined_commits],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition for each repository in distill.yaml and mines it once; deletes the partitions "
    "of repositories no longer listed (their materialization history stays in the event log).",
)
def source_repos_sync(context: dg.SensorEvaluationContext):
    wanted = [r.name for r in load_config().sources.repos]
    existing = list(context.instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    new = [n for n in wanted if n not in existing]
    gone = [n for n in existing if n not in wanted]
    if not new and not gone:
        if not wanted:
            return dg.SkipReason("no repository in distill.yaml sources.repos and no partition to remove")
        return dg.SkipReason(
            f"the partitions match distill.yaml: {len(wanted)} configured "
            f"repositor{'y' if len(wanted) == 1 else 'ies'} ({', '.join(wanted)}), "
            "none to add or remove"
        )
    removals: dict[str, int] = json.loads(context.cursor).get("removals", {}) if context.cursor else {}
    for n in gone:
        removals[n] = removals.get(n, 0) + 1
    requests = []
    if new:
        requests.append(repo_partitions.build_add_request(new))
    if gone:
        requests.append(repo_partitions.build_delete_request(gone))
        context.log.info(f"deleting the partitions of repositories no longer in distill.yaml: {', '.join(gone)}")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=n, run_key=_run_key(n, removals.get(n, 0))) for n in new],
        dynamic_partitions_requests=requests,
        cursor=json.dumps({"removals": removals}, sort_keys=True),
    )
