"""Keeps the `source_repos` dynamic partitions in step with distill.yaml."""

import dagster as dg

from distill_assets.config import load_config
from distill_assets.defs.partitions import REPO_PARTITIONS_NAME, repo_partitions
from distill_assets.defs.sources.assets import mined_commits


@dg.sensor(
    name="source_repos_sync",
    minimum_interval_seconds=60,
    asset_selection=[mined_commits],
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds a partition for each repository in distill.yaml and mines it once.",
)
def source_repos_sync(context: dg.SensorEvaluationContext):
    wanted = [r.name for r in load_config().sources.repos]
    existing = set(context.instance.get_dynamic_partitions(REPO_PARTITIONS_NAME))
    new = [n for n in wanted if n not in existing]
    if not new:
        return dg.SkipReason("every configured repository already has a partition")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=n, run_key=f"mine-{n}") for n in new],
        dynamic_partitions_requests=[repo_partitions.build_add_request(new)],
    )
