"""The sources assets on a real repository: wall time and peak memory of each step, each in its own process.

    python bench/sources_real.py REPO [--name NAME] [--baseline-rev REV] [--json OUT]

Each step reads its inputs from Parquet and writes its output to Parquet, as the assets do through the IO
manager, and runs in a fresh process so its peak RSS is its own: mined_commits, change_tasks, task_contexts,
reference_plans. Goals (issue 14): reference_plans on click under 120 s with no task over 5 s;
task_contexts and reference_plans under 1.5 GB peak. With ``--baseline-rev`` the reference plans of that
commit's builder run on the same tasks in the same run, for a ratio.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GOAL_PLANS_S, GOAL_TASK_S, GOAL_RSS_MB = 120.0, 5.0, 1536.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(name: str, work: Path, repo: str, repo_name: str, baseline: str | None) -> dict:
    import polars as pl

    from distill_assets.config import ContextConfig, MiningConfig, RepoSource, SplitConfig
    from distill_assets.mining.miner import FileClassifier

    t0 = time.perf_counter()
    out: dict = {"step": name}
    if name == "mined_commits":
        from distill_assets.mining.miner import mine_repository, open_repository
        from distill_assets.tasks.build import mined_table

        src = RepoSource(name=repo_name, path=Path(repo))
        res = mine_repository(open_repository(src, work), src, MiningConfig())
        df = mined_table(res)
        out.update(rows=df.height, kept=len(res.kept), drops={k: v for k, v in res.drop_counts().items() if v})
    elif name == "change_tasks":
        from distill_assets.tasks.build import build_change_tasks

        errors: list[str] = []
        df = build_change_tasks(
            [pl.read_parquet(work / "mined_commits.parquet")], None, MiningConfig(), SplitConfig(), errors=errors
        )
        out.update(rows=df.height, repo_errors=errors, undecodable_files=int(df["undecodable_files"].list.len().sum()))
    elif name == "task_contexts":
        from distill_assets.contexts.build import build_contexts

        df, cache = build_contexts(pl.read_parquet(work / "change_tasks.parquet"), ContextConfig())
        out.update(rows=df.height, status=dict(df.group_by("status").len().rows()))
    elif name in ("reference_plans", "reference_plans_baseline"):
        if name == "reference_plans":
            from distill_assets.plans.reference import build_reference_plans
        else:  # the builder of an earlier commit, loaded from git, on the same tables
            from baseline_builder import load_reference_builder

            build_reference_plans = load_reference_builder(baseline, work)
        tasks = pl.read_parquet(work / "change_tasks.parquet")
        contexts = pl.read_parquet(work / "task_contexts.parquet")
        df = build_reference_plans(tasks, contexts, is_test=FileClassifier(MiningConfig()).is_test)
        out.update(rows=df.height, status=dict(df.group_by("status").len().rows()))
        if name == "reference_plans":
            ok = df.filter(pl.col("usable"))
            out.update(
                usable=ok.height,
                invalid=int((~df.filter(pl.col("plan_json").is_not_null())["valid"]).sum()),
                difficulty=dict(ok.group_by("difficulty").len().sort("difficulty").rows()),
                task_seconds_max=float(df["seconds"].max() or 0.0),
                slowest_task=df.sort("seconds", descending=True)["task_id"][0] if df.height else None,
                edges=int(ok["n_edges"].sum()),
                weak_edges=int(ok["weak_edges"].sum()),
                module_only=int(df["module_only"].sum() or 0),
            )
    else:
        raise SystemExit(f"unknown step {name}")
    df.write_parquet(work / f"{name}.parquet")
    out.update(seconds=round(time.perf_counter() - t0, 2), peak_rss_mb=round(_rss_mb(), 1))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--name", default=None)
    ap.add_argument("--work", type=Path, default=None, help="folder for the step tables (default bench/_work/NAME)")
    ap.add_argument("--baseline-rev", default=None, help="also run this commit's reference-plan builder")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    name = args.name or args.repo.resolve().name.removesuffix(".git")
    work = (args.work or ROOT / "bench" / "_work" / f"sources-{name}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.step:
        print(json.dumps(step(args.step, work, str(args.repo.resolve()), name, args.baseline_rev)))
        return 0
    steps = ["mined_commits", "change_tasks", "task_contexts", "reference_plans"]
    if args.baseline_rev:
        steps.append("reference_plans_baseline")
    results = []
    for s in steps:
        cmd = [sys.executable, __file__, str(args.repo), "--name", name, "--work", str(work), "--step", s]
        if args.baseline_rev:
            cmd += ["--baseline-rev", args.baseline_rev]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"step {s} failed")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{s:26s} {r['seconds']:8.2f} s  peak {r['peak_rss_mb']:7.1f} MB  rows {r['rows']}", flush=True)
    by = {r["step"]: r for r in results}
    plans = by["reference_plans"]
    print(
        f"reference plans: {plans['usable']} usable, {plans['invalid']} invalid, difficulty {plans['difficulty']}, "
        f"slowest task {plans['task_seconds_max']:.2f} s ({plans['slowest_task']})"
    )
    goals = {
        "reference_plans_seconds": (plans["seconds"], GOAL_PLANS_S),
        "slowest_task_seconds": (plans["task_seconds_max"], GOAL_TASK_S),
        "task_contexts_peak_mb": (by["task_contexts"]["peak_rss_mb"], GOAL_RSS_MB),
        "reference_plans_peak_mb": (plans["peak_rss_mb"], GOAL_RSS_MB),
    }
    for k, (v, goal) in goals.items():
        print(f"{k:26s} {v:8.2f}  goal <= {goal:g}  {'OK' if v <= goal else 'OVER GOAL'}")
    if args.baseline_rev:
        base = by["reference_plans_baseline"]
        print(
            f"reference plans vs {args.baseline_rev}: {plans['seconds']:.1f} s vs {base['seconds']:.1f} s "
            f"({base['seconds'] / plans['seconds']:.2f}x faster), peak {plans['peak_rss_mb']:.0f} MB vs "
            f"{base['peak_rss_mb']:.0f} MB"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "repo": name,
                    "command": " ".join(sys.argv),
                    "steps": results,
                    "goals": {k: {"value": v, "goal": g, "ok": v <= g} for k, (v, g) in goals.items()},
                },
                indent=2,
            )
        )
    return 0 if all(v <= g for v, g in goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
