"""The plan implied by a gold patch: the ground truth for evaluation and a teacher for training.

Symbol changes come from the diff's hunks mapped onto the tree-sitter symbols of both revisions: a
removed line belongs to the innermost symbol around it at the base, an added line to the innermost
symbol around it after the change (a comment block directly above a definition belongs to it). A
symbol that exists on both sides is ``modify`` only when its own text (its lines outside nested
symbols, whitespace ignored) really differs, so a hunk that git aligned across the closing lines of
the previous method does not mark that method. Symbols only after / only before are ``add`` /
``delete``; a deleted and an added symbol of the same kind and scope with mostly the same lines are a
``rename``. A name defined twice in a file (overloads, a function defined in both branches of an
``if``) is one symbol.

Dependency edges need a resolved reference (``_resolve``): a bare name that is not a local binding
(parameters and assignments shadow), defined in the same file, in the same Go/Java package (folder),
or brought in by an import that resolves to the defining file; ``module.name`` through an imported
module or package; ``self.m`` / ``this.m`` / a Go receiver's ``s.m`` inside the same class or type;
``Class.m`` and ``Class(...)`` for a visible class. A method called on some other object is an edge
only when the method's class is visible from the caller's file (same file or package, or imported)
and no other changed method has that name (a weaker edge).

Cycles: the plan's graph must be acyclic, so edges are added strongest first (resolved references
before the weaker method-name ones), edges to symbols the change adds before others (a new definition
is written before its users), code before tests, then by name; an edge that would close a cycle
between symbols or between files is dropped and counted. Code never depends on a test. The
execution order is a topological order of files, sources before tests.
"""

from __future__ import annotations

import difflib
import heapq
import posixpath
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import polars as pl

from distill_assets.diffs import FileDiff, Hunk, line_hunks, parse_patch
from distill_assets.mining.miner import NOISE_CATEGORIES
from distill_assets.plans.schema import MODULE, AffectedFile, Change, Plan, ref
from distill_assets.symbols import ModuleResolver, ParsedFile, References, Symbol, Target, language_for_path

DIFFICULTIES = ("easy", "medium", "hard")

_COMMENT = {"python": ("#",)}
_C_COMMENT = ("//", "/*", "*", "*/")
_WS = re.compile(r"\s+")
_STUB = re.compile(r"(\.pyi|\.d\.ts)$")
_CTOR = ("__init__", "constructor", "new")
_PACKAGE_LANGS = {"go": "go", "java": "java"}  # files of one folder share names without imports


def _norm(line: str) -> str:
    return _WS.sub("", line)


# --------------------------------------------------------------------------- one side of one file


