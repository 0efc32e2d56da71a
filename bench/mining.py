"""Mining speed against `git log --numstat` on the same repository, in the same run.

    python bench/mining.py [REPO] [--repeat 3] [--branch REF] [--profile]

REPO is a clone with a work tree or a bare clone (`git clone --bare X.bundle /tmp/x.git`). Without REPO a
synthetic repository with 5,000 commits is built under bench/_work. Prints both times (best of N) and the
ratio; the goal is <= 1.5x. `--profile` adds where the mining time goes (cProfile, one more run): the time
spent waiting for git against the time in Python, and the top functions.

A repository that cannot be mined (not git, no commits, unknown branch, refused by git) is one line and exit 2.
"""

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import git  # noqa: E402

from distill_assets.config import MiningConfig, RepoSource  # noqa: E402
from distill_assets.mining.miner import MiningError, mine_repository, open_repository, resolve_ref  # noqa: E402
from distill_assets.mining.source_check import check_repo_source, git_last_line  # noqa: E402


def best_of(fn, n):
    times = []
    out = None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def profile_lines(fn, top: int = 12) -> list[str]:
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(fn)
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    # time waiting on the git process: gitpython reads its output in communicate()
    in_git = max(
        (
            ct
            for (file, _, name), (_, _, _, ct, _) in stats.stats.items()
            if name in ("communicate", "_communicate") and "subprocess" in file
        ),
        default=0.0,
    )
    lines = [
        f"profile (cProfile adds overhead to the Python part): total {total:.3f} s; waiting for git "
        f"{in_git:.3f} s ({in_git / total:.0%}); Python {total - in_git:.3f} s ({1 - in_git / total:.0%})"
    ]
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    body = buf.getvalue()
    start = body.find("   ncalls")
    lines += [ln for ln in body[start:].splitlines() if ln.strip()]
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", nargs="?", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--branch", default=None, help="branch or ref to mine (default HEAD)")
    ap.add_argument("--commits", type=int, default=5000, help="size of the synthetic repo")
    ap.add_argument("--profile", action="store_true", help="also profile one mining run (cProfile)")
    args = ap.parse_args()
    repo_path = args.repo
    if repo_path is None:
        from make_history import build  # noqa: PLC0415

        repo_path = Path(__file__).resolve().parent / "_work" / f"history-{args.commits}"
        if not (repo_path / ".git").exists():
            print(f"building a synthetic repository with {args.commits} commits at {repo_path} ...", flush=True)
            build(repo_path, args.commits)
    repo_path = repo_path.resolve()
    source = RepoSource(name=repo_path.name.removesuffix(".git") or "bench", path=repo_path, branch=args.branch)
    cache = Path(__file__).resolve().parent / "_work" / "cache"  # unused for a local path; never inside REPO

    problem = check_repo_source(source, cache)  # the same one-line reasons as `distill check-config`
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        repo = open_repository(source, cache)
        ref = resolve_ref(repo, source)
        n_commits = int(repo.git.rev_list("--count", ref))
        git_dir, bare = Path(repo.git_dir), repo.bare
        repo.close()
    except MiningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except git.GitCommandError as exc:
        print(f"error: repository {source.name!r}: {git_last_line(str(exc))}", file=sys.stderr)
        return 2

    def baseline():  # --git-dir: the same command for a bare clone and a work tree
        return subprocess.run(
            ["git", f"--git-dir={git_dir}", "log", "--numstat", ref], capture_output=True, check=True
        ).stdout

    def ours():
        r = open_repository(source, cache)
        try:
            return mine_repository(r, source, MiningConfig(), ref=ref)
        finally:
            r.close()

    try:
        t_base, _ = best_of(baseline, args.repeat)
        t_ours, res = best_of(ours, args.repeat)
    except subprocess.CalledProcessError as exc:
        print(f"error: git log failed: {git_last_line(exc.stderr.decode(errors='replace'))}", file=sys.stderr)
        return 2
    except MiningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kept = len(res.kept)
    ratio = t_ours / t_base
    print(
        f"repository: {repo_path} ({'bare clone' if bare else 'work tree'}; {n_commits} commits at "
        f"{args.branch or 'HEAD'} {ref[:10]}; best of {args.repeat})"
    )
    print(f"git log --numstat : {t_base:8.3f} s")
    print(
        f"distill mining    : {t_ours:8.3f} s  ({kept} kept, {n_commits - kept} dropped: "
        + ", ".join(f"{k}={v}" for k, v in res.drop_counts().items() if v)
        + ")"
    )
    print(f"ratio             : {ratio:8.2f}x  (goal <= 1.5x) {'OK' if ratio <= 1.5 else 'OVER GOAL'}")
    if args.profile:
        print("\n".join(profile_lines(ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
