#!/usr/bin/env python3
"""Compare the Parquet tables of two asset storages (before / after a change), table by table.

Each side is a Dagster home (its ``storage/tables``) or a tables folder; a table is
``<asset>[/<partition>].parquet``. Per table: rows on each side, columns and dtypes, whether the frames are
equal as stored (polars ``equals`` after sorting by the row key), and when not, per column the number of
rows (matched by key) whose values differ and the rows found on one side only. Values are then compared as
canonical JSON, so nested columns count too. Options:

- ``--normalize OLD=NEW`` replaces text in every value first (each side's own temporary paths);
- ``--json COL`` decodes a column of JSON text, so key order is ignored; the differing JSON paths are
  counted over the rows (e.g. ``.properties.intent.minLength: absent -> 1``);
- ``--ignore COL`` leaves a column out of the value comparison (timings), said in the notes.

A table equal only after these is reported as ``yes*`` with what it took.

    python bench/compare_tables.py BEFORE_HOME AFTER_HOME --normalize /tmp/rt/before-run=RUN \\
        --normalize /tmp/rt/after-run=RUN --json schema_json --ignore seconds --show 3
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import polars as pl

KEYS = ("task_id", "sha", "instance_id", "env_key", "run_id", "id", "name")


def tables(root: Path) -> dict[str, Path]:
    base = root / "storage" / "tables" if (root / "storage" / "tables").is_dir() else root
    return {str(p.relative_to(base).with_suffix("")): p for p in sorted(base.rglob("*.parquet"))}


def row_key(a: pl.DataFrame, b: pl.DataFrame) -> str | None:
    """The first KEYS column present on both sides and unique on each."""
    for k in KEYS:
        if k in a.columns and k in b.columns and a[k].n_unique() == a.height and b[k].n_unique() == b.height:
            return k
    return None


def json_paths(a, b, p: str = "") -> list[str]:
    """Where two decoded JSON values differ: one line per path."""
    short = lambda v: json.dumps(v)[:60]
    if type(a) is not type(b):
        return [f"{p}: {short(a)} -> {short(b)}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in a:
                out.append(f"{p}.{k}: absent -> {short(b[k])}")
            elif k not in b:
                out.append(f"{p}.{k}: {short(a[k])} -> absent")
            else:
                out += json_paths(a[k], b[k], f"{p}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{p}: {len(a)} items -> {len(b)}"]
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in json_paths(x, y, f"{p}[{i}]")]
    return [] if a == b else [f"{p}: {short(a)} -> {short(b)}"]


def canon(df: pl.DataFrame, subs, json_cols) -> list[dict[str, str]]:
    """Each row as {column: canonical JSON text of its value}, substitutions applied."""
    out = []
    for row in df.to_dicts():
        r = {}
        for c, v in row.items():
            if c in json_cols and isinstance(v, str):
                v = json.loads(v)
            s = json.dumps(v, sort_keys=True, default=str, ensure_ascii=False)
            for old, new in subs:
                s = s.replace(old, new)
            r[c] = s
        out.append(r)
    return out


def compare(name, pa, pb, subs, json_cols, ignore, show) -> tuple[list[str], list[str]]:
    """(the summary table row, detail lines)."""
    if pa is None or pb is None:
        n = lambda p: "-" if p is None else str(pl.read_parquet(p).height)
        return [name, n(pa), n(pb), "no", f"missing {'before' if pa is None else 'after'}"], []
    a, b = pl.read_parquet(pa), pl.read_parquet(pb)
    key = row_key(a, b)
    if a.schema == b.schema and (a.sort(key) if key else a).equals(b.sort(key) if key else b):
        return [name, str(a.height), str(b.height), "yes", ""], []
    notes, detail, relaxed = [], [], []
    for c in sorted(set(a.columns) ^ set(b.columns)):
        notes.append(f"column {c} only {'before' if c in a.columns else 'after'}")
    common = [c for c in a.columns if c in b.columns]
    notes += [f"dtype {c}: {a.schema[c]} -> {b.schema[c]}" for c in common if a.schema[c] != b.schema[c]]
    compared = [c for c in common if c not in ignore]
    raw_a, raw_b = canon(a.select(compared), [], ()), canon(b.select(compared), [], ())
    ra, rb = canon(a.select(compared), subs, json_cols), canon(b.select(compared), subs, json_cols)
    if key is None:  # no key column: rows as whole records, matched as multisets
        keyed = lambda rows: {
            f"{json.dumps(r, sort_keys=True)}#{i}": r
            for i, r in enumerate(sorted(rows, key=lambda r: json.dumps(r, sort_keys=True)))
        }
        ka, kb, raw_ka, raw_kb = keyed(ra), keyed(rb), {}, {}
    else:
        ka, kb = {r[key]: r for r in ra}, {r[key]: r for r in rb}
        raw_ka = {r[key]: r for r in raw_a}
        raw_kb = {r[key]: r for r in raw_b}
    shared = [k for k in ka if k in kb]
    for side, keys in (("before", [k for k in ka if k not in kb]), ("after", [k for k in kb if k not in ka])):
        if keys:
            notes.append(f"{len(keys)} row(s) only {side}")
            detail += [f"  only {side}: {k[:160]}" for k in keys[:show]]
    for c in compared:
        diff = [k for k in shared if ka[k][c] != kb[k][c]]
        raw = [k for k in shared if k in raw_ka and k in raw_kb and raw_ka[k][c] != raw_kb[k][c]]
        if raw and not diff:
            relaxed.append(f"{c} ({len(raw)} rows) equal {'as JSON' if c in json_cols else 'after normalizing'}")
        if not diff:
            continue
        notes.append(f"{c} differs in {len(diff)}/{len(shared)} rows")
        if c in json_cols:
            paths = Counter(p for k in diff for p in json_paths(json.loads(ka[k][c]), json.loads(kb[k][c])))
            detail += [f"  {c}: {n} row(s) {p}" for p, n in paths.most_common(show or 5)]
        else:
            for k in diff[:show]:
                va, vb = ka[k][c], kb[k][c]
                i = next((j for j, (x, y) in enumerate(zip(va, vb)) if x != y), min(len(va), len(vb)))
                lo = max(0, i - 40)
                detail.append(f"  {c} [{key}={k[:50]}] at char {i}: {va[lo : i + 80]!r} -> {vb[lo : i + 80]!r}")
    ignored = [c for c in common if c in ignore and not a[c].equals(b[c])]
    if ignored:
        relaxed.append(f"ignored {', '.join(ignored)}")
    same = "no" if notes else "yes*"
    return [name, str(a.height), str(b.height), same, "; ".join(notes + relaxed)], detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path, help="Dagster home or tables folder (before)")
    ap.add_argument("after", type=Path, help="Dagster home or tables folder (after)")
    ap.add_argument("--normalize", action="append", default=[], metavar="OLD=NEW", help="replace text first")
    ap.add_argument("--json", action="append", default=[], metavar="COL", help="compare COL as decoded JSON")
    ap.add_argument("--ignore", action="append", default=[], metavar="COL", help="leave COL out (timings)")
    ap.add_argument("--show", type=int, default=3, help="examples per differing column")
    args = ap.parse_args()
    subs = [tuple(s.split("=", 1)) for s in args.normalize]
    ta, tb = tables(args.before), tables(args.after)
    print("| table | rows before | rows after | identical | notes |")
    print("|---|---|---|---|---|")
    details = []
    for name in sorted(set(ta) | set(tb)):
        row, detail = compare(name, ta.get(name), tb.get(name), subs, set(args.json), set(args.ignore), args.show)
        print("| " + " | ".join(row) + " |")
        details += [f"{name}:"] + detail if detail else []
    if details:
        print("\n" + "\n".join(details))


if __name__ == "__main__":
    main()
