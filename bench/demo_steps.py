#!/usr/bin/env python3
"""Where the time of a materialization went: step wall time per asset (summed over its partitions and runs),
read from a DAGSTER_HOME's event log through the Dagster instance API (any storage the instance is
configured with).

  DAGSTER_HOME=/path/to/home .venv/bin/python bench/demo_steps.py [--top 12]

Used to split `make demo` (or the demo test, run with `--basetemp` so pytest keeps its DAGSTER_HOME) into its
assets; results in bench/results/demo_time.md.
"""

from __future__ import annotations

import argparse
import collections


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=12, help="assets listed (the rest summed in one line)")
    ns = ap.parse_args()

    import dagster as dg

    instance = dg.DagsterInstance.get()
    per_asset: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    per_partition: collections.Counter[str] = collections.Counter()
    first, last = None, None
    for rec in instance.get_run_records():
        start: dict[str, float] = {}
        partition = rec.dagster_run.tags.get("dagster/partition")
        for e in instance.all_logs(rec.dagster_run.run_id):
            if not e.is_dagster_event:
                continue
            kind, key = e.dagster_event.event_type_value, e.step_key
            first = e.timestamp if first is None else min(first, e.timestamp)
            last = e.timestamp if last is None else max(last, e.timestamp)
            if kind == "STEP_START":
                start[key] = e.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and key in start:
                took = e.timestamp - start.pop(key)
                per_asset[key] += took
                per_partition[f"{key}[{partition}]" if partition else key] += took
                steps[key] += 1
    if not per_asset:
        raise SystemExit("no finished steps in this DAGSTER_HOME's event log")
    total = sum(per_asset.values())
    print(f"{'asset (step key)':40s} {'steps':>5s} {'seconds':>9s} {'share':>6s}")
    for key, s in per_asset.most_common(ns.top):
        print(f"{key:40s} {steps[key]:5d} {s:9.1f} {s / total:6.1%}")
    rest = per_asset.most_common()[ns.top :]
    if rest:
        print(
            f"{'(the other ' + str(len(rest)) + ')':40s} {sum(steps[k] for k, _ in rest):5d} {sum(s for _, s in rest):9.1f}"
        )
    print(f"{'sum of step times':40s} {sum(steps.values()):5d} {total:9.1f}")
    print(f"first to last event: {last - first:.1f} s")
    print("\nslowest steps by partition:")
    for key, s in per_partition.most_common(ns.top):
        print(f"{key:56s} {s:9.1f}")


if __name__ == "__main__":
    main()
