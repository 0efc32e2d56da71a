"""Repairing a change plan's bookkeeping: the fields that follow from the rest of the plan.

A plan states its dependencies twice (``depends_on`` and ``depended_by``) and its file order once more
(``execution_order``). A small student gets the content (which files, which symbols) right long before it
keeps these redundant fields consistent. ``repair_plan`` derives them from what the plan says, and leaves
the content alone:

- a file listed twice becomes one entry (its changes joined; the strongest role kept), a symbol listed
  twice in one file becomes one change (the first action kept, descriptions and edges joined);
- an edge naming a file of the plan instead of ``path:symbol`` points at that file's first change; an edge
  to nothing in the plan, or to itself, is dropped;
- every edge is written on both ends; an edge that closes a cycle is dropped;
- ``execution_order`` becomes the order of the affected files that respects the edges, keeping the plan's
  own order wherever the edges allow it (files it left out follow in ``affected_files`` order).

Unknown files and symbols, adds of existing symbols and code in the text are content: they are not
repaired, and the validator still reports them. Each repair is counted by kind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import networkx as nx

from distill_assets.plans.schema import AffectedFile, Change, Plan, split_ref

_ROLE_RANK = {"primary": 0, "supporting": 1, "type_stub": 2}

REPAIR_KINDS = (
    "merged_file",  # a path listed twice in affected_files
    "merged_change",  # a symbol listed twice in one file
    "edge_to_file",  # an edge naming a file of the plan, pointed at its first change
    "dropped_edge",  # an edge to nothing in the plan (or to its own change)
    "mirrored_edge",  # an edge written on one end only, now on both
    "dropped_cycle_edge",  # an edge that closed a dependency cycle
    "reordered",  # execution_order rewritten (files missing, unknown, repeated or against an edge)
)


@dataclass
class RepairResult:
    plan: Plan
    repairs: Counter = field(default_factory=Counter)

    @property
    def changed(self) -> bool:
        return bool(self.repairs)

    def summary(self) -> str:
        return ",".join(f"{k}={v}" for k, v in sorted(self.repairs.items()))


def _merge_files(plan: Plan, fixes: Counter) -> list[AffectedFile]:
    files: dict[str, AffectedFile] = {}
    for f in plan.affected_files:
        if f.path not in files:
            files[f.path] = f.model_copy(deep=True)
            continue
        fixes["merged_file"] += 1
        kept = files[f.path]
        if _ROLE_RANK[f.role] < _ROLE_RANK[kept.role]:
            kept.role = f.role
        kept.changes.extend(c.model_copy(deep=True) for c in f.changes)
    for f in files.values():
        changes: dict[str, Change] = {}
        for c in f.changes:
            if c.symbol not in changes:
                changes[c.symbol] = c
                continue
            fixes["merged_change"] += 1
            kept = changes[c.symbol]
            if c.description and c.description not in kept.description:
                kept.description = f"{kept.description} {c.description}".strip()
            kept.depends_on += c.depends_on
            kept.depended_by += c.depended_by
        f.changes = list(changes.values())
    return list(files.values())


def _resolve(target: str, refs: set[str], first_change: dict[str, str]) -> tuple[str | None, str | None]:
    """(the change an edge names, the repair it took)."""
    t = target.strip()
    if t in refs:
        return t, None
    if t in first_change:
        return first_change[t], "edge_to_file"
    parts = split_ref(t)
    if parts is not None:
        stripped = f"{parts[0].strip()}:{parts[1].strip()}"
        if stripped in refs:
            return stripped, None
    return None, "dropped_edge"


def _dependency_graph(files: list[AffectedFile], fixes: Counter) -> nx.DiGraph:
    """Change -> the changes it depends on, from both ends of every edge that names a change of the plan."""
    refs = {f"{f.path}:{c.symbol}" for f in files for c in f.changes}
    first_change = {f.path: f"{f.path}:{f.changes[0].symbol}" for f in files}
    graph = nx.DiGraph()
    graph.add_nodes_from(f"{f.path}:{c.symbol}" for f in files for c in f.changes)
    stated: set[tuple[str, str]] = set()
    for f in files:
        for c in f.changes:
            me = f"{f.path}:{c.symbol}"
            for kind, targets in (("depends_on", c.depends_on), ("depended_by", c.depended_by)):
                for t in targets:
                    other, fix = _resolve(t, refs, first_change)
                    if fix:
                        fixes[fix] += 1
                    if other is None or other == me:
                        if other == me:
                            fixes["dropped_edge"] += 1
                        continue
                    edge = (me, other) if kind == "depends_on" else (other, me)
                    stated.add((*edge, kind))
                    graph.add_edge(*edge)
    for a, b in graph.edges:  # every edge must be stated by both its ends
        if (a, b, "depends_on") not in stated or (a, b, "depended_by") not in stated:
            fixes["mirrored_edge"] += 1
    while True:
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            break
        graph.remove_edge(*cycle[-1][:2])
        fixes["dropped_cycle_edge"] += 1
    return graph


def _file_order(plan: Plan, files: list[AffectedFile], graph: nx.DiGraph) -> list[str]:
    """Affected files, dependencies first; ties broken by the plan's own order, then affected_files order."""
    paths = [f.path for f in files]
    given = [p for p in dict.fromkeys(plan.execution_order) if p in paths]
    rank = {p: i for i, p in enumerate(given + [p for p in paths if p not in given])}
    path_of = {f"{f.path}:{c.symbol}": f.path for f in files for c in f.changes}
    order = nx.DiGraph()
    order.add_nodes_from(paths)
    for a, b in graph.edges:  # a depends on b: b's file goes first
        if path_of[a] != path_of[b]:
            order.add_edge(path_of[b], path_of[a])
    try:
        return list(nx.lexicographical_topological_sort(order, key=rank.__getitem__))
    except nx.NetworkXUnfeasible:  # files depend on each other both ways: the plan's own order stands
        return sorted(paths, key=rank.__getitem__)


def repair_plan(plan: Plan) -> RepairResult:
    fixes: Counter = Counter()
    files = _merge_files(plan, fixes)
    graph = _dependency_graph(files, fixes)
    for f in files:
        for c in f.changes:
            me = f"{f.path}:{c.symbol}"
            c.depends_on = list(graph.successors(me))
            c.depended_by = list(graph.predecessors(me))
    order = _file_order(plan, files, graph)
    if order != plan.execution_order:
        fixes["reordered"] += 1
    if not fixes:  # nothing to repair: the plan as written, its edge order included
        return RepairResult(plan.model_copy(deep=True), fixes)
    repaired = Plan(
        task_summary=plan.task_summary, affected_files=files, execution_order=order, rationale=plan.rationale
    )
    return RepairResult(repaired, fixes)
