#!/usr/bin/env python3
"""Stage-4 structural validity of stored student answers, as written and after ``plans/repair.py``.

Reads a `distill learn` run's Dagster home (``--home``, e.g. /tmp/lh/learn/click): the evaluated answers in
``cache/evaluations/*.parquet`` and the task contexts (base tree and symbol index) in
``storage/tables/task_contexts.parquet``. Re-parses every stage-4 answer, validates it, repairs its
bookkeeping, validates again, and prints per evaluated system (base, each adapter) both validity rates with
bootstrap intervals and the repairs per plan. No model is run.

Stored answers are cut at 4,000 characters, so a long plan that parsed when it was evaluated may not parse
here: its row counts as invalid both ways (the rates are lower bounds).

    python bench/rescore_plans.py --home /tmp/lh/learn/click
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import polars as pl

    from distill_assets.evaluation.metrics import bootstrap_ci
    from distill_assets.plans.repair import repair_plan
    from distill_assets.plans.validator import PlanContext, validate_plan
    from distill_assets.prompts.student import parse_student_output

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", type=Path, required=True, help="the learn run's Dagster home")
    home = ap.parse_args().home
    contexts = pl.read_parquet(home / "storage" / "tables" / "task_contexts.parquet")
    ctx = {r["task_id"]: PlanContext.from_rows(r["file_tree"], r["symbols"]) for r in contexts.iter_rows(named=True)}
    fmt = lambda c: f"{c['mean']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"  # noqa: E731
    print("| system | answers | parsed here | valid as written | valid after repair | repairs per parsed plan |")
    print("|---|---|---|---|---|---|")
    for f in sorted((home / "cache" / "evaluations").glob("*.parquet")):
        df = pl.read_parquet(f).filter(pl.col("stage") == "plan_generation")
        if not df.height:
            continue
        raw, repaired, fixes, parsed = [], [], Counter(), 0
        for r in df.iter_rows(named=True):
            out, _ = parse_student_output("plan_generation", r["output"] or "")
            if out is None:
                raw.append(0.0)
                repaired.append(0.0)
                continue
            parsed += 1
            res = repair_plan(out.plan)
            fixes.update(res.repairs)
            raw.append(float(validate_plan(out.plan, ctx[r["task_id"]]).valid))
            repaired.append(float(validate_plan(res.plan, ctx[r["task_id"]]).valid))
        per = ", ".join(f"{k} {v / max(parsed, 1):.2f}" for k, v in fixes.most_common())
        system, ident = df["system"][0], df["system_id"][0].split(":", 1)[1]
        name = f"{system} {Path(ident).name if system == 'base' else ident[:12]}"
        print(
            f"| {name} | {df.height} | {parsed} | {fmt(bootstrap_ci(raw, 2000))} "
            f"| {fmt(bootstrap_ci(repaired, 2000))} | {per} |"
        )


if __name__ == "__main__":
    main()
