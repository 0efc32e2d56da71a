"""Which files of a repository an import names: module specs resolved against the file tree.

``ModuleResolver(paths).resolve(language, spec, from_path)`` returns a :class:`Target`: the files the
import names, plus folders whose files it makes visible. A package import (a Python package's
``__init__.py``, a JS folder with its ``index``) stands for every file under that folder, which is how
packages re-export their modules (``import click`` then ``click.echo`` defined in ``click/utils.py``).
A Go import names one folder (one package: its files, not sub-folders). Imports of anything outside the
repository (the standard library, third-party packages) resolve to nothing.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

_JS_EXTS = (".js", ".ts", ".tsx", ".jsx", ".mjs", ".cjs", ".mts", ".cts", ".d.ts")


@dataclass(frozen=True)
class Target:
    files: frozenset[str] = frozenset()
    trees: frozenset[str] = frozenset()  # every file under these folders ("" is the whole repository)
    folders: frozenset[str] = frozenset()  # files directly in these folders (Go packages)

    def __bool__(self) -> bool:
        return bool(self.files or self.trees or self.folders)

    def covers(self, path: str) -> bool:
        if path in self.files:
            return True
        d = posixpath.dirname(path)
        if d in self.folders:
            return True
        return any(t == "" or path.startswith(t + "/") for t in self.trees)


@dataclass
class ModuleResolver:
    paths: Iterable[str]
    _files: set[str] = field(init=False)
    _dirs: set[str] = field(init=False)
    _by_suffix: dict[str, list[str]] = field(init=False)

    def __post_init__(self) -> None:
        self._files = set(self.paths)
        self._dirs = set()
        for p in self._files:
            d = posixpath.dirname(p)
            while d and d not in self._dirs:
                self._dirs.add(d)
                d = posixpath.dirname(d)
        self._by_suffix = defaultdict(list)
        for p in list(self._files) + sorted(self._dirs):
            parts = p.split("/")
            for i in range(len(parts)):
                self._by_suffix["/".join(parts[i:])].append(p)

    def _suffix(self, rel: str) -> list[str]:
        return self._by_suffix.get(rel, [])

    # ------------------------------------------------------------------ per language

    def _python(self, spec: str, from_path: str) -> Target:
        dots = len(spec) - len(spec.lstrip("."))
        rest = spec[dots:]
        if dots:
            base = posixpath.dirname(from_path)
            for _ in range(dots - 1):
                base = posixpath.dirname(base)
            rel = posixpath.join(base, rest.replace(".", "/")) if rest else base
            cands_file = [rel + ".py", rel + ".pyi"] if rel else []
            files = {c for c in cands_file if c in self._files}
            trees = {rel} if (rel in self._dirs or rel == "") and not files else set()
            return Target(frozenset(files), frozenset(trees))
        rel = rest.replace(".", "/")
        if not rel:
            return Target()
        files = {p for ext in (".py", ".pyi") for p in self._suffix(rel + ext)}
        trees = {p for p in self._suffix(rel) if p in self._dirs}
        return Target(frozenset(files), frozenset(trees))

    def _js(self, spec: str, from_path: str) -> Target:
        if not (spec.startswith("./") or spec.startswith("../") or spec in (".", "..")):
            return Target()
        rel = posixpath.normpath(posixpath.join(posixpath.dirname(from_path), spec))
        if rel == ".":
            rel = ""
        if rel.startswith(".."):
            return Target()
        files = set()
        if rel in self._files:
            files.add(rel)
        stem = re.sub(r"\.(js|mjs|cjs|jsx)$", "", rel)
        for ext in _JS_EXTS:
            if stem + ext in self._files:
                files.add(stem + ext)
        trees = set()
        if not files and (rel in self._dirs or rel == ""):
            trees.add(rel)
        return Target(frozenset(files), frozenset(trees))

    def _go(self, spec: str) -> Target:
        segs = [s for s in spec.split("/") if s]
        external = "." in (segs[0] if segs else "")
        for k in range(len(segs), 0, -1):
            cand = "/".join(segs[-k:])
            if k == 1 and not external:
                break
            if cand in self._dirs:
                return Target(folders=frozenset({cand}))
        return Target()

    def _rust(self, spec: str, from_path: str) -> Target:
        segs = [s for s in spec.split("::") if s and s not in ("crate", "self", "super")]
        if not segs:
            return Target()
        rel = "/".join(segs)
        files = set(self._suffix(rel + ".rs")) | set(self._suffix(rel + "/mod.rs"))
        return Target(frozenset(files))

    def _java(self, spec: str) -> Target:
        rel = spec.replace(".", "/")
        files = set(self._suffix(rel + ".java"))
        folders = {p for p in self._suffix(rel) if p in self._dirs}
        return Target(frozenset(files), folders=frozenset(folders))

    def resolve(self, language: str, spec: str, from_path: str) -> Target:
        if not spec:
            return Target()
        if language == "python":
            return self._python(spec, from_path)
        if language in ("javascript", "typescript", "tsx"):
            return self._js(spec, from_path)
        if language == "go":
            return self._go(spec)
        if language == "rust":
            return self._rust(spec, from_path)
        if language == "java":
            return self._java(spec)
        return Target()

    def submodule(self, language: str, spec: str, name: str, from_path: str) -> Target:
        """``from spec import name`` where ``name`` may itself be a module (Python, Java classes, Rust)."""
        if language == "python":
            sep = "" if spec.endswith(".") else "."
            return self._python(f"{spec}{sep}{name}", from_path)
        if language == "java":
            return self._java(f"{spec}.{name}")
        if language == "rust":
            return self._rust(f"{spec}::{name}", from_path)
        return Target()
