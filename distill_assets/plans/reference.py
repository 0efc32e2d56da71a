"""The plan implied by a gold patch: the ground truth for evaluation.

Changed symbols come from a line diff of each file's two versions mapped onto
tree-sitter symbols (deepest symbol per changed line); dependency edges from
identifiers a changed symbol uses that name another changed symbol, across
files only where the caller's imports show the link; edges that would close a
cycle (between symbols, or between files, which the execution order could not
respect) are left out; the execution order is a topological order of files.
Every reference plan is checked by the same validator as teacher plans.
"""

from __future__ import annotations

import difflib
import heapq
import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from distill_assets.mining.miner import NOISE_CATEGORIES
from distill_assets.plans.schema import MODULE, AffectedFile, Change, Plan, ref
from distill_assets.symbols import Symbol, extract_symbols, identifiers_in_span, imported_names, language_for_path


@dataclass
class _Change:
    path: str  # plan path (base path; new path for added files)
    symbol: str
    action: str
    kind: str = ""
    note: str = ""
    src_path: str = ""  # where its text lives (new path, or base path for deletes)
    src_text: str = ""
    span: tuple[int, int] | None = None
    aliases: set[str] = field(default_factory=set)  # short names callers may use
    depends_on: list[str] = field(default_factory=list)
    depended_by: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return ref(self.path, self.symbol)


def _deepest(symbols: list[Symbol], n_lines: int) -> list[Symbol | None]:
    """For each 0-based line, the innermost symbol containing it."""
    out: list[Symbol | None] = [None] * n_lines
    for s in sorted(symbols, key=lambda s: -(s.end_line - s.start_line)):
        for ln in range(max(s.start_line - 1, 0), min(s.end_line, n_lines)):
            out[ln] = s
    return out


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _ancestor_in(name: str, names: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts)))


def _body_sim(a: Symbol, a_text: list[str], b: Symbol, b_text: list[str]) -> float:
    ta = "\n".join(a_text[a.start_line - 1 : a.end_line]).replace(_short(a.name), "_")
    tb = "\n".join(b_text[b.start_line - 1 : b.end_line]).replace(_short(b.name), "_")
    return difflib.SequenceMatcher(a=ta, b=tb, autojunk=False).ratio()


