"""Language detection and cached tree-sitter grammars, parsers and queries.

Grammars come from ``tree_sitter_language_pack`` (``get_language`` /
``get_parser``).  Version 0.13.0 of that package bundles compiled grammars in
its wheel; the 1.x line instead downloads grammars from GitHub the first time
a language is used, which fails on machines without general internet access.
A failure to load a grammar is reported as :class:`GrammarUnavailableError`
(never swallowed: an index silently missing a language would be worse).
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any, Iterable

import tree_sitter

__all__ = [
    "SUPPORTED_LANGUAGES",
    "GrammarUnavailableError",
    "language_for_path",
    "get_ts_language",
    "parse",
    "compile_query",
    "query_captures",
    "to_bytes",
    "node_text",
]

# Our language name -> tree_sitter_language_pack grammar name (identical today).
SUPPORTED_LANGUAGES: tuple[str, ...] = (
    "python",
    "javascript",
    "typescript",
    "tsx",
    "go",
    "rust",
    "java",
)

_EXTENSIONS: dict[str, str] = {
    ".py": "python",
    ".pyi": "python",
    ".pyw": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".ts": "typescript",  # includes .d.ts
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".java": "java",
}


class GrammarUnavailableError(RuntimeError):
    """The tree-sitter grammar for a supported language could not be loaded."""


def language_for_path(path: str) -> str | None:
    """Language name for a file path from its extension (case-insensitive), else None.

    ``.d.ts`` maps to ``"typescript"``; ``.tsx`` to ``"tsx"`` (its own grammar);
    ``.jsx``/``.mjs``/``.cjs`` to ``"javascript"``; ``.pyi`` to ``"python"``.
    """
    ext = os.path.splitext(path)[1].lower()
    return _EXTENSIONS.get(ext)


@functools.lru_cache(maxsize=None)
def get_ts_language(language: str) -> tree_sitter.Language:
    """The cached ``tree_sitter.Language`` for one of SUPPORTED_LANGUAGES."""
    if language not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {language!r}")
    try:
        from tree_sitter_language_pack import get_language
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise GrammarUnavailableError("tree_sitter_language_pack is not installed") from exc
    try:
        return get_language(language)  # type: ignore[arg-type]
    except Exception as exc:  # e.g. 1.x DownloadError when offline
        raise GrammarUnavailableError(
            f"tree-sitter grammar {language!r} could not be loaded from "
            f"tree_sitter_language_pack ({type(exc).__name__}: {exc}); "
            "tree-sitter-language-pack==0.13.0 bundles its grammars and works offline"
        ) from exc


# tree_sitter.Parser objects are not safe to share between threads: keep one
# parser per (thread, language).  Languages and compiled queries are shared.
_thread_state = threading.local()


def _parser(language: str) -> Any:
    parsers: dict[str, Any] | None = getattr(_thread_state, "parsers", None)
    if parsers is None:
        parsers = _thread_state.parsers = {}
    parser = parsers.get(language)
    if parser is None:
        get_ts_language(language)  # raises GrammarUnavailableError with a useful message
        from tree_sitter_language_pack import get_parser

        parser = parsers[language] = get_parser(language)  # type: ignore[arg-type]
    return parser


def to_bytes(source: bytes | str) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, (bytearray, memoryview)):
        return bytes(source)
    try:
        return source.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        return source.encode("utf-8", errors="replace")


def parse(language: str, source: bytes) -> tree_sitter.Tree:
    """Parse ``source``; tree-sitter is error tolerant and does not raise on bad syntax."""
    return _parser(language).parse(source)


def node_text(node: tree_sitter.Node | None) -> str:
    if node is None:
        return ""
    text = node.text
    return text.decode("utf-8", errors="replace") if text is not None else ""


def _known_kinds(lang: tree_sitter.Language, kinds: Iterable[str]) -> list[str]:
    return [k for k in kinds if lang.id_for_node_kind(k, True) is not None]


@functools.lru_cache(maxsize=None)
def compile_query(language: str, source: str) -> tree_sitter.Query:
    lang = get_ts_language(language)
    return tree_sitter.Query(lang, source)


@functools.lru_cache(maxsize=None)
def kinds_query(language: str, kinds: tuple[str, ...], capture: str) -> tree_sitter.Query | None:
    """A query capturing every node whose type is one of ``kinds`` (unknown kinds dropped)."""
    lang = get_ts_language(language)
    present = _known_kinds(lang, kinds)
    if not present:
        return None
    alternatives = " ".join(f"({k})" for k in present)
    return tree_sitter.Query(lang, f"[{alternatives}] @{capture}")


def query_captures(
    query: tree_sitter.Query,
    node: tree_sitter.Node,
    capture: str,
    point_range: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> list[tree_sitter.Node]:
    """Nodes captured as ``capture`` (py-tree-sitter >= 0.25 QueryCursor API, with a fallback)."""
    cursor_cls = getattr(tree_sitter, "QueryCursor", None)
    if cursor_cls is not None:
        cursor = cursor_cls(query)
        if point_range is not None:
            cursor.set_point_range(point_range[0], point_range[1])
        result = cursor.captures(node)
    else:  # pragma: no cover - py-tree-sitter < 0.25
        kwargs = {}
        if point_range is not None:
            kwargs = {"start_point": point_range[0], "end_point": point_range[1]}
        result = query.captures(node, **kwargs)
    if isinstance(result, dict):
        nodes = list(result.get(capture, ()))
    else:  # pragma: no cover - old list API
        nodes = [n for n, name in result if name == capture]
    nodes.sort(key=lambda n: (n.start_byte, -n.end_byte))  # document order, whatever order the cursor gave
    return nodes
