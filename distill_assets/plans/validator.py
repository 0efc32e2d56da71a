"""Structural validity of a change plan, exactly as DESIGN.md defines it.

A plan is valid when it parses; every path exists in the task's base tree (or
all its changes are ``add``); every ``modify/delete/rename`` symbol exists in
that file; every edge names a change in the plan and ``depends_on`` /
``depended_by`` are mutual; the edge graph is acyclic; ``execution_order``
lists each affected file once and respects the edges; and there is no code in
the plan. Each violation is reported by name (``Violation.code``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from pydantic import ValidationError

from distill_assets.plans.schema import MODULE, Plan, split_ref

VIOLATION_CODES = (
    "parse_error",  # not JSON, or not the plan schema
    "unknown_file",  # path not in the base tree, and not every change is an add
    "duplicate_file",  # the same path listed twice in affected_files
    "duplicate_change",  # the same symbol twice in one file
    "unknown_symbol",  # modify/delete/rename of a symbol the file does not have
    "add_existing_symbol",  # add of a symbol that already exists in the file
    "bad_edge",  # an edge that is not 'path:symbol'
    "dangling_edge",  # an edge to a change that is not in the plan
    "edge_not_mutual",  # A depends_on B without B depended_by A (or the reverse)
    "cycle",  # the dependency graph has a cycle (self-edges included)
    "order_missing_file",  # an affected file missing from execution_order
    "order_unknown_file",  # execution_order names a file that is not affected
    "order_duplicate_file",  # execution_order lists a file twice
    "order_violates_edge",  # a file comes before a file it depends on
    "code_in_plan",  # source code or a diff inside the plan's text
)


@dataclass(frozen=True)
class Violation:
    code: str
    message: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" + (f" [{self.where}]" if self.where else "")


@dataclass
class PlanContext:
    """What a plan is checked against: the base tree and the symbols of indexed files.

    Files in the tree without an entry in ``symbols`` (unsupported languages)
    only admit the ``<module>`` pseudo-symbol for modify/delete/rename.
    """

    tree: set[str]
    symbols: Mapping[str, set[str]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, tree: Iterable[str], symbol_rows: Iterable[Mapping]) -> "PlanContext":
        syms: dict[str, set[str]] = defaultdict(set)
        for r in symbol_rows:
            syms[r["path"]].add(r["name"])
        return cls(tree=set(tree), symbols=dict(syms))


@dataclass
class ValidationReport:
    violations: list[Violation]
    plan: Plan | None

    @property
    def valid(self) -> bool:
        return not self.violations

    @property
    def codes(self) -> list[str]:
        return sorted({v.code for v in self.violations})


_CODE_PATTERNS = [
    re.compile(r"```"),
    re.compile(r"^(diff --git|@@ -\d|\+\+\+ |--- a/)", re.M),
    re.compile(r"^\s*(def|class|async def)\s+\w+\s*[\(:]", re.M),
    re.compile(
        r"^\s*(function\s+\w+\s*\(|func\s+(\([^)]*\)\s*)?\w+\s*\(|fn\s+\w+\s*[<(]|(public|private|protected)\s+\w+.*\(.*\)\s*\{)",
        re.M,
    ),
    re.compile(r"^\s*(import\s+[\w.]+|from\s+[\w.]+\s+import\s+\w+|const\s+\w+\s*=\s*require\()", re.M),
]


def looks_like_code(text: str) -> bool:
    """Fenced blocks, diff hunks, or definitions/imports at the start of a line."""
    if not text:
        return False
    if any(p.search(text) for p in _CODE_PATTERNS):
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    codey = sum(1 for ln in lines if re.search(r"[;{}]\s*$", ln))
    return codey >= 2


def parse_plan(raw: Plan | str | Mapping) -> tuple[Plan | None, Violation | None]:
    if isinstance(raw, Plan):
        return raw, None
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        return None, Violation("parse_error", f"not JSON: {exc}")
    try:
        return Plan.model_validate(data), None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        return None, Violation("parse_error", f"{loc or '<root>'}: {err['msg']}", loc)


def find_cycle(nodes: Iterable[str], edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in a directed graph (node -> successors), or None. Iterative DFS."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = {n: WHITE for n in nodes}
    for start in list(color):
        if color[start] != WHITE:
            continue
        stack = [(start, iter(edges.get(start, ())))]
        path = [start]
        color[start] = GREY
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
                continue
            if color.get(nxt, WHITE) == GREY:
                return path[path.index(nxt) :] + [nxt]
            if color.get(nxt, WHITE) == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(edges.get(nxt, ()))))
                path.append(nxt)
    return None


def validate_plan(raw: Plan | str | Mapping, ctx: PlanContext) -> ValidationReport:
    plan, err = parse_plan(raw)
    if err is not None or plan is None:
        return ValidationReport([err] if err else [], None)
    out: list[Violation] = []

    # ---- files and symbols
    seen_files: set[str] = set()
    for f in plan.affected_files:
        if f.path in seen_files:
            out.append(Violation("duplicate_file", f"{f.path} is listed twice in affected_files", f.path))
        seen_files.add(f.path)
        in_tree = f.path in ctx.tree
        if not in_tree and any(c.action != "add" for c in f.changes):
            out.append(Violation("unknown_file", f"{f.path} is not in the base tree and not only added", f.path))
        known = ctx.symbols.get(f.path, set())
        seen_syms: set[str] = set()
        for c in f.changes:
            where = f"{f.path}:{c.symbol}"
            if c.symbol in seen_syms:
                out.append(Violation("duplicate_change", f"{c.symbol} appears twice in {f.path}", where))
            seen_syms.add(c.symbol)
            if c.action in ("modify", "delete", "rename") and in_tree:
                if c.symbol != MODULE and c.symbol not in known:
                    out.append(
                        Violation(
                            "unknown_symbol", f"{c.action} of {c.symbol!r}, which {f.path} does not define", where
                        )
                    )
            if c.action == "add" and in_tree and c.symbol != MODULE and c.symbol in known:
                out.append(
                    Violation("add_existing_symbol", f"add of {c.symbol!r}, which {f.path} already defines", where)
                )
            for text in (c.description,):
                if looks_like_code(text):
                    out.append(Violation("code_in_plan", "a change description contains code", where))
    for name, text in (("task_summary", plan.task_summary), ("rationale", plan.rationale)):
        if looks_like_code(text):
            out.append(Violation("code_in_plan", f"{name} contains code", name))

    # ---- edges: well-formed, pointing into the plan, mutual
    refs = plan.refs()
    deps: dict[str, set[str]] = defaultdict(set)  # A -> B : A depends on B
    for r, (path, c) in refs.items():
        for kind, targets in (("depends_on", c.depends_on), ("depended_by", c.depended_by)):
            for t in targets:
                if split_ref(t) is None:
                    out.append(Violation("bad_edge", f"{kind} entry {t!r} is not 'path:symbol'", r))
                    continue
                if t not in refs:
                    out.append(Violation("dangling_edge", f"{kind} names {t!r}, which is not a change in the plan", r))
                    continue
                other = refs[t][1]
                if kind == "depends_on":
                    deps[r].add(t)
                    if r not in other.depended_by:
                        out.append(
                            Violation(
                                "edge_not_mutual", f"{r} depends_on {t} but {t} does not list it in depended_by", r
                            )
                        )
                else:
                    deps[t].add(r)
                    if r not in other.depends_on:
                        out.append(
                            Violation(
                                "edge_not_mutual", f"{r} is depended_by {t} but {t} does not list it in depends_on", r
                            )
                        )

    cycle = find_cycle(refs.keys(), deps)
    if cycle:
        out.append(Violation("cycle", "dependency cycle: " + " -> ".join(cycle), cycle[0]))

    # ---- execution order
    order = plan.execution_order
    pos: dict[str, int] = {}
    for i, p in enumerate(order):
        if p in pos:
            out.append(Violation("order_duplicate_file", f"{p} appears twice in execution_order", p))
            continue
        pos[p] = i
        if p not in seen_files:
            out.append(Violation("order_unknown_file", f"{p} is in execution_order but not in affected_files", p))
    for p in seen_files:
        if p not in pos:
            out.append(Violation("order_missing_file", f"{p} is affected but missing from execution_order", p))
    for a, targets in deps.items():
        fa = refs[a][0]
        for b in targets:
            fb = refs[b][0]
            if fa != fb and fa in pos and fb in pos and pos[fb] > pos[fa]:
                out.append(Violation("order_violates_edge", f"{fa} comes before {fb}, but {a} depends on {b}", a))

    # de-duplicate identical messages (mutual checks can fire twice)
    uniq = list(dict.fromkeys(out))
    return ValidationReport(uniq, plan)
