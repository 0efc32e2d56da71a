"""Sources: git history and external datasets -> change tasks -> contexts -> reference plans.

Each asset reads its inputs, calls the domain packages, writes a polars table
and reports counts, rates and previews. No business logic lives here.
"""

import json
from collections import Counter

import dagster as dg
import polars as pl

from distill_assets.contexts.build import build_contexts
from distill_assets.mining.miner import DROP_REASONS, FileClassifier, MiningError, mine_repository, open_repository
from distill_assets.plans.reference import DIFFICULTIES, build_reference_plans, summarize_reference_plans
from distill_assets.tasks.build import build_change_tasks, mined_table
from distill_assets.tasks.external import ExternalSourceError, read_external_sources
from distill_assets.defs.automation_conditions import REFRESH
from distill_assets.defs.metadata import md_counts, md_table, percentiles, table_meta
from distill_assets.defs.partitions import repo_partitions
from distill_assets.defs.resources import DistillConfigResource

GROUP = "sources"

# Bump a version when the asset's output schema or logic changes: the UI then marks
# the asset (and everything downstream) stale, ready for a backfill.
MINED_COMMITS_VERSION = "2"  # 2: submodules, docs-only / release / dependency-bump drops, encodings
EXTERNAL_TASKS_VERSION = "1"
CHANGE_TASKS_VERSION = "2"  # 2: undecodable files as binary patches, per-repository isolation
TASK_CONTEXTS_VERSION = "2"  # 2: per-task error rows
REFERENCE_PLANS_VERSION = "2"  # 2: hunks on symbol spans, resolved edges, usable, difficulty from the plan


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    partitions_def=repo_partitions,
    code_version=MINED_COMMITS_VERSION,
    kinds={"git", "polars"},
    description="Commits of one source repository, each kept or dropped with its reason "
    "(merge, root, undecodable path, formatting-only, only lockfile/vendored/generated/binary/submodule files, "
    "documentation only, release or dependency bump, too few/many files, size).",
)
def mined_commits(context: dg.AssetExecutionContext, distill: DistillConfigResource) -> pl.DataFrame:
    cfg = distill.load()
    name = context.partition_key
    try:
        source = cfg.repo(name)
    except KeyError as exc:
        raise dg.Failure(description=str(exc.args[0]), allow_retries=False) from None
    try:
        repo = open_repository(source, cfg.resolved_cache_dir())
        result = mine_repository(repo, source, cfg.mining)
    except MiningError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    df = mined_table(result)
    drops = result.drop_counts()
    kept = df.filter(pl.col("kept"))
    context.add_output_metadata(
        {
            **table_meta(df),
            "commits": len(result.commits),
            "kept": kept.height,
            "dropped": df.height - kept.height,
            "kept_rate": round(kept.height / df.height, 3) if df.height else 0.0,
            **{f"dropped_{r}": drops[r] for r in DROP_REASONS},
            "drop_reasons": md_counts({r: c for r, c in drops.items() if c}),
            "message_encoding_fallbacks": int(df["message_encoding"].is_not_null().sum()),
            "submodule_file_changes": sum(1 for c in result.commits for f in c.files if f.category == "submodule"),
            "head": result.head,
            "repo_path": dg.MetadataValue.path(result.repo_path),
            "preview": md_table(
                kept.with_columns(pl.col("sha").str.slice(0, 10), pl.col("files").list.len().alias("n_files")),
                ["sha", "subject", "n_files", "meaningful_files", "changed_lines", "test_files"],
            ),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=EXTERNAL_TASKS_VERSION,
    kinds={"polars"},
    description="CommitPackFT and SWE-bench instances read from local JSONL/Parquet/`datasets` copies "
    "in their published schemas; malformed rows are counted by reason.",
)
def external_tasks(context: dg.AssetExecutionContext, distill: DistillConfigResource) -> pl.DataFrame:
    cfg = distill.load()
    try:
        df, stats = read_external_sources(cfg.sources.external)
    except ExternalSourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    by_source = Counter(df["source"].to_list())
    rejected = {
        f"{src} {k[len('rejected_') :]}": v
        for src, s in stats.items()
        for k, v in s.items()
        if k.startswith("rejected_")
    }
    context.add_output_metadata(
        {
            **table_meta(df),
            **{f"tasks_{k}": v for k, v in by_source.items()},
            "rows_read": sum(s["read"] for s in stats.values()),
            "rows_rejected": sum(rejected.values()),
            "rejected_by_reason": md_counts(rejected),
            "sources": dg.MetadataValue.json(stats),
            "preview": md_table(df, ["task_id", "source", "repo", "changed_files", "description"]),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=CHANGE_TASKS_VERSION,
    kinds={"polars"},
    ins={
        "mined_commits": dg.AssetIn(
            partition_mapping=dg.AllPartitionMapping(), metadata={"allow_missing_partitions": True}
        ),
        "external_tasks": dg.AssetIn(),
    },
    description="All change tasks in one table: id, repo, base commit, description, gold patch, changed "
    "and test files, has_tests, and a train/val/test split by repository and time.",
)
def change_tasks(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, mined_commits, external_tasks: pl.DataFrame
) -> pl.DataFrame:
    cfg = distill.load()
    # one partition loads as a table, several as {partition: table}, none as {}
    mined = list(mined_commits.values()) if isinstance(mined_commits, dict) else [mined_commits]
    mined = [m for m in mined if m is not None]  # no repository configured: external sources only
    errors: list[str] = []
    df = build_change_tasks(mined, external_tasks, cfg.mining, cfg.split, errors=errors)
    for e in errors:
        context.log.error(e)
    if errors and df.height == 0:
        raise dg.Failure(description="no tasks: every repository failed:\n" + "\n".join(errors), allow_retries=False)
    splits = Counter(df["split"].to_list())
    sources = Counter(df["source"].to_list())
    context.add_output_metadata(
        {
            **table_meta(df),
            **{f"split_{s}": splits.get(s, 0) for s in ("train", "val", "test")},
            **{f"source_{k}": v for k, v in sources.items()},
            "repos": df["repo"].n_unique() if df.height else 0,
            "repos_failed": len(errors),
            "repo_errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in errors) or "_(none)_"),
            "undecodable_text_files": int(df["undecodable_files"].list.len().sum()) if df.height else 0,
            "has_tests_rate": round(float(df["has_tests"].mean()), 3) if df.height else 0.0,
            "files_per_task_p50": percentiles(df["plan_files"].list.len().to_list())["p50"] if df.height else 0,
            "split_by_source": md_table(
                df.group_by(["source", "split"]).len().sort(["source", "split"]) if df.height else df, n=20
            ),
            "preview": md_table(df, ["task_id", "split", "plan_files", "test_files", "description"]),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=TASK_CONTEXTS_VERSION,
    kinds={"tree-sitter", "polars"},
    description="Per task, at the base commit: the file tree, candidate files within a token budget, "
    "and a tree-sitter symbol index (Python, JS/TS, Go, Rust, Java).",
)
def task_contexts(
    context: dg.AssetExecutionContext, distill: DistillConfigResource, change_tasks: pl.DataFrame
) -> pl.DataFrame:
    cfg = distill.load()

    def progress(i: int, n: int) -> None:
        if i == n or i % 50 == 0:
            context.log.info(f"task contexts: {i}/{n}")

    df, cache = build_contexts(change_tasks, cfg.context, progress=progress)
    ok = df.filter(pl.col("status") == "ok")
    status = Counter(df["status"].to_list())
    tok = percentiles(ok["context_tokens"].to_list())
    context.add_output_metadata(
        {
            **table_meta(df),
            **{f"status_{k}": v for k, v in status.items()},
            "context_tokens_p50": tok["p50"],
            "context_tokens_p90": tok["p90"],
            "context_tokens_p99": tok["p99"],
            "token_budget": cfg.context.token_budget,
            "symbols_total": int(ok["n_symbols"].sum()) if ok.height else 0,
            "symbol_cache_hit_rate": round(cache.hits / max(cache.hits + cache.misses, 1), 3),
            "not_ok_reasons": md_counts(
                Counter(
                    f"{s}: {(d or '').split(': ', 2)[-1][:100]}"
                    for s, d in df.filter(pl.col("status") != "ok").select("status", "detail").iter_rows()
                )
            ),
            "languages": ", ".join(sorted({lang for ls in ok["languages"].to_list() for lang in ls})),
            "preview": md_table(
                df.with_columns(
                    pl.col("candidates").list.eval(pl.element().struct.field("path")).alias("candidate_paths")
                ),
                ["task_id", "status", "n_tree_files", "candidate_paths", "context_tokens", "n_symbols"],
            ),
        }
    )
    return df


@dg.asset(
    automation_condition=REFRESH,
    group_name=GROUP,
    code_version=REFERENCE_PLANS_VERSION,
    kinds={"polars"},
    description="The plan implied by each gold patch (files with roles, symbol changes from the diff's hunks on "
    "tree-sitter spans, dependency edges from resolved references, execution order, difficulty), checked by the "
    "structural validator. Invalid plans are kept with their violations and never used (`usable`).",
)
def reference_plans(
    context: dg.AssetExecutionContext,
    distill: DistillConfigResource,
    change_tasks: pl.DataFrame,
    task_contexts: pl.DataFrame,
) -> pl.DataFrame:
    cfg = distill.load()
    classifier = FileClassifier(cfg.mining)

    def progress(i: int, n: int) -> None:
        if i == n or i % 250 == 0:
            context.log.info(f"reference plans: {i}/{n}")

    df = build_reference_plans(
        change_tasks,
        task_contexts,
        is_test=classifier.is_test,
        progress=progress,
        drop_module_only=cfg.plans.drop_module_only,
    )
    context.add_output_metadata(_reference_plans_metadata(df, cfg.plans.max_invalid_rate))
    return df


def _reference_plans_metadata(df: pl.DataFrame, max_invalid_rate: float) -> dict:
    summary = summarize_reference_plans(df)
    usable = df.filter(pl.col("usable"))
    example = usable.sort("n_cross_file_edges", descending=True).head(1)
    secs = percentiles(df["seconds"].to_list(), qs=(50, 99))
    return {
        **table_meta(df),
        **{f"status_{k}": v for k, v in summary.statuses.items()},
        "plans_built": summary.built,
        "plans_invalid": summary.invalid,
        "invalid_rate": round(summary.invalid_rate, 4),
        "max_invalid_rate": max_invalid_rate,
        "usable": summary.usable,
        "valid_rate": round(1 - summary.invalid_rate, 4) if summary.built else 0.0,
        **{f"difficulty_{k}": summary.difficulty[k] for k in DIFFICULTIES},
        "difficulty": md_counts(summary.difficulty, key="difficulty", value="usable plans"),
        "violations_by_kind": md_counts(summary.violations, key="violation"),
        "edges_total": int(usable["n_edges"].sum()) if usable.height else 0,
        "cross_file_edges_total": int(usable["n_cross_file_edges"].sum()) if usable.height else 0,
        "weak_edges_total": int(usable["weak_edges"].sum()) if usable.height else 0,
        "edges_dropped_for_cycles": int(df["dropped_edges"].sum() or 0),
        "module_only_plans": int(df["module_only"].sum() or 0),
        "task_seconds_p50": secs["p50"],
        "task_seconds_max": float(df["seconds"].max() or 0.0),
        "not_used_reasons": md_counts(summary.reasons),
        "example_plan": dg.MetadataValue.json(json.loads(example["plan_json"][0])) if example.height else None,
        "preview": md_table(df, ["task_id", "status", "difficulty", "n_files", "n_changes", "n_edges", "valid"]),
    }
