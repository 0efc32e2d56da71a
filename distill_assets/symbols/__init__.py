"""Symbol index for source code, built with tree-sitter (plain Python, no Dagster).

Grammars come from ``tree_sitter_language_pack`` (``get_language``/``get_parser``,
cached per language; parsers are kept per thread).  Use
``tree-sitter-language-pack==0.13.0``: it bundles its grammars, while the 1.x
line downloads them from GitHub on first use (fails offline with
:class:`GrammarUnavailableError`).

Languages (``SUPPORTED_LANGUAGES``), by file extension (case-insensitive):

=============  =================================
python         .py .pyi .pyw
javascript     .js .jsx .mjs .cjs
typescript     .ts .mts .cts (so also .d.ts)
tsx            .tsx
go             .go
rust           .rs
java           .java
=============  =================================

Symbol kinds (``SYMBOL_KINDS``):

``class``
    Python/JS/TS classes (also ``const A = class {}``), Java classes and records.
``function``
    Free functions, including nested ones ("outer.inner"), JS/TS
    ``const f = () => {}`` / ``function`` expressions bound to a variable, TS
    overload / ``declare`` signatures, Rust functions outside impl/trait.
``method``
    Callables whose nearest enclosing scope is a class-like container (class,
    interface, enum, struct, trait, Rust ``impl``): Python/JS/TS methods, JS/TS
    class fields holding arrow functions, TS interface method signatures, Java
    methods and constructors (named ``Class.Class``), Go methods ("Type.Method",
    pointer receivers stripped) and Go interface methods, Rust impl and trait
    methods ("Type.method"; the impl's self type without path or generics).
``interface``
    TS interfaces, Java interfaces and ``@interface`` annotation types, Go interfaces.
``struct``
    Go structs, Rust structs and unions.
``enum``
    TS/Java/Rust enums.
``trait``
    Rust traits.
``type``
    Type aliases: Python ``type X = ...``, TS ``type X = ...``, Go ``type X Y`` /
    ``type X = Y``, Rust ``type X = ...``.
``module``
    Rust inline ``mod m { ... }``, TS ``namespace``/``module`` blocks.  They
    qualify the names inside them ("m.helper").

Qualified names join enclosing named scopes with ``"."`` ("Outer.Inner.method").
Anonymous scopes (e.g. ``export default class {}``) are skipped in names.  Not
symbols: variables/constants/fields, object-literal methods, lambdas and
callbacks, Rust macros, ``mod m;`` declarations, Java anonymous classes (their
methods are qualified by the enclosing method: "Outer.run.compare").

Spans are 1-based inclusive lines (Python spans may run over trailing
comment lines indented inside the body, as tree-sitter puts them in the block).  They include what the grammar attaches to
the definition plus decorations: Python decorators (the ``@`` lines), Java
annotations, JS/TS decorators and the ``export`` keyword, Rust ``#[...]``
attribute lines directly above the item.  Preceding comments/doc comments are
not included.  Duplicates are possible (TS overloads, JS getter/setter pairs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ._extract import extract as _extract
from ._names import identifiers as _identifiers
from ._names import imports as _imports
from ._modules import ModuleResolver, Target
from ._refs import Binding, References
from ._refs import import_bindings as _import_bindings
from ._refs import references as _references
from ._parsing import (
    SUPPORTED_LANGUAGES,
    GrammarUnavailableError,
    language_for_path,
    parse as _parse,
    to_bytes as _to_bytes,
)

__all__ = [
    "SUPPORTED_LANGUAGES",
    "SYMBOL_KINDS",
    "GrammarUnavailableError",
    "Binding",
    "ModuleResolver",
    "ParsedFile",
    "References",
    "Symbol",
    "Target",
    "SymbolIndex",
    "extract_symbols",
    "identifiers_in_span",
    "imported_names",
    "language_for_path",
]

SYMBOL_KINDS: tuple[str, ...] = (
    "class",
    "function",
    "method",
    "interface",
    "struct",
    "enum",
    "trait",
    "type",
    "module",
)


@dataclass(frozen=True)
class Symbol:
    path: str  # repo-relative path, as given
    name: str  # qualified name ("Class.method", "Outer.Inner.method", Go/Rust "Type.method")
    kind: str  # one of SYMBOL_KINDS
    start_line: int  # 1-based, inclusive
    end_line: int  # 1-based, inclusive
    language: str  # one of SUPPORTED_LANGUAGES


_SYMBOL_FIELDS = tuple(f.name for f in fields(Symbol))


def extract_symbols(path: str, source: bytes | str) -> list[Symbol]:
    """Definitions in one file, ordered by start line (enclosing symbols first).

    Returns [] for unsupported paths.  Syntax errors never raise: tree-sitter
    recovers and the definitions it still recognises are returned.
    """
    language = language_for_path(path)
    if language is None:
        return []
    tree = _parse(language, _to_bytes(source))
    return [
        Symbol(path, name, kind, start, end, language)
        for name, kind, start, end, _sb, _eb in _extract(language, tree.root_node)
    ]


def identifiers_in_span(path: str, source: bytes | str, start_line: int, end_line: int) -> set[str]:
    """Identifier-like tokens that start on lines ``start_line..end_line`` (1-based, inclusive).

    Includes plain identifiers, attribute/property/field names and type names
    (``self.pricing.compute_total(x)`` -> {"self", "pricing", "compute_total", "x"}),
    also names being defined and parameters.  Keywords (JS ``this``, Rust
    ``self``; Python's ``self`` is an ordinary identifier and is included),
    strings, comments and numbers are excluded; identifiers inside Rust macro
    arguments are included.  Empty set for unsupported paths or an empty span.
    """
    language = language_for_path(path)
    if language is None or end_line < start_line or end_line < 1:
        return set()
    tree = _parse(language, _to_bytes(source))
    return _identifiers(language, tree.root_node, start_line, end_line)


def imported_names(path: str, source: bytes | str) -> set[str]:
    """Module paths and names brought in by imports anywhere in the file (best effort).

    * python: ``import a.b`` -> {"a.b", "a"}; ``import a.b as z`` -> {"a.b", "z"};
      ``from a.b import c as d`` -> {"a.b", "c", "d"}; relative ``from ..p import q``
      -> {"..p", "p", "q"}; ``*`` adds nothing beyond the module.
    * javascript/typescript: ``import`` sources ("react", "./util"), default,
      namespace and named imports with their aliases; ``require("x")`` and
      ``import("x")`` sources plus the names bound by ``const {a, b: c} = require(...)``
      (-> a, b, c); re-exports ``export {a} from "x"``; TS ``import fs = require("fs")``.
    * go: import paths ("net/http"), explicit aliases, and the implied package
      name (last path segment, skipping a ``/vN`` suffix: "http").
    * rust: ``use`` paths joined with ``::`` and the leaf names/aliases
      (``use std::collections::{HashMap, HashSet as HS}`` -> {"std::collections",
      "std::collections::HashMap", "HashMap", "std::collections::HashSet", "HashSet", "HS"}),
      glob imports give the module path; ``extern crate``.
    * java: the full import ("java.util.List") and its last segment ("List");
      wildcard imports give only the package/class path.
    """
    language = language_for_path(path)
    if language is None:
        return set()
    tree = _parse(language, _to_bytes(source))
    return _imports(language, tree.root_node)


class ParsedFile:
    """One file parsed once: its symbols, what a line span refers to, and what its imports bind."""

    def __init__(self, path: str, source: bytes | str):
        self.path = path
        self.language = language_for_path(path)
        self.source = _to_bytes(source)
        self._tree = _parse(self.language, self.source) if self.language else None
        self._symbols: list[Symbol] | None = None
        self._bindings: list[Binding] | None = None

    def symbols(self) -> list[Symbol]:
        if self._symbols is None:
            self._symbols = (
                []
                if self._tree is None
                else [
                    Symbol(self.path, name, kind, start, end, self.language)
                    for name, kind, start, end, _sb, _eb in _extract(self.language, self._tree.root_node)
                ]
            )
        return self._symbols

    def references(self, start_line: int, end_line: int) -> References:
        """Names used, members accessed and "this" names on lines ``start_line..end_line`` (1-based)."""
        if self._tree is None or end_line < start_line:
            return References()
        return _references(self.language, self._tree.root_node, start_line, end_line)

    def bindings(self) -> list[Binding]:
        """(local name, module spec, imported name | None | "*") for every import of the file."""
        if self._bindings is None:
            self._bindings = [] if self._tree is None else _import_bindings(self.language, self._tree.root_node)
        return self._bindings


@dataclass
class SymbolIndex:
    """Symbols of many files, with a per-path view."""

    symbols: list[Symbol] = field(default_factory=list)
    by_path: dict[str, list[Symbol]] = field(default_factory=dict)

    @classmethod
    def build(cls, files: Mapping[str, bytes | str]) -> "SymbolIndex":
        """Index every supported file of ``files`` (path -> content); others are skipped."""
        by_path: dict[str, list[Symbol]] = {}
        for path in sorted(files):
            if language_for_path(path) is None:
                continue
            by_path[path] = extract_symbols(path, files[path])
        return cls._from_by_path(by_path)

    @classmethod
    def _from_by_path(cls, by_path: dict[str, list[Symbol]]) -> "SymbolIndex":
        symbols = [s for path in sorted(by_path) for s in by_path[path]]
        return cls(symbols=symbols, by_path=by_path)

    def names_in(self, path: str) -> set[str]:
        """Qualified names of the symbols defined in ``path`` (empty if unknown)."""
        return {s.name for s in self.by_path.get(path, ())}

    def symbols_overlapping(self, path: str, start_line: int, end_line: int) -> list[Symbol]:
        """Symbols of ``path`` whose span shares at least one line with ``start_line..end_line``."""
        return [s for s in self.by_path.get(path, ()) if s.start_line <= end_line and s.end_line >= start_line]

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per symbol with exactly the Symbol fields (e.g. for ``polars.DataFrame``)."""
        return [asdict(s) for s in self.symbols]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> "SymbolIndex":
        """Inverse of :meth:`to_rows`; extra keys are ignored.

        Paths indexed with no symbols are not represented in rows, so they are
        absent from ``by_path`` after a round trip.
        """
        by_path: dict[str, list[Symbol]] = {}
        for row in rows:
            values = {name: row[name] for name in _SYMBOL_FIELDS}
            values["start_line"] = int(values["start_line"])
            values["end_line"] = int(values["end_line"])
            sym = Symbol(**values)
            by_path.setdefault(sym.path, []).append(sym)
        for syms in by_path.values():
            syms.sort(key=lambda s: (s.start_line, -s.end_line))
        return cls._from_by_path(by_path)
