"""Execution scoring on a real repository: how many test-touching tasks get a fail->pass test, and why not.

    python bench/real_repo_yield.py REPO [--sample N] [--cache DIR] [--fresh] [--json OUT]

N tasks that touch tests, spread evenly over the repository's history (by time), go through the pipeline's
own steps: mining, change tasks, test environments (built or found in the cache), test selection in the bwrap
sandbox. Printed: the share with a ready environment, the share with at least one fail->pass test, environment
build time (cold: built in this run; cached: found), sandbox time per task, and the reason for every miss.
Run it twice: the second run must build nothing (every environment a cache hit).
"""

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distill_assets.config import MiningConfig, RepoSource, SplitConfig  # noqa: E402
from distill_assets.environments.build import EnvironmentCache  # noqa: E402
from distill_assets.environments.selection import env_by_task, environments_for_tasks, selection_for_task  # noqa: E402
from distill_assets.mining.miner import mine_repository, open_repository  # noqa: E402
from distill_assets.sandbox import Limits, get_backend  # noqa: E402
from distill_assets.tasks.build import build_change_tasks, mined_table  # noqa: E402


def spread(rows: list[dict], n: int) -> list[dict]:
    rows = sorted(rows, key=lambda r: (r["created_at"], r["task_id"]))
    if len(rows) <= n:
        return rows
    return [rows[round(i * (len(rows) - 1) / (n - 1))] for i in range(n)] if n > 1 else rows[-1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench" / "_work" / "envs")
    ap.add_argument("--fresh", action="store_true", help="empty the environment and selection caches first")
    ap.add_argument("--backend", default="bwrap")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    name = args.repo.resolve().name.removesuffix(".git")
    if args.fresh:
        shutil.rmtree(args.cache, ignore_errors=True)
    src = RepoSource(name=name, path=args.repo.resolve())
    mined = mined_table(mine_repository(open_repository(src, args.cache), src, MiningConfig()))
    tasks = build_change_tasks([mined], None, MiningConfig(), SplitConfig())
    pool = [t for t in tasks.iter_rows(named=True) if t["has_tests"]]
    sample = spread(pool, args.sample)
    print(
        f"{name}: {tasks.height} tasks, {len(pool)} touch tests; sample of {len(sample)} from "
        f"{sample[0]['created_at']:%Y-%m} to {sample[-1]['created_at']:%Y-%m}",
        flush=True,
    )
    cache = EnvironmentCache(args.cache / "environments")
    t0 = time.perf_counter()
    envs = environments_for_tasks(sample, cache, name, progress=lambda m: print("  " + m, flush=True))
    env_s = time.perf_counter() - t0
    by_task = env_by_task(envs)
    backend = get_backend(args.backend)
    rows = []
    t1 = time.perf_counter()
    for t in sample:
        ts = time.perf_counter()
        row = selection_for_task(
            t,
            by_task.get(t["task_id"]),
            None,
            backend,
            Limits(timeout_s=300, memory_mb=4096),
            args.cache / "selections",
        )
        row["seconds"] = round(time.perf_counter() - ts, 2)
        row["date"] = f"{t['created_at']:%Y-%m-%d}"
        rows.append(row)
        print(
            f"  {t['task_id']} {row['date']} {row['status']:18s} {row['seconds']:6.1f}s  "
            f"{(row.get('detail') or '')[:110]}",
            flush=True,
        )
    sel_s = time.perf_counter() - t1
    ready = sum(1 for t in sample if by_task.get(t["task_id"]) and by_task[t["task_id"]].status == "ready")
    f2p = sum(1 for r in rows if r["fail_to_pass"])
    built = envs.filter(~envs["cache_hit"]) if envs.height else envs
    reasons = Counter(r["status"] for r in rows if not r["fail_to_pass"])
    summary = {
        "repo": name,
        "sample": len(sample),
        "command": " ".join(sys.argv),
        "ready_env_share": round(ready / len(sample), 3),
        "fail_to_pass_share": round(f2p / len(sample), 3),
        "environments": envs.height,
        "environments_built": built.height,
        "environments_cache_hits": envs.height - built.height,
        "env_build_seconds_total": round(float(built["seconds"].sum()) if built.height else 0.0, 1),
        "env_phase_seconds": round(env_s, 1),
        "selection_phase_seconds": round(sel_s, 1),
        "sandbox_seconds_per_task": round(sel_s / len(sample), 2),
        "total_seconds": round(env_s + sel_s, 1),
        "env_status": dict(Counter(envs["status"].to_list())) if envs.height else {},
        "miss_reasons": dict(reasons),
        "misses": [
            {"task": r["task_id"], "date": r["date"], "status": r["status"], "detail": (r.get("detail") or "")[:300]}
            for r in rows
            if not r["fail_to_pass"]
        ],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "misses"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
