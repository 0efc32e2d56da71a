"""Test environments and test selection on the shipped real repositories (slow: small samples; the full numbers
come from bench/real_repo_yield.py and are in bench/results/real_repo_yield.md)."""

import pytest

from distill_assets.config import MiningConfig, RepoSource, SplitConfig
from distill_assets.environments.build import EnvironmentCache
from distill_assets.environments.selection import env_by_task, environments_for_tasks, selection_for_task
from distill_assets.mining.miner import mine_repository, open_repository
from distill_assets.sandbox import Limits, get_backend
from distill_assets.tasks.build import build_change_tasks, mined_table


def _tasks(path, name, tmp_path):
    src = RepoSource(name=name, path=path)
    mined = mined_table(mine_repository(open_repository(src, tmp_path), src, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    return sorted((t for t in tasks.iter_rows(named=True) if t["has_tests"]), key=lambda t: t["created_at"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,runner,picks",
    [
        # uv.lock era: pins honoured
        ("click", "pytest", ("aaf99a3ee693", "6f85d26dcd50", "a1d87858abd7")),
        # jest era: npm ci from the lock file of the time
        ("commander", "jest", ("8df692e204f6", "7bcf1175a35d", "0a50bd6c7696")),
    ],
)
def test_real_repositories_get_environments_and_fail_to_pass_tests(name, runner, picks, real_repo, tmp_path, env_root):
    pool = _tasks(real_repo(name), name, tmp_path)
    sample = [t for t in pool if t["task_id"].rsplit(":", 1)[-1] in picks]
    assert len(sample) == len(picks)
    cache = EnvironmentCache(env_root / "envs")
    envs = environments_for_tasks(sample, cache, name)
    assert set(envs["status"]) == {"ready"}, envs.select("status", "detail", "log_tail").rows()
    by_task = env_by_task(envs)
    rows = [
        selection_for_task(
            t,
            by_task[t["task_id"]],
            None,
            get_backend("bwrap"),
            Limits(timeout_s=300, memory_mb=4096),
            tmp_path / "sel",
        )
        for t in sample
    ]
    assert {r["runner"] for r in rows} == {runner}
    with_f2p = [r for r in rows if r["fail_to_pass"]]
    assert len(with_f2p) >= 2, [(r["status"], r["detail"]) for r in rows]
    for r in with_f2p:  # file-qualified ids of the task's own test files
        assert all("::" in t for t in r["fail_to_pass"] + r["pass_to_pass"])
    again = environments_for_tasks(sample, cache, name)
    assert again["cache_hit"].all()
