import subprocess
from datetime import datetime, timedelta, timezone

import polars as pl

from distill_assets.config import MiningConfig, RepoSource, SplitConfig, load_config
from distill_assets.mining.miner import mine_repository, open_repository
from distill_assets.tasks.build import assign_splits, build_change_tasks, mined_table, split_leaks
from distill_assets.tasks.external import read_external_sources


def shop_tasks(shop_repo, tmp_path):
    source = RepoSource(name="shop", path=shop_repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    return mined, build_change_tasks([mined], None, MiningConfig(), SplitConfig(val_fraction=0.2, test_fraction=0.2))


def test_change_tasks_from_mined_commits(shop_repo, tmp_path):
    mined, tasks = shop_tasks(shop_repo, tmp_path)
    assert tasks.height == mined.filter(pl.col("kept")).height == 4
    t = tasks.filter(pl.col("description").str.starts_with("Add discount")).row(0, named=True)
    assert t["task_id"].startswith("git:shop:")
    assert t["plan_files"] == ["shop/cart.py", "shop/pricing.py", "tests/test_cart.py"]
    assert t["test_files"] == ["tests/test_cart.py"] and t["has_tests"]
    assert "Cart totals can now apply a discount." in t["description"]
    clear = tasks.filter(pl.col("description") == "Add Cart.clear and use it in checkout").row(0, named=True)
    assert not clear["has_tests"]


def test_gold_patches_apply_at_the_base_commit(shop_repo, tmp_path):
    _, tasks = shop_tasks(shop_repo, tmp_path)
    for t in tasks.iter_rows(named=True):
        wt = tmp_path / f"wt-{t['after_commit'][:8]}"
        shop_repo.git("worktree", "add", "-q", "--detach", str(wt), t["base_commit"])
        proc = subprocess.run(
            ["git", "-C", str(wt), "apply", "--check", "-"], input=t["gold_patch"].encode(), capture_output=True
        )
        assert proc.returncode == 0, (t["task_id"], proc.stderr)
        subprocess.run(["git", "-C", str(wt), "apply", "-"], input=t["gold_patch"].encode(), check=True)
        subprocess.run(["git", "-C", str(wt), "add", "-A"], check=True)
        got = subprocess.run(["git", "-C", str(wt), "write-tree"], capture_output=True, text=True).stdout.strip()
        want = shop_repo.git("rev-parse", f"{t['after_commit']}^{{tree}}").strip()
        assert got == want, t["task_id"]


def test_split_never_leaks_a_repos_future_into_its_past():
    t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rows = []
    for repo in ("a", "b"):
        for i in range(20):
            rows.append(
                {"task_id": f"{repo}{i}", "source": "git", "repo": repo, "created_at": t0 + timedelta(days=i // 2)}
            )  # pairs share a timestamp
    assign_splits(rows, SplitConfig(val_fraction=0.15, test_fraction=0.15))
    df = pl.DataFrame(rows)
    assert split_leaks(df) == []
    for repo in ("a", "b"):
        g = df.filter(pl.col("repo") == repo)
        assert set(g["split"]) == {"train", "val", "test"}
        assert (
            g.filter(pl.col("split") == "train")["created_at"].max()
            < g.filter(pl.col("split") == "test")["created_at"].min()
        )
    # a leak is detected
    leaky = df.with_columns(
        pl.when(pl.col("task_id") == "a19").then(pl.lit("train")).otherwise(pl.col("split")).alias("split")
    )
    assert any("git:a" in p for p in split_leaks(leaky))


def test_untimed_sources_put_a_whole_repo_in_one_split():
    rows = [
        {"task_id": f"c{i}", "source": "commitpackft", "repo": f"org/r{i % 7}", "created_at": None} for i in range(70)
    ]
    assign_splits(rows, SplitConfig())
    by_repo = {}
    for r in rows:
        by_repo.setdefault(r["repo"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_repo.values())


def test_external_tasks_join_the_table():
    cfg = load_config()
    ext, _ = read_external_sources(cfg.sources.external)
    tasks = build_change_tasks([], ext, cfg.mining, cfg.split)
    assert tasks.height == 5
    swe = tasks.filter(pl.col("source") == "swebench").row(0, named=True)
    assert swe["has_tests"] and swe["test_files"] == ["tests/test_ops.py"]
    statuses = {
        c["path"]: c["status"]
        for c in tasks.filter(pl.col("task_id") == "swebench:example-org__calclib-117").row(0, named=True)[
            "file_changes"
        ]
    }
    assert statuses["tests/test_stats.py"] == "A"


def test_a_repository_without_tests_still_gives_tasks(git_repo, tmp_path):
    git_repo.commit(
        "init", {"a.py": "def f():\n    return 1\n", "b.py": "from a import f\n\n\ndef g():\n    return f()\n"}
    )
    git_repo.commit(
        "Return 2 everywhere",
        {"a.py": "def f():\n    return 2\n", "b.py": "from a import f\n\n\ndef g():\n    return f() * 1\n"},
    )
    source = RepoSource(name="plain", path=git_repo.path)
    mined = mined_table(mine_repository(open_repository(source, tmp_path), source, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    assert tasks.height == 1
    row = tasks.row(0, named=True)
    assert not row["has_tests"] and row["test_files"] == [] and row["split"] == "train"
