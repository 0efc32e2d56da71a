"""Partitions: source repositories (dynamic) and stage x teacher (static, from distill.yaml).

Not every stage x teacher pair is real: a teacher may not be assigned to a
stage, or may have no key. Such partitions are skipped with a clear reason
(``stage_teacher_skip``) rather than failed.
"""

import dagster as dg

from distill_assets.config import STAGE_ORDER
from distill_assets.defs.settings import definitions_config

REPO_PARTITIONS_NAME = "source_repos"
repo_partitions = dg.DynamicPartitionsDefinition(name=REPO_PARTITIONS_NAME)
stage_partitions = dg.StaticPartitionsDefinition(list(STAGE_ORDER))


def _teacher_names() -> list[str]:
    return [t.name for t in definitions_config().teachers]


teacher_partitions = dg.StaticPartitionsDefinition(_teacher_names())
stage_teacher_partitions = dg.MultiPartitionsDefinition({"stage": stage_partitions, "teacher": teacher_partitions})
# whose plans are executed: a teacher, or the reference plans from gold patches
plan_source_partitions = dg.StaticPartitionsDefinition(_teacher_names() + ["reference"])


def stage_teacher_of(partition_key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """(stage, teacher) of a partition key. Multi-partition key strings join the
    dimension keys in dimension-name order, so they read "stage|teacher"."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        dims = partition_key.keys_by_dimension
        return dims["stage"], dims["teacher"]
    stage, _, teacher = str(partition_key).partition("|")
    return stage, teacher


def stage_teacher_skip(config, partition_key) -> str | None:
    """None when the (stage, teacher) partition is a real pair, else the reason it is skipped."""
    stage, teacher = stage_teacher_of(partition_key)
    ok, reason = config.stage_teacher_status(stage, teacher)
    return None if ok else reason
