"""Reference plans against the hand-checked gold set: precision and recall of files, symbols and edges.

    python bench/reference_gold.py [--repos DIR] [--baseline-rev REV] [--misses]

Clones click.bundle and commander.bundle (from --repos, default ../shared/repos) into bench/_work, builds
the reference plans of the gold commits with the pipeline's own steps, and scores them against
distill_assets_tests/plans/gold/*.yaml. With --baseline-rev the builder of that commit is scored in the
same run.
"""

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_assets.plans.gold import GoldScore, load_gold, reference_plans_for_commits, score_plans  # noqa: E402

GOLD = ROOT / "distill_assets_tests" / "plans" / "gold"


def fmt(s: GoldScore) -> str:
    parts = []
    for name in ("files", "symbols", "edges"):
        c = getattr(s, name)
        parts.append(f"{name} P {c.precision:.3f} R {c.recall:.3f} (tp {c.tp}, fp {c.fp}, fn {c.fn})")
    return "; ".join(parts) + f"; actions {s.actions_right}/{s.actions_total}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", type=Path, default=ROOT.parent / "shared" / "repos")
    ap.add_argument("--baseline-rev", default=None)
    ap.add_argument("--misses", action="store_true", help="print every wrong or missing item")
    args = ap.parse_args()
    work = ROOT / "bench" / "_work" / "gold"
    work.mkdir(parents=True, exist_ok=True)
    import distill_assets.plans.reference as reference

    builders = {"current": reference.build_reference_plans}
    if args.baseline_rev:
        from baseline_builder import load_reference_builder

        builders[args.baseline_rev] = load_reference_builder(args.baseline_rev, work)
    total = {k: GoldScore() for k in builders}
    for name in ("click", "commander"):
        dest = work / name
        if not (dest / ".git").exists():
            subprocess.run(["git", "clone", "-q", str(args.repos / f"{name}.bundle"), str(dest)], check=True)
        gold = load_gold(GOLD / f"{name}.yaml")
        shas = [c["sha"] for c in gold["commits"]]
        for label, builder in builders.items():
            reference.build_reference_plans = builder
            try:
                s = score_plans(reference_plans_for_commits(dest, shas, name), gold["commits"])
            finally:
                reference.build_reference_plans = builders["current"]
            total[label].merge(s)
            print(f"{name:10s} {label:10s} {len(shas)} commits: {fmt(s)}")
            if args.misses and label == "current":
                for m in s.misses:
                    print("    " + m)
    for label, s in total.items():
        print(f"{'both':10s} {label:10s} {fmt(s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
