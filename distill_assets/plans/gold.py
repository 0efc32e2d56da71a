"""Score reference plans against a hand-checked gold set: precision and recall of files, symbols, edges.

A gold file (YAML, see ``distill_assets_tests/plans/gold/README.md``) lists per commit the changed files,
their symbol changes with actions, and dependency edges ``"path:A -> path:B"`` (A depends on B).
Symbols are compared as ``(path, symbol)`` pairs without ``<module>``; actions are scored on the pairs
both sides have.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill_assets.plans.schema import MODULE, Plan


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, got: set, want: set) -> None:
        self.tp += len(got & want)
        self.fp += len(got - want)
        self.fn += len(want - got)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 3),
            "recall": round(self.recall, 3),
        }


@dataclass
class GoldScore:
    files: Counts = field(default_factory=Counts)
    symbols: Counts = field(default_factory=Counts)
    edges: Counts = field(default_factory=Counts)
    actions_right: int = 0
    actions_total: int = 0
    misses: list[str] = field(default_factory=list)  # one line per wrong or missing item

    def merge(self, other: "GoldScore") -> None:
        for name in ("files", "symbols", "edges"):
            mine, theirs = getattr(self, name), getattr(other, name)
            mine.tp, mine.fp, mine.fn = mine.tp + theirs.tp, mine.fp + theirs.fp, mine.fn + theirs.fn
        self.actions_right += other.actions_right
        self.actions_total += other.actions_total
        self.misses.extend(other.misses)


def load_gold(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("commits"), list):
        raise ValueError(f"{path}: a gold file needs a 'commits' list")
    return data


def _edge(text: str) -> tuple[str, str]:
    a, _, b = text.partition(" -> ")
    return a.strip(), b.strip()


def score_plan(plan: Plan, gold: Mapping[str, Any], label: str = "") -> GoldScore:
    s = GoldScore()
    gfiles: dict[str, dict[str, str]] = {p: dict(syms or {}) for p, syms in (gold.get("files") or {}).items()}
    got_files = {f.path for f in plan.affected_files}
    s.files.add(got_files, set(gfiles))
    got_syms = {(f.path, c.symbol): c.action for f in plan.affected_files for c in f.changes if c.symbol != MODULE}
    want_syms = {(p, sym): act for p, syms in gfiles.items() for sym, act in syms.items() if sym != MODULE}
    s.symbols.add(set(got_syms), set(want_syms))
    for k in set(got_syms) & set(want_syms):
        s.actions_total += 1
        s.actions_right += got_syms[k] == want_syms[k]
        if got_syms[k] != want_syms[k]:
            s.misses.append(f"{label} action {k[0]}:{k[1]}: {got_syms[k]} (gold {want_syms[k]})")
    got_edges = {(f"{f.path}:{c.symbol}", d) for f in plan.affected_files for c in f.changes for d in c.depends_on}
    want_edges = {_edge(e) for e in gold.get("edges") or []}
    s.edges.add(got_edges, want_edges)
    for p in sorted(got_files - set(gfiles)):
        s.misses.append(f"{label} extra file {p}")
    for p in sorted(set(gfiles) - got_files):
        s.misses.append(f"{label} missing file {p}")
    for k in sorted(set(got_syms) - set(want_syms)):
        s.misses.append(f"{label} extra symbol {k[0]}:{k[1]} ({got_syms[k]})")
    for k in sorted(set(want_syms) - set(got_syms)):
        s.misses.append(f"{label} missing symbol {k[0]}:{k[1]} ({want_syms[k]})")
    for e in sorted(got_edges - want_edges):
        s.misses.append(f"{label} extra edge {e[0]} -> {e[1]}")
    for e in sorted(want_edges - got_edges):
        s.misses.append(f"{label} missing edge {e[0]} -> {e[1]}")
    return s


def score_plans(plans: Mapping[str, Plan], gold_commits: Iterable[Mapping[str, Any]]) -> GoldScore:
    """``plans``: commit sha -> reference plan. A gold commit without a plan counts all its items as missed."""
    total = GoldScore()
    for g in gold_commits:
        sha = g["sha"]
        plan = plans.get(sha)
        if plan is None:
            empty = GoldScore()
            gfiles = g.get("files") or {}
            empty.files.fn += len(gfiles)
            empty.symbols.fn += sum(1 for syms in gfiles.values() for sym in (syms or {}) if sym != MODULE)
            empty.edges.fn += len(g.get("edges") or [])
            empty.misses.append(f"{sha[:10]} no reference plan")
            total.merge(empty)
            continue
        total.merge(score_plan(plan, g, label=sha[:10]))
    return total


def reference_plans_for_commits(repo_path: str | Path, shas: Iterable[str], name: str = "gold") -> dict[str, Plan]:
    """Reference plans of the given commits of a local repository, built by the pipeline's own steps (mining,
    change tasks, contexts, reference plans) with the default settings; commits the miner would drop are
    built anyway (the gold set decides what is scored)."""
    import polars as pl

    from distill_assets.config import ContextConfig, MiningConfig, RepoSource, SplitConfig
    from distill_assets.contexts.build import build_contexts
    from distill_assets.mining.miner import FileClassifier, mine_repository, open_repository
    from distill_assets.plans.reference import build_reference_plans
    from distill_assets.tasks.build import build_change_tasks, mined_table

    wanted = set(shas)
    source = RepoSource(name=name, path=Path(repo_path))
    mining = MiningConfig()
    result = mine_repository(open_repository(source, Path(repo_path)), source, mining)
    mined = mined_table(result).filter(pl.col("sha").is_in(sorted(wanted))).with_columns(kept=pl.lit(True))
    tasks = build_change_tasks([mined], None, mining, SplitConfig())
    contexts, _ = build_contexts(tasks, ContextConfig())
    refs = build_reference_plans(tasks, contexts, is_test=FileClassifier(mining).is_test)
    by_task = dict(zip(tasks["task_id"], tasks["after_commit"]))
    return {
        by_task[r["task_id"]]: Plan.model_validate_json(r["plan_json"])
        for r in refs.iter_rows(named=True)
        if r["plan_json"]
    }
