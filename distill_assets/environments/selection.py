"""From tasks to environments to test selections: what the ``test_environments`` and ``test_selections`` assets call.

``environments_for_tasks`` groups a repository's test-touching tasks by environment key and builds (or finds) one
environment per group. ``selection_for_task`` turns a task and its environment into a test plan, runs the
SWE-bench selection (fail->pass, pass->pass) and says, for every task without a usable selection, why.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from distill_assets.environments.build import EnvironmentCache, EnvRecord
from distill_assets.sandbox.plans import TestPlan, plan_for_commands, plan_for_runner, runnable_test_files
from distill_assets.sandbox.runner import select_tests

ENV_SCHEMA = {
    "repo": pl.Utf8,
    "env_key": pl.Utf8,
    "language": pl.Utf8,
    "runner": pl.Utf8,
    "runner_why": pl.Utf8,
    "status": pl.Utf8,
    "detail": pl.Utf8,
    "python_version": pl.Utf8,
    "interpreter": pl.Utf8,
    "manifests": pl.List(pl.Utf8),
    "sources": pl.List(pl.Utf8),
    "fallbacks": pl.List(pl.Utf8),
    "seconds": pl.Float64,
    "size_mb": pl.Float64,
    "cache_hit": pl.Boolean,
    "log_tail": pl.Utf8,
    "path": pl.Utf8,
    "record_json": pl.Utf8,
    "n_tasks": pl.Int64,
    "task_ids": pl.List(pl.Utf8),
}

SELECTION_STATUSES = (
    "selected",
    "no_tests",
    "no_checkout",
    "not_configured",
    "no_environment",
    "unsupported",
    "env_failed",
    "no_runnable_tests",
    "runner_crashed",
    "nothing_collected",
    "no_selected_tests",
)
# tasks nobody asked to run: not counted against a repository by the blocking check (shown in the metadata)
NOT_JUDGED = ("no_tests", "no_checkout", "not_configured")


def _test_files(task: Mapping[str, Any]) -> list[str]:
    deleted = {c["path"] for c in task.get("file_changes") or [] if c.get("status") == "D"}
    return [f for f in task.get("test_files") or [] if f not in deleted]


def environments_for_tasks(
    tasks: Iterable[Mapping[str, Any]],
    cache: EnvironmentCache,
    repo: str,
    progress: Callable[[str], None] = lambda m: None,
) -> pl.DataFrame:
    """One row per environment the repository's test-touching tasks need (built now, or found in the cache)."""
    records: dict[str, EnvRecord] = {}
    members: dict[str, list[str]] = defaultdict(list)
    for t in tasks:
        if not t.get("has_tests") or not t.get("repo_path") or not t.get("base_commit"):
            continue
        created = t.get("created_at")
        rec = cache.get(
            t["repo_path"],
            t["base_commit"],
            _test_files(t),
            commit_date=created.isoformat() if created is not None else None,
        )
        key = rec.key or f"unsupported:{rec.detail}"
        if key not in records:  # the first task of a group built it (or found it): its record says which
            progress(
                f"environment {key}: {rec.status}{' (cache hit)' if rec.cache_hit else ''}"
                f"{' ' + rec.detail if rec.detail else ''}"
            )
            records[key] = rec
        members[key].append(t["task_id"])
    rows = []
    for key, rec in records.items():
        rows.append(
            {
                "repo": repo,
                "env_key": rec.key or None,
                "language": rec.language,
                "runner": rec.runner,
                "runner_why": rec.runner_why,
                "status": rec.status,
                "detail": rec.detail,
                "python_version": rec.python_version or None,
                "interpreter": rec.interpreter or None,
                "manifests": rec.manifests,
                "sources": rec.sources,
                "fallbacks": rec.fallbacks,
                "seconds": rec.seconds,
                "size_mb": rec.size_mb,
                "cache_hit": rec.cache_hit,
                "log_tail": rec.log_tail[-2000:],
                "path": rec.path,
                "record_json": json.dumps(asdict(rec)),
                "n_tasks": len(members[key]),
                "task_ids": members[key],
            }
        )
    return pl.DataFrame(rows, schema=ENV_SCHEMA) if rows else pl.DataFrame(schema=ENV_SCHEMA)


def env_by_task(envs: pl.DataFrame) -> dict[str, EnvRecord]:
    out = {}
    for r in envs.iter_rows(named=True):
        rec = EnvRecord(**json.loads(r["record_json"]))
        for tid in r["task_ids"] or []:
            out[tid] = rec
    return out


