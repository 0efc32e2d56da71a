"""Mining speed against `git log --numstat` on the same repository, in the same run.

    python bench/mining.py [REPO] [--repeat 3]

Without REPO a synthetic repository with 5,000 commits is built under bench/_work.
Prints both times (best of N) and the ratio; the goal is <= 1.5x.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill_assets.config import MiningConfig, RepoSource  # noqa: E402
from distill_assets.mining.miner import mine_repository, open_repository  # noqa: E402


def best_of(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", nargs="?", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--commits", type=int, default=5000, help="size of the synthetic repo")
    args = ap.parse_args()
    repo_path = args.repo
    if repo_path is None:
        from make_history import build  # noqa: PLC0415

        repo_path = Path(__file__).resolve().parent / "_work" / f"history-{args.commits}"
        if not (repo_path / ".git").exists():
            print(f"building a synthetic repository with {args.commits} commits at {repo_path} ...", flush=True)
            build(repo_path, args.commits)
    repo_path = repo_path.resolve()
    n_commits = int(subprocess.run(["git", "-C", str(repo_path), "rev-list", "--count", "HEAD"],
                                   capture_output=True, text=True, check=True).stdout)

    def baseline():
        return subprocess.run(["git", "-C", str(repo_path), "log", "--numstat", "HEAD"],
                              capture_output=True, check=True).stdout

    source = RepoSource(name="bench", path=repo_path)

    def ours():
        repo = open_repository(source, repo_path / ".git" / "distill-cache")
        return mine_repository(repo, source, MiningConfig())

    t_base, _ = best_of(baseline, args.repeat)
    t_ours, res = best_of(ours, args.repeat)
    kept = len(res.kept)
    ratio = t_ours / t_base
    print(f"repository: {repo_path} ({n_commits} commits)")
    print(f"git log --numstat : {t_base:8.3f} s")
    print(f"distill mining    : {t_ours:8.3f} s  ({kept} kept, {n_commits - kept} dropped: "
          + ", ".join(f"{k}={v}" for k, v in res.drop_counts().items() if v) + ")")
    print(f"ratio             : {ratio:8.2f}x  (goal <= 1.5x) {'OK' if ratio <= 1.5 else 'OVER GOAL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