def symbol_changes(path: str, old_path: str, old: str, new: str) -> tuple[list[_Change], bool]:
    """Symbol-level changes between two versions of one file; also whether top-level code changed."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    old_syms, new_syms = extract_symbols(old_path, old), extract_symbols(path, new)
    old_by, new_by = {s.name: s for s in old_syms}, {s.name: s for s in new_syms}
    deep_old, deep_new = _deepest(old_syms, len(old_lines)), _deepest(new_syms, len(new_lines))
    modified: set[str] = set()
    added: set[str] = set()
    deleted: set[str] = set()
    module = False
    sm = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag == "equal":
            continue
        for j in range(j1, j2):
            if not new_lines[j].strip():
                continue
            s = deep_new[j]
            if s is None:
                module = True
            elif s.name in old_by:
                modified.add(s.name)
            else:
                added.add(s.name)
        for i in range(i1, i2):
            if not old_lines[i].strip():
                continue
            s = deep_old[i]
            if s is None:
                module = True
            elif s.name in new_by:
                modified.add(s.name)
            else:
                deleted.add(s.name)
    added = {n for n in added if not _ancestor_in(n, added)}
    deleted = {n for n in deleted if not _ancestor_in(n, deleted)}
    # a renamed symbol: deleted + added of the same kind, same parent, similar body
    renames: dict[str, str] = {}
    for d in sorted(deleted):
        ds = old_by[d]
        parent = d.rsplit(".", 1)[0] if "." in d else ""
        best, best_sim = None, 0.6
        for a in sorted(added):
            if a in renames.values():
                continue
            as_ = new_by[a]
            if as_.kind != ds.kind or (a.rsplit(".", 1)[0] if "." in a else "") != parent:
                continue
            sim = _body_sim(ds, old_lines, as_, new_lines)
            if sim > best_sim:
                best, best_sim = a, sim
        if best:
            renames[d] = best
    changes: list[_Change] = []
    for name in sorted(modified - set(renames)):
        if _ancestor_in(name, added) or _ancestor_in(name, deleted):
            continue
        s = new_by[name]
        aliases = {_short(name)}
        if _short(name) in ("__init__", "constructor", "new") and "." in name:
            aliases.add(_short(name.rsplit(".", 1)[0]))  # `Cart(...)` calls `Cart.__init__`
        changes.append(_Change(path=old_path, symbol=name, action="modify", kind=s.kind, src_path=path,
                               src_text=new, span=(s.start_line, s.end_line), aliases=aliases))
    for name in sorted(added - set(renames.values())):
        s = new_by[name]
        changes.append(_Change(path=old_path, symbol=name, action="add", kind=s.kind, src_path=path,
                               src_text=new, span=(s.start_line, s.end_line), aliases={_short(name)}))
    for name in sorted(deleted - set(renames)):
        s = old_by[name]
        changes.append(_Change(path=old_path, symbol=name, action="delete", kind=s.kind, src_path=old_path,
                               src_text=old, span=(s.start_line, s.end_line), aliases={_short(name)}))
    for old_name, new_name in sorted(renames.items()):
        s = new_by[new_name]
        changes.append(_Change(path=old_path, symbol=old_name, action="rename", kind=s.kind, note=new_name,
                               src_path=path, src_text=new, span=(s.start_line, s.end_line),
                               aliases={_short(old_name), _short(new_name)}))
    return changes, module


def _top_level(symbols: list[Symbol]) -> list[Symbol]:
    names = {s.name for s in symbols}
    return [s for s in symbols if not _ancestor_in(s.name, names)]


def _describe(c: _Change, new_path: str | None) -> str:
    what = f"{c.kind} `{c.symbol}`" if c.symbol != MODULE else "top-level code"
    if c.action == "rename" and c.symbol == MODULE:
        return f"Rename the file to {new_path}."
    if c.action == "rename":
        return f"Rename {what} to `{c.note}` and keep its behaviour."
    if c.symbol == MODULE:
        return {"add": "Create this file.", "delete": "Delete this file.",
                "modify": "Update top-level code (imports, constants or module setup)."}[c.action]
    verb = {"add": "Add", "modify": "Change", "delete": "Remove"}[c.action]
    return f"{verb} {what}."


@dataclass
class ReferencePlan:
    plan: Plan
    n_edges: int
    n_cross_file_edges: int
    difficulty: str
    dropped_edges: int


_STUB = re.compile(r"(\.pyi|\.d\.ts)$")


def _reachable(graph: Mapping[str, set[str]], start: str, goal: str) -> bool:
    stack, seen = [start], {start}
    while stack:
        n = stack.pop()
        if n == goal:
            return True
        for m in graph.get(n, ()):
            if m not in seen:
                seen.add(m)
                stack.append(m)
    return False


def build_reference_plan(task: Mapping[str, Any], old_files: Mapping[str, str | None],
                         new_files: Mapping[str, str | None], is_test=lambda p: False) -> ReferencePlan:
    """``old_files``: base path -> text (None: binary/unreadable); ``new_files``: new path -> text."""
    changes: list[_Change] = []
    file_meta: dict[str, dict[str, Any]] = {}
    for fc in task["file_changes"]:
        if fc["category"] in NOISE_CATEGORIES:
            continue
        status, new_path = fc["status"], fc["path"]
        old_path = fc.get("old_path") or new_path
        if status == "C":
            status = "A"
        plan_path = new_path if status == "A" else old_path
        file_meta[plan_path] = {"new_path": new_path, "test": fc["category"] == "test" or is_test(new_path),
                                "status": status}
        old = old_files.get(old_path) if status != "A" else ""
        new = new_files.get(new_path) if status != "D" else ""
        supported = language_for_path(new_path) is not None and old is not None and new is not None
        file_changes: list[_Change] = []
        if status == "A":
            syms = _top_level(extract_symbols(new_path, new)) if supported else []
            file_changes = [
                _Change(path=plan_path, symbol=s.name, action="add", kind=s.kind, src_path=new_path, src_text=new or "",
                        span=(s.start_line, s.end_line), aliases={_short(s.name)}) for s in syms
            ] or [_Change(path=plan_path, symbol=MODULE, action="add")]
        elif status == "D":
            file_changes = [_Change(path=plan_path, symbol=MODULE, action="delete")]
        else:
            module = True
            if supported:
                file_changes, module = symbol_changes(new_path, old_path, old or "", new or "")
            if status == "R":
                file_changes.insert(0, _Change(path=plan_path, symbol=MODULE, action="rename",
                                               aliases={posixpath.basename(new_path).split(".")[0]}))
            elif module or not file_changes:
                file_changes.insert(0, _Change(path=plan_path, symbol=MODULE, action="modify"))
        changes.extend(file_changes)

    by_key = {c.key: c for c in changes}
    imports_cache: dict[str, set[str]] = {}

    def imports_of(c: _Change) -> set[str]:
        if c.src_path not in imports_cache:
            imports_cache[c.src_path] = imported_names(c.src_path, c.src_text) if c.src_text else set()
        return imports_cache[c.src_path]

    # candidate edges: a depends on b
    cands: list[tuple[bool, str, str]] = []
    for a in changes:
        if a.symbol == MODULE or a.span is None or not a.src_text:
            continue
        ids = identifiers_in_span(a.src_path, a.src_text, a.span[0], a.span[1])
        for b in changes:
            if b is a or b.symbol == MODULE or b.action == "delete":
                continue
            if a.path == b.path and (_ancestor_in(a.symbol, {b.symbol}) or _ancestor_in(b.symbol, {a.symbol})):
                continue
            if not (b.aliases & ids):
                continue
            if a.path != b.path:
                imps = imports_of(a)
                stem = posixpath.basename(file_meta[b.path]["new_path"]).split(".")[0]
                comps = {part for imp in imps for part in re.split(r"[/.:\\]+", imp) if part}
                if not (b.aliases & imps or stem in comps):
                    continue
            cands.append((file_meta[a.path]["test"], a.key, b.key))
    cands.sort()

    sym_graph: dict[str, set[str]] = defaultdict(set)   # a -> b (a depends on b)
    file_graph: dict[str, set[str]] = defaultdict(set)  # file(a) -> file(b)
    n_edges = n_cross = dropped = 0
    for _, ka, kb in cands:
        a, b = by_key[ka], by_key[kb]
        if _reachable(sym_graph, kb, ka):
            dropped += 1
            continue
        if a.path != b.path and _reachable(file_graph, b.path, a.path):
            dropped += 1
            continue
        sym_graph[ka].add(kb)
        a.depends_on.append(kb)
        b.depended_by.append(ka)
        n_edges += 1
        if a.path != b.path:
            file_graph[a.path].add(b.path)
            n_cross += 1

    # execution order: files others depend on first; sources before tests; then by path
    paths = list(dict.fromkeys(c.path for c in changes))
    indeg = {p: 0 for p in paths}
    succ: dict[str, set[str]] = defaultdict(set)  # b -> a : b must come before a
    for a_path, targets in file_graph.items():
        for b_path in targets:
            if a_path not in succ[b_path]:
                succ[b_path].add(a_path)
                indeg[a_path] += 1
    heap = [(file_meta[p]["test"], p) for p in paths if indeg[p] == 0]
    heapq.heapify(heap)
    order: list[str] = []
    while heap:
        _, p = heapq.heappop(heap)
        order.append(p)
        for q in sorted(succ[p]):
            indeg[q] -= 1
            if indeg[q] == 0:
                heapq.heappush(heap, (file_meta[q]["test"], q))

    affected = []
    for p in order + [p for p in paths if p not in order]:
        meta = file_meta[p]
        fchanges = [c for c in changes if c.path == p]
        if meta["test"]:
            role = "supporting"
        elif _STUB.search(meta["new_path"]):
            role = "type_stub"
        else:
            def other_file(r: str) -> bool:
                return by_key[r].path != p

            outward = any(other_file(d) for c in fchanges for d in c.depends_on)
            adapts_only = all(any(other_file(d) for d in c.depends_on) for c in fchanges if c.symbol != MODULE)
            inward = any(other_file(d) for c in fchanges for d in c.depended_by)
            role = "supporting" if outward and adapts_only and not inward else "primary"
        affected.append(AffectedFile(path=p, role=role, changes=[
            Change(symbol=c.symbol, action=c.action, description=_describe(c, meta["new_path"]),
                   depends_on=sorted(c.depends_on), depended_by=sorted(c.depended_by)) for c in fchanges
        ]))

    desc = (task.get("description") or "").strip()
    summary = desc.splitlines()[0][:200] if desc else f"Change {len(paths)} files"
    chain = " -> ".join(order)
    rationale = (f"The gold change touches {len(paths)} files with {len(changes)} symbol changes and "
                 f"{n_edges} dependency edges ({n_cross} across files); files are ordered so that what a "
                 f"change uses is changed first: {chain}.")
    plan = Plan(task_summary=summary, affected_files=affected, execution_order=order, rationale=rationale)

    out_deg: dict[str, set[str]] = defaultdict(set)
    in_deg: dict[str, set[str]] = defaultdict(set)
    for a_path, targets in file_graph.items():
        for b_path in targets:
            out_deg[a_path].add(b_path)
            in_deg[b_path].add(a_path)
    branching = any(len(v) >= 2 for v in out_deg.values()) or any(len(v) >= 2 for v in in_deg.values())
    if len(paths) <= 1:
        difficulty = "easy"
    elif branching or len(paths) >= 5:
        difficulty = "hard"
    else:
        difficulty = "medium"
    return ReferencePlan(plan=plan, n_edges=n_edges, n_cross_file_edges=n_cross, difficulty=difficulty,
                         dropped_edges=dropped)


REFERENCE_SCHEMA = {
    "task_id": pl.Utf8, "source": pl.Utf8, "status": pl.Utf8, "detail": pl.Utf8, "plan_json": pl.Utf8,
    "valid": pl.Boolean, "violations": pl.List(pl.Utf8), "n_files": pl.Int64, "n_changes": pl.Int64,
    "n_edges": pl.Int64, "n_cross_file_edges": pl.Int64, "dropped_edges": pl.Int64, "difficulty": pl.Utf8,
}


def build_reference_plans(tasks: "pl.DataFrame", contexts: "pl.DataFrame", is_test=lambda p: False,
                          progress=None) -> "pl.DataFrame":
    ctx_by_id = {r["task_id"]: r for r in contexts.iter_rows(named=True)}
    rows = []
    for i, task in enumerate(tasks.iter_rows(named=True)):
        rows.append(reference_plan_for_task(task, ctx_by_id.get(task["task_id"]), is_test=is_test))
        if progress:
            progress(i + 1, tasks.height)
    return pl.DataFrame(rows, schema=REFERENCE_SCHEMA) if rows else pl.DataFrame(schema=REFERENCE_SCHEMA)


def reference_plan_for_task(task: Mapping[str, Any], context: Mapping[str, Any], is_test=lambda p: False) -> dict[str, Any]:
    """One row of ``reference_plans``: the plan, its validation, and why when there is none."""
    from distill_assets.plans.validator import PlanContext, validate_plan
    from distill_assets.tasks.snapshot import SnapshotError, after_snapshot, base_snapshot, is_probably_binary

    row: dict[str, Any] = {k: None for k in REFERENCE_SCHEMA}
    row.update(task_id=task["task_id"], source="reference", valid=False, violations=[])
    if context is None or context["status"] != "ok":
        row.update(status="skipped", detail=f"no task context ({context['status'] if context else 'missing'})")
        return row
    plan_changes = [c for c in task["file_changes"] if c["category"] not in NOISE_CATEGORIES]
    if not plan_changes:
        row.update(status="skipped", detail="the change touches no plan-relevant files")
        return row
    try:
        base, after = base_snapshot(task), after_snapshot(task)
    except SnapshotError as exc:
        row.update(status="error", detail=f"gold patch does not apply at base: {exc}")
        return row

    def texts(snap, paths):
        if snap is None:
            return {}
        raw = snap.read(paths)
        return {p: (None if is_probably_binary(b) else b.decode("utf-8", "replace")) for p, b in raw.items()}

    old = texts(base, [c.get("old_path") or c["path"] for c in plan_changes if c["status"] not in ("A", "C")])
    new = texts(after, [c["path"] for c in plan_changes if c["status"] != "D"])
    ref_plan = build_reference_plan(task, old, new, is_test=is_test)
    report = validate_plan(ref_plan.plan, PlanContext.from_rows(context["file_tree"], context["symbols"]))
    row.update(
        status="ok", detail="", plan_json=ref_plan.plan.to_json(), valid=report.valid,
        violations=[str(v) for v in report.violations], n_files=len(ref_plan.plan.affected_files),
        n_changes=sum(len(f.changes) for f in ref_plan.plan.affected_files), n_edges=ref_plan.n_edges,
        n_cross_file_edges=ref_plan.n_cross_file_edges, dropped_edges=ref_plan.dropped_edges,
        difficulty=ref_plan.difficulty,
    )
    return row