def plan_for_task(
    task: Mapping[str, Any], env: EnvRecord | None, commands: list[str] | None, full_suite: bool = False
) -> tuple[TestPlan | None, str, str]:
    """(plan, status when there is none, detail)."""
    if not task.get("has_tests"):
        return None, "no_tests", "the change touches no test file"
    if not (task.get("repo_path") and task.get("base_commit")):
        return None, "no_checkout", "no local copy of the repository"
    env_vars, mounts = env.sandbox() if env is not None else ({}, [])
    if commands:
        return plan_for_commands(commands, env_vars, mounts), "", "sandbox.test_commands"
    if env is None and task.get("source", "git") != "git":
        return (
            None,
            "not_configured",
            (
                f"a {task.get('source')} task: test environments are built for sources.repos; "
                f"sandbox.test_commands[{task.get('repo')!r}] would run its tests"
            ),
        )
    if env is None:
        return None, "no_environment", "test_environments has no environment for this task (materialize it)"
    if env.status == "unsupported":
        return None, "unsupported", env.detail
    if env.status != "ready":
        return None, "env_failed", f"environment {env.key}: {env.detail}"
    files = runnable_test_files(env.runner or "", _test_files(task))
    if not files and not full_suite:
        return None, "no_runnable_tests", f"no test file of the change can be run by {env.runner}"
    return plan_for_runner(env.runner or "", files, env_vars, mounts, full_suite=full_suite), "", env.runner or ""


def selection_for_task(
    task: Mapping[str, Any],
    env: EnvRecord | None,
    commands: list[str] | None,
    backend,
    limits,
    cache_dir,
    full_suite: bool = False,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": task["task_id"],
        "fail_to_pass": [],
        "pass_to_pass": [],
        "backend": backend.name,
        "env_key": env.key if env else None,
        "runner": env.runner if env else None,
    }
    plan, status, detail = plan_for_task(task, env, commands, full_suite)
    if plan is None:
        row.update(status=status, detail=detail)
        return row
    sel = select_tests(
        task["repo_path"],
        task["base_commit"],
        task["gold_patch"],
        task["test_files"],
        plan,
        backend,
        limits,
        cache_dir=cache_dir,
    )
    row.update(
        fail_to_pass=sel.fail_to_pass,
        pass_to_pass=sel.pass_to_pass,
        before_status=sel.before.status,
        after_status=sel.after.status,
        plan_json=json.dumps(asdict(plan)),
        runner=plan.runner,
        gold_pass_rate=(sum(1 for x in sel.selected if sel.after.tests.get(x) == "passed") / len(sel.selected))
        if sel.selected
        else None,
    )
    if sel.selected:
        row.update(status="selected", detail=f"{len(sel.fail_to_pass)} fail->pass, {len(sel.pass_to_pass)} pass->pass")
    elif sel.after.status in ("crashed", "timeout"):
        row.update(status="runner_crashed", detail=f"{sel.after.status}: {sel.after.log[-600:]}")
    elif sel.after.status == "no_tests" or not sel.after.tests:
        row.update(status="nothing_collected", detail=f"the runner found no test: {sel.after.log[-400:]}")
    else:
        errors = [k for k, v in sel.after.tests.items() if v == "error"]
        row.update(
            status="no_selected_tests",
            detail=(
                f"{len(errors)} tests error after the gold change, e.g. {errors[:2]}"
                if errors
                else "no test passes after the gold change"
            ),
        )
    return row


def repo_test_plan(
    repo_path: str, commit: str, cache: EnvironmentCache, is_test: Callable[[str], bool], commit_date: str | None = None
) -> tuple[TestPlan | None, str]:
    """The whole test suite of a repository at ``commit`` in its environment (``distill run-task``): the plan, or
    why there is none."""
    from distill_assets.tasks.snapshot import GitSnapshot

    tests = [p for p in GitSnapshot(repo_path, commit).tree() if is_test(p)]
    if not tests:
        return None, "the repository has no test files"
    env = cache.get(repo_path, commit, tests, commit_date)
    if env.status != "ready":
        return None, f"no test environment ({env.status}): {env.detail}"
    env_vars, mounts = env.sandbox()
    return plan_for_runner(env.runner or "", [], env_vars, mounts, full_suite=True), env.runner or ""
