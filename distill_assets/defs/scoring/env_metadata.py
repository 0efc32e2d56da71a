"""What the UI shows of test environments and test selections: yields, reasons, build times, failures."""

from collections import Counter
from typing import Any

import dagster as dg
import polars as pl

from distill_assets.defs.metadata import md_counts, md_table, table_meta


def environment_metadata(envs: pl.DataFrame, tasks: pl.DataFrame) -> dict[str, Any]:
    status = Counter(envs["status"].to_list()) if envs.height else Counter()
    served = {s: int(envs.filter(pl.col("status") == s)["n_tasks"].sum()) for s in status} if envs.height else {}
    with_tests = tasks.filter(pl.col("has_tests")).height if tasks.height else 0
    built = envs.filter(~pl.col("cache_hit")) if envs.height else envs
    failed = envs.filter(pl.col("status") != "ready") if envs.height else envs
    why = "" if envs.height else ("no task of this repository touches tests" if not with_tests else "")
    return {
        **table_meta(envs),
        **{f"environments_{k}": v for k, v in status.items()},
        "tasks_with_tests": with_tests,
        "tasks_with_ready_environment": served.get("ready", 0),
        "ready_task_share": round(served.get("ready", 0) / with_tests, 3) if with_tests else 0.0,
        "environments_built": built.height,
        "environments_cache_hits": envs.height - built.height,
        "build_seconds_total": round(float(built["seconds"].sum()), 1) if built.height else 0.0,
        "disk_mb_total": round(float(envs["size_mb"].sum()), 1) if envs.height else 0.0,
        "tasks_by_environment_status": md_counts(served, key="status", value="tasks"),
        "failures": dg.MetadataValue.md(
            "\n\n".join(
                f"**{r['env_key']}** ({r['language']}, {r['status']}): {r['detail']}\n```\n{(r['log_tail'] or '')[-800:]}\n```"
                for r in failed.head(5).iter_rows(named=True)
            )
            or "_(none)_"
        ),
        "preview": md_table(
            envs,
            [
                "env_key",
                "language",
                "runner",
                "status",
                "python_version",
                "n_tasks",
                "seconds",
                "size_mb",
                "cache_hit",
                "detail",
            ],
        ),
        **({"empty_because": why} if why else {}),
    }


def selection_metadata(df: pl.DataFrame) -> dict[str, Any]:
    status = Counter(df["status"].to_list()) if df.height else Counter()
    with_tests = df.filter(pl.col("status") != "no_tests") if df.height else df
    f2p = df.filter(pl.col("fail_to_pass").list.len() > 0) if df.height else df
    per_repo = (
        with_tests.group_by("repo")
        .agg(
            pl.len().alias("tasks_with_tests"),
            (pl.col("status") == "selected").sum().alias("selected"),
            (pl.col("fail_to_pass").list.len() > 0).sum().alias("with_fail_to_pass"),
        )
        .sort("repo")
        if with_tests.height
        else with_tests
    )
    misses = with_tests.filter(pl.col("status") != "selected") if with_tests.height else with_tests
    return {
        **table_meta(df),
        **{f"status_{k}": v for k, v in status.items()},
        "tasks_scored_by_tests": status.get("selected", 0),
        "tasks_scored_by_overlap_only": df.height - status.get("selected", 0),
        "tasks_with_fail_to_pass": f2p.height,
        "fail_to_pass_share": round(f2p.height / with_tests.height, 3) if with_tests.height else 0.0,
        "fail_to_pass_total": int(df["fail_to_pass"].list.len().sum()) if df.height else 0,
        "reasons": md_counts(dict(status), key="status", value="tasks"),
        "yield_per_repository": md_table(per_repo, n=50),
        "misses": md_table(misses, ["task_id", "status", "runner", "detail"], width=120),
        "preview": md_table(
            df.with_columns(
                pl.col("fail_to_pass").list.len().alias("f2p"), pl.col("pass_to_pass").list.len().alias("p2p")
            ),
            ["task_id", "status", "runner", "f2p", "p2p", "gold_pass_rate"],
        ),
    }