class _Version:
    """A file at one revision: its text, symbols grouped by name, and the innermost symbol of each line."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.language = language_for_path(path)
        self.parsed = ParsedFile(path, text) if self.language else None
        syms = self.parsed.symbols() if self.parsed else []
        self.by_name: dict[str, list[Symbol]] = defaultdict(list)
        for s in syms:
            self.by_name[s.name].append(s)
        self.kind = {n: ss[0].kind for n, ss in self.by_name.items()}
        prefixes = _COMMENT.get(self.language or "", _C_COMMENT)
        n = len(self.lines)
        self.deep: list[str | None] = [None] * n
        self.start: dict[str, int] = {}
        self.end: dict[str, int] = {}
        for s in sorted(syms, key=lambda s: -(s.end_line - s.start_line)):
            start = s.start_line
            while 1 < start <= n + 1 and self.lines[start - 2].strip().startswith(prefixes):
                start -= 1  # a comment block directly above belongs to the definition
            for ln in range(max(start - 1, 0), min(s.end_line, n)):
                self.deep[ln] = s.name
            self.start[s.name] = min(self.start.get(s.name, start), start)
            self.end[s.name] = max(self.end.get(s.name, s.end_line), s.end_line)
        self._own: dict[str | None, list[str]] = {}

    def own_lines(self, name: str | None) -> list[str]:
        """Normalised non-blank lines whose innermost symbol is ``name`` (None: top-level code)."""
        if not self._own:
            acc: dict[str | None, list[str]] = defaultdict(list)
            for line, owner in zip(self.lines, self.deep):
                t = _norm(line)
                if t:
                    acc[owner].append(t)
            self._own = dict(acc)
        return self._own.get(name, [])

    def own_runs(self, name: str) -> list[tuple[int, int]]:
        """1-based line ranges where ``name`` is the innermost symbol."""
        runs, start = [], None
        lo, hi = self.start.get(name, 1), self.end.get(name, 0)
        for i in range(lo - 1, min(hi, len(self.lines))):
            if self.deep[i] == name:
                if start is None:
                    start = i + 1
            elif start is not None:
                runs.append((start, i))
                start = None
        if start is not None:
            runs.append((start, min(hi, len(self.lines))))
        return runs

    def top_level(self) -> list[str]:
        names = list(dict.fromkeys(s for s in self.by_name))
        return [n for n in names if not _ancestor_in(n, set(names))]


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _ancestor_in(name: str, names: set[str]) -> bool:
    parts = name.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts)))


def _current(c: "_Change") -> str:
    """The symbol's name after the change (a rename's new name)."""
    return c.note if c.action == "rename" and c.note else c.symbol


@dataclass
class _Change:
    path: str  # plan path (base path; new path for added files)
    symbol: str
    action: str
    kind: str = ""
    note: str = ""
    version: _Version | None = None  # where its text lives (after the change; before it for deletes)
    depends_on: list[str] = field(default_factory=list)
    depended_by: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return ref(self.path, self.symbol)


def _changed_lines(hunks: Iterable[Hunk]) -> tuple[set[int], set[int]]:
    """Old and new line numbers that really changed: blank lines and whitespace-only edits left out."""
    old: set[int] = set()
    new: set[int] = set()
    for h in hunks:
        pool: dict[str, int] = defaultdict(int)
        for _, text in h.removed:
            pool[_norm(text)] += 1
        matched: dict[str, int] = defaultdict(int)
        for no, text in h.added:
            t = _norm(text)
            if not t:
                continue
            if pool.get(t, 0) > matched[t]:
                matched[t] += 1  # the same line, re-indented
                continue
            new.add(no)
        for no, text in h.removed:
            t = _norm(text)
            if not t:
                continue
            if matched.get(t, 0) > 0:
                matched[t] -= 1
                continue
            old.add(no)
    return old, new


def _similarity(a: list[str], b: list[str]) -> float:
    """Share of lines two bodies have in common, in order (difflib's ratio over lines, not characters)."""
    sm = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    return sm.ratio() if sm.real_quick_ratio() > 0.6 and sm.quick_ratio() > 0.6 else 0.0


def symbol_changes(plan_path: str, old: _Version, new: _Version, hunks: list[Hunk]) -> tuple[list[_Change], bool]:
    """Symbol-level changes of one modified file; also whether its top-level code changed."""
    old_lines, new_lines = _changed_lines(hunks)
    touched_old = {old.deep[i - 1] for i in old_lines if 0 < i <= len(old.deep)}
    touched_new = {new.deep[i - 1] for i in new_lines if 0 < i <= len(new.deep)}
    module = False
    if None in touched_old or None in touched_new:
        module = old.own_lines(None) != new.own_lines(None)
    modified: set[str] = set()
    added: set[str] = set()
    deleted: set[str] = set()
    # a definition that appears or disappears always changed, whatever lines git aligned around it
    appeared = set(new.by_name) - set(old.by_name)
    vanished = set(old.by_name) - set(new.by_name)
    for name in (touched_old | touched_new | appeared | vanished) - {None}:
        in_old, in_new = name in old.by_name, name in new.by_name
        if in_old and in_new:
            if old.own_lines(name) != new.own_lines(name) or len(old.by_name[name]) != len(new.by_name[name]):
                modified.add(name)
        elif in_new:
            added.add(name)
        else:
            deleted.add(name)
    added = {n for n in added if not _ancestor_in(n, added)}
    deleted = {n for n in deleted if not _ancestor_in(n, deleted)}
    renames: dict[str, str] = {}
    for d in sorted(deleted):
        best, best_sim = None, 0.6
        for a in sorted(added):
            if a in renames.values() or new.kind[a] != old.kind[d] or _parent(a) != _parent(d):
                continue
            body_old = [t.replace(_short(d), "_") for t in _body(old, d)]
            body_new = [t.replace(_short(a), "_") for t in _body(new, a)]
            sim = _similarity(body_old, body_new)
            if sim > best_sim:
                best, best_sim = a, sim
        if best:
            renames[d] = best
    changes: list[_Change] = []
    for name in sorted(modified):
        if _ancestor_in(name, added) or _ancestor_in(name, deleted):
            continue
        changes.append(_Change(plan_path, name, "modify", new.kind[name], version=new))
    for name in sorted(added - set(renames.values())):
        changes.append(_Change(plan_path, name, "add", new.kind[name], version=new))
    for name in sorted(deleted - set(renames)):
        changes.append(_Change(plan_path, name, "delete", old.kind[name], version=old))
    for old_name, new_name in sorted(renames.items()):
        changes.append(_Change(plan_path, old_name, "rename", new.kind[new_name], note=new_name, version=new))
    return changes, module


def _body(v: _Version, name: str) -> list[str]:
    lo, hi = v.start.get(name, 1), v.end.get(name, 0)
    return [t for t in (_norm(x) for x in v.lines[lo - 1 : hi]) if t]


def _describe(c: _Change, new_path: str | None) -> str:
    what = f"{c.kind} `{c.symbol}`" if c.symbol != MODULE else "top-level code"
    if c.action == "rename" and c.symbol == MODULE:
        return f"Rename the file to {new_path}."
    if c.action == "rename":
        return f"Rename {what} to `{c.note}` and keep its behaviour."
    if c.symbol == MODULE:
        return {
            "add": "Create this file.",
            "delete": "Delete this file.",
            "modify": "Update top-level code (imports, constants or module setup).",
        }[c.action]
    verb = {"add": "Add", "modify": "Change", "delete": "Remove"}[c.action]
    return f"{verb} {what}."


# --------------------------------------------------------------------------- resolving references


class _Resolver:
    """Which changed symbols a change's code refers to, through names the language can resolve."""

    def __init__(self, changes: list[_Change], new_path_of: Mapping[str, str], tree: Iterable[str]):
        self.modules = ModuleResolver(tree)
        self.new_path_of = new_path_of  # plan path -> path after the change
        self.targets = [c for c in changes if c.symbol != MODULE and c.action != "delete"]
        methods = defaultdict(list)
        for c in self.targets:
            if "." in _current(c):
                methods[_short(_current(c))].append(c)
        self.method_count = {k: len(v) for k, v in methods.items()}
        self.by_word: dict[str, list[_Change]] = defaultdict(list)  # short name (and a ctor's class) -> targets
        for c in self.targets:
            name = _current(c)
            self.by_word[_short(name)].append(c)
            if _short(name) in _CTOR or (_parent(name) and _short(name) == _short(_parent(name))):
                self.by_word[_short(_parent(name))].append(c)
        self._visible: dict[tuple[str, str], bool] = {}
        self._imports: dict[str, list[tuple[str, str, str | None, Target, Target]]] = {}

    def imports(self, v: _Version) -> list[tuple[str, str, str | None, Target, Target]]:
        """(local, spec, imported, target of spec, target of spec.imported) per import binding of a file."""
        if v.path not in self._imports:
            out = []
            lang = v.language or ""
            for local, spec, imported in v.parsed.bindings() if v.parsed else []:
                target = self.modules.resolve(lang, spec, v.path)
                sub = (
                    self.modules.submodule(lang, spec, imported, v.path)
                    if imported not in (None, "*", "default")
                    else Target()
                )
                out.append((local, spec, imported, target, sub))
            self._imports[v.path] = out
        return self._imports[v.path]

    def same_package(self, a: _Version, b_file: str) -> bool:
        lang = _PACKAGE_LANGS.get(a.language or "")
        return (
            bool(lang)
            and language_for_path(b_file) == a.language
            and posixpath.dirname(a.path) == posixpath.dirname(b_file)
        )

    def visible(self, a: _Version, b_file: str) -> bool:
        key = (a.path, b_file)
        if key not in self._visible:
            self._visible[key] = (
                a.path == b_file
                or self.same_package(a, b_file)
                or any(t.covers(b_file) or s.covers(b_file) for _, _, _, t, s in self.imports(a))
            )
        return self._visible[key]

    def candidates(self, a: _Version, refs: References) -> list[_Change]:
        """Targets whose name (or, for a constructor, whose class name) the references mention at all, also
        through an import alias (``from m import load as read_file``)."""
        words = refs.names | {m for _, m in refs.members}
        words |= {imported for local, _s, imported, _t, _u in self.imports(a) if imported and local in words}
        out: dict[int, _Change] = {}
        for w in words:
            for c in self.by_word.get(w, ()):
                out[id(c)] = c
        return list(out.values())

    def _module_member(self, a: _Version, refs: References, b_file: str, name: str) -> bool:
        """``mod.name`` / ``pkg.sub.name`` where ``mod`` is an imported module covering ``b_file``."""
        recvs = {r for r, m in refs.members if m == name and r}
        if not recvs:
            return False
        for local, spec, imported, target, sub in self.imports(a):
            for r in recvs:
                head, _, rest = r.partition(".")
                if head != local:
                    continue
                lang = a.language or ""
                if imported is None or imported == "default":
                    t = self.modules.resolve(lang, f"{spec}.{rest}", a.path) if rest and lang == "python" else target
                else:
                    t = self.modules.submodule(lang, spec, f"{imported}.{rest}" if rest else imported, a.path)
                if t.covers(b_file) or (not rest and imported is None and target.covers(b_file)):
                    return True
        return False

    def strength(self, a: _Change, refs: References, b: _Change) -> int:
        """3: a resolved reference; 1: a method of a visible class called on some object; 0: none."""
        av = a.version
        if av is None:
            return 0
        b_file = self.new_path_of.get(b.path, b.path)
        name = _current(b)
        short, parent = _short(name), _parent(name)
        bv_kind = b.kind
        if not parent:  # a top-level definition
            if short in refs.names and (av.path == b_file or self.same_package(av, b_file)):
                return 3
            for local, _spec, imported, target, _sub in self.imports(av):
                if not target.covers(b_file):
                    continue
                if imported == "*":
                    if short in refs.names:
                        return 3
                elif local in refs.names and (imported == short or (imported in ("default", None) and local == short)):
                    return 3  # from m import name [as alias]; import Name from './m'; const Name = require('./m')
            if self._module_member(av, refs, b_file, short):
                return 3  # module.name, package.module.name
            return 0
        parent_short = _short(parent)
        parent_kind = b.version.kind.get(parent) if b.version else None
        if parent_kind in ("function", "method") and bv_kind != "method":  # nested in a function: from siblings
            same = av.path == b_file and a.symbol.startswith(parent + ".") and short in refs.names
            return 3 if same else 0
        same_type = a.symbol.startswith(parent + ".") and (av.path == b_file or self.same_package(av, b_file))
        if same_type and any(r in refs.self_names for r, m in refs.members if m == short):
            return 3
        visible = self.visible(av, b_file)
        if not visible:
            return 0
        if (parent_short, short) in refs.members or (parent, short) in refs.members:
            return 3  # Class.method(...)
        if (short in _CTOR or short == parent_short) and parent_short in refs.called:
            # Class(...) / new Class(): the constructor, unless the class itself changes (then the class)
            return 0 if any(_current(c) == parent and c.path == b.path for c in self.targets) else 3
        if short.startswith("__") or short in _CTOR or short == parent_short:
            return 0
        if bv_kind in ("method", "function") and self.method_count.get(short, 0) == 1:
            # obj.method(...) on an object of unknown type (or self.method inherited): the one changed method
            # of that name, in a class the caller can see
            receivers = {r for r, m in refs.called_members if m == short}
            module_locals = {local for local, _s, imported, _t, _u in self.imports(av) if imported is None}
            if any(
                r.partition(".")[0] not in module_locals and not (r[:1].isupper() and r != parent_short)
                for r in receivers
            ):
                return 1
        return 0


# --------------------------------------------------------------------------- the plan


@dataclass
class ReferencePlan:
    plan: Plan
    n_edges: int
    n_cross_file_edges: int
    difficulty: str
    dropped_edges: int
    weak_edges: int = 0
    order_depth: int = 1
    n_code_files: int = 0
    module_only: bool = False
    undecodable_files: int = 0


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


def _longest_path(nodes: list[str], succ: Mapping[str, set[str]]) -> int:
    """Files on the longest dependency chain (1 when no file depends on another)."""
    memo: dict[str, int] = {}

    def depth(n: str, stack: set[str]) -> int:
        if n in memo:
            return memo[n]
        stack.add(n)
        best = 1 + max((depth(m, stack) for m in succ.get(n, ()) if m not in stack), default=0)
        stack.discard(n)
        memo[n] = best
        return best

    return max((depth(n, set()) for n in nodes), default=0)


def difficulty_of(n_code_files: int, depth: int, branching: bool) -> str:
    """easy: at most one code file changes (tests, docs and config aside); hard: a chain of three or more
    dependent files, a file that several others depend on (or that depends on several) among 3+ code
    files, or 5+ code files; medium: the rest."""
    if n_code_files <= 1:
        return "easy"
    if depth >= 3 or n_code_files >= 5 or (branching and n_code_files >= 3):
        return "hard"
    return "medium"


def build_reference_plan(
    task: Mapping[str, Any],
    old_files: Mapping[str, str | None],
    new_files: Mapping[str, str | None],
    is_test: Callable[[str], bool] = lambda p: False,
    tree: Iterable[str] = (),
    diffs: Mapping[str, FileDiff] | None = None,
) -> ReferencePlan:
    """``old_files``: base path -> text (None: binary/unreadable); ``new_files``: new path -> text;
    ``tree``: the base file tree (module resolution); ``diffs``: the gold patch by path after the change
    (hunks; without it a line diff of the two texts is used)."""
    changes: list[_Change] = []
    file_meta: dict[str, dict[str, Any]] = {}
    diffs = diffs or {}
    undecodable = 0
    for fc in task["file_changes"]:
        if fc["category"] in NOISE_CATEGORIES:
            continue
        status, new_path = fc["status"], fc["path"]
        old_path = fc.get("old_path") or new_path
        if status == "C":
            status = "A"
        plan_path = new_path if status == "A" else old_path
        if plan_path in file_meta:
            continue
        file_meta[plan_path] = {
            "new_path": new_path,
            "test": fc["category"] == "test" or is_test(new_path),
            "status": status,
        }
        old = old_files.get(old_path) if status != "A" else ""
        new = new_files.get(new_path) if status != "D" else ""
        if old is None or new is None:
            undecodable += 1
        supported = language_for_path(new_path) is not None and old is not None and new is not None
        file_changes: list[_Change] = []
        if status == "A":
            if supported:
                v = _Version(new_path, new)
                file_changes = [_Change(plan_path, n, "add", v.kind[n], version=v) for n in v.top_level()]
            file_changes = file_changes or [_Change(plan_path, MODULE, "add")]
        elif status == "D":
            file_changes = [_Change(plan_path, MODULE, "delete")]
        else:
            module = True
            if supported:
                ov, nv = _Version(old_path, old or ""), _Version(new_path, new or "")
                fd = diffs.get(new_path)
                hunks = fd.hunks if fd is not None and not fd.binary else line_hunks(old or "", new or "")
                file_changes, module = symbol_changes(plan_path, ov, nv, hunks)
            if status == "R":
                file_changes.insert(0, _Change(plan_path, MODULE, "rename"))
            elif module or not file_changes:
                file_changes.insert(0, _Change(plan_path, MODULE, "modify"))
        changes.extend(file_changes)

    by_key = {c.key: c for c in changes}
    new_path_of = {p: m["new_path"] for p, m in file_meta.items()}
    tree_after = set(tree) | {m["new_path"] for m in file_meta.values() if m["status"] != "D"}
    resolver = _Resolver(changes, new_path_of, tree_after)

    # candidate edges: a depends on b
    cands: list[tuple[int, int, int, str, str]] = []
    for a in changes:
        if a.symbol == MODULE or a.action == "delete" or a.version is None or a.version.parsed is None:
            continue
        name = _current(a)
        v = a.version
        if a.action == "add":
            runs = [(v.start.get(name, 1), v.end.get(name, 0))]
        else:
            runs = v.own_runs(name)
        refs = References()
        for lo, hi in runs:
            r = v.parsed.references(lo, hi)
            refs.names |= r.names
            refs.called |= r.called
            refs.members |= r.members
            refs.called_members |= r.called_members
            refs.self_names |= r.self_names
        a_test = file_meta[a.path]["test"]
        for b in resolver.candidates(v, refs):
            if b is a:
                continue
            if a.path == b.path and (_ancestor_in(a.symbol, {b.symbol}) or _ancestor_in(b.symbol, {a.symbol})):
                continue
            if file_meta[b.path]["test"] and not a_test:
                continue  # code never depends on a test
            s = resolver.strength(a, refs, b)
            if s:
                cands.append((-s, 0 if b.action == "add" else 1, 1 if a_test else 0, a.key, b.key))
    cands.sort()

    sym_graph: dict[str, set[str]] = defaultdict(set)  # a -> b (a depends on b)
    file_graph: dict[str, set[str]] = defaultdict(set)  # file(a) -> file(b)
    n_edges = n_cross = dropped = weak = 0
    for neg_s, _, _, ka, kb in cands:
        a, b = by_key[ka], by_key[kb]
        if kb in sym_graph[ka]:
            continue
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
        weak += neg_s == -1
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
        affected.append(
            AffectedFile(
                path=p,
                role=role,
                changes=[
                    Change(
                        symbol=c.symbol,
                        action=c.action,
                        description=_describe(c, meta["new_path"]),
                        depends_on=sorted(c.depends_on),
                        depended_by=sorted(c.depended_by),
                    )
                    for c in fchanges
                ],
            )
        )

    desc = (task.get("description") or "").strip()
    summary = desc.splitlines()[0][:200] if desc else f"Change {len(paths)} files"
    chain = " -> ".join(order)
    rationale = (
        f"The gold change touches {len(paths)} files with {len(changes)} symbol changes and "
        f"{n_edges} dependency edges ({n_cross} across files); files are ordered so that what a "
        f"change uses is changed first: {chain}."
    )
    plan = Plan(task_summary=summary, affected_files=affected, execution_order=order, rationale=rationale)

    code_files = [p for p in paths if not file_meta[p]["test"] and language_for_path(file_meta[p]["new_path"])]
    out_deg: dict[str, set[str]] = defaultdict(set)
    in_deg: dict[str, set[str]] = defaultdict(set)
    for a_path, targets in file_graph.items():
        for b_path in targets:
            out_deg[a_path].add(b_path)
            in_deg[b_path].add(a_path)
    branching = any(len(v) >= 2 for v in out_deg.values()) or any(len(v) >= 2 for v in in_deg.values())
    depth = _longest_path(paths, file_graph)
    return ReferencePlan(
        plan=plan,
        n_edges=n_edges,
        n_cross_file_edges=n_cross,
        dropped_edges=dropped,
        weak_edges=weak,
        difficulty=difficulty_of(len(code_files), depth, branching),
        order_depth=depth,
        n_code_files=len(code_files),
        module_only=all(c.symbol == MODULE for c in changes),
        undecodable_files=undecodable,
    )


# --------------------------------------------------------------------------- the table

REFERENCE_SCHEMA = {
    "task_id": pl.Utf8,
    "source": pl.Utf8,
    "status": pl.Utf8,
    "detail": pl.Utf8,
    "plan_json": pl.Utf8,
    "valid": pl.Boolean,
    "usable": pl.Boolean,
    "violations": pl.List(pl.Utf8),
    "n_files": pl.Int64,
    "n_code_files": pl.Int64,
    "n_changes": pl.Int64,
    "n_edges": pl.Int64,
    "n_cross_file_edges": pl.Int64,
    "weak_edges": pl.Int64,
    "dropped_edges": pl.Int64,
    "order_depth": pl.Int64,
    "difficulty": pl.Utf8,
    "module_only": pl.Boolean,
    "undecodable_files": pl.Int64,
    "seconds": pl.Float64,
}
REFERENCE_STATUSES = ("ok", "filtered", "skipped", "error")


def build_reference_plans(
    tasks: pl.DataFrame, contexts: pl.DataFrame, is_test=lambda p: False, progress=None, drop_module_only: bool = False
) -> pl.DataFrame:
    """One row per task. Tasks and contexts are joined by id and read one row at a time."""
    ctx_cols = [c for c in ("task_id", "status", "file_tree", "symbols") if c in contexts.columns]
    joined = tasks.join(contexts.select(ctx_cols).rename({"status": "_ctx_status"}), on="task_id", how="left")
    chunks: list[pl.DataFrame] = []
    rows: list[dict[str, Any]] = []
    n = joined.height
    for i, row in enumerate(joined.iter_rows(named=True)):
        ctx = (
            None
            if row.get("_ctx_status") is None
            else {
                "status": row["_ctx_status"],
                "file_tree": row.get("file_tree") or [],
                "symbols": row.get("symbols") or [],
            }
        )
        rows.append(reference_plan_for_task(row, ctx, is_test=is_test, drop_module_only=drop_module_only))
        if len(rows) >= 256:
            chunks.append(pl.DataFrame(rows, schema=REFERENCE_SCHEMA))
            rows = []
        if progress:
            progress(i + 1, n)
    if rows or not chunks:
        chunks.append(pl.DataFrame(rows, schema=REFERENCE_SCHEMA) if rows else pl.DataFrame(schema=REFERENCE_SCHEMA))
    return pl.concat(chunks, how="vertical")


def reference_plan_for_task(
    task: Mapping[str, Any], context: Mapping[str, Any] | None, is_test=lambda p: False, drop_module_only: bool = False
) -> dict[str, Any]:
    """One row of ``reference_plans``: the plan, its validation, and why when there is none.

    Any failure on this one task is its own ``error`` row naming the task, never the whole table's."""
    t0 = time.perf_counter()
    row: dict[str, Any] = {k: None for k in REFERENCE_SCHEMA}
    row.update(task_id=task["task_id"], source="reference", valid=False, usable=False, violations=[])
    try:
        _fill_row(row, task, context, is_test, drop_module_only)
    except Exception as exc:  # noqa: BLE001 - one bad task is a counted row, not a failed run
        row.update(
            status="error",
            detail=f"{task['task_id']}: {type(exc).__name__}: {str(exc)[:300]}",
            valid=False,
            usable=False,
        )
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def _fill_row(
    row: dict[str, Any], task: Mapping[str, Any], context: Mapping[str, Any] | None, is_test, drop_module_only: bool
) -> None:
    from distill_assets.plans.validator import PlanContext, validate_plan
    from distill_assets.tasks.snapshot import SnapshotError, after_snapshot, base_snapshot, is_probably_binary

    if context is None or context["status"] != "ok":
        row.update(status="skipped", detail=f"no task context ({context['status'] if context else 'missing'})")
        return
    plan_changes = [c for c in task["file_changes"] if c["category"] not in NOISE_CATEGORIES]
    if not plan_changes:
        row.update(status="skipped", detail="the change touches no plan-relevant files")
        return
    try:
        base, after = base_snapshot(task), after_snapshot(task)
    except SnapshotError as exc:
        row.update(status="error", detail=f"gold patch does not apply at base: {exc}")
        return

    def texts(snap, paths):
        if snap is None:
            return {}
        out = {}
        for p, b in snap.read(paths).items():
            if is_probably_binary(b):
                out[p] = None
                continue
            try:
                out[p] = b.decode("utf-8")
            except UnicodeDecodeError:
                out[p] = None  # not UTF-8: treated as binary (no symbols), counted
        return out

    old = texts(base, [c.get("old_path") or c["path"] for c in plan_changes if c["status"] not in ("A", "C")])
    new = texts(after, [c["path"] for c in plan_changes if c["status"] != "D"])
    diffs = {}
    patch = (task.get("gold_patch") or "") + (task.get("test_patch") or "")
    if patch and not task.get("inline_files"):
        diffs = {fd.path: fd for fd in parse_patch(patch)}
    ref_plan = build_reference_plan(task, old, new, is_test=is_test, tree=context["file_tree"], diffs=diffs)
    report = validate_plan(ref_plan.plan, PlanContext.from_rows(context["file_tree"], context["symbols"]))
    status, detail = "ok", ""
    if drop_module_only and ref_plan.module_only:
        status, detail = "filtered", "module_only: every change is a whole-file <module> change"
    row.update(
        status=status,
        detail=detail,
        plan_json=ref_plan.plan.to_json(),
        valid=report.valid,
        usable=report.valid and status == "ok",
        violations=[str(v) for v in report.violations],
        n_files=len(ref_plan.plan.affected_files),
        n_code_files=ref_plan.n_code_files,
        n_changes=sum(len(f.changes) for f in ref_plan.plan.affected_files),
        n_edges=ref_plan.n_edges,
        n_cross_file_edges=ref_plan.n_cross_file_edges,
        weak_edges=ref_plan.weak_edges,
        dropped_edges=ref_plan.dropped_edges,
        order_depth=ref_plan.order_depth,
        difficulty=ref_plan.difficulty,
        module_only=ref_plan.module_only,
        undecodable_files=ref_plan.undecodable_files,
    )


@dataclass
class PlansSummary:
    """What the UI shows of a reference_plans table and what its blocking check judges."""

    statuses: dict[str, int]
    built: int  # plans that exist (ok or filtered)
    invalid: int  # built plans the validator rejects (kept, never used)
    usable: int  # valid plans of kept tasks: what training and evaluation use
    difficulty: dict[str, int]
    violations: dict[str, int]  # violation code -> count
    violation_examples: dict[str, list[str]]  # code -> up to 3 "task: message"
    reasons: dict[str, int]  # skipped / filtered / error details, counted

    @property
    def invalid_rate(self) -> float:
        return self.invalid / self.built if self.built else 0.0


def summarize_reference_plans(df: pl.DataFrame) -> PlansSummary:
    statuses = {s: int(df.filter(pl.col("status") == s).height) for s in REFERENCE_STATUSES}
    built_df = df.filter(pl.col("plan_json").is_not_null())
    usable_df = df.filter(pl.col("usable"))
    difficulty = {d: int(usable_df.filter(pl.col("difficulty") == d).height) for d in DIFFICULTIES}
    violations: dict[str, int] = defaultdict(int)
    examples: dict[str, list[str]] = defaultdict(list)
    for r in built_df.filter(~pl.col("valid")).select("task_id", "violations").iter_rows(named=True):
        for v in r["violations"] or []:
            code = v.split(":", 1)[0]
            violations[code] += 1
            if len(examples[code]) < 3:
                examples[code].append(f"{r['task_id']}: {v}")
    reasons: dict[str, int] = defaultdict(int)
    for status, d in df.filter(pl.col("status") != "ok").select("status", "detail").iter_rows():
        d = d or ""
        if status == "filtered":
            key = d.split(":", 1)[0]
        elif status == "error":
            m = re.match(r"^\S+: (\w+(?:Error|Exception|Exit|Interrupt)\w*): ", d)
            key = m.group(1) if m else d[:80]
        else:
            key = d
        reasons[f"{status}: {key}"[:140]] += 1
    return PlansSummary(
        statuses=statuses,
        built=built_df.height,
        invalid=int((~built_df["valid"]).sum()) if built_df.height else 0,
        usable=usable_df.height,
        difficulty=difficulty,
        violations=dict(violations),
        violation_examples=dict(examples),
        reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    )
