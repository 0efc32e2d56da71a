"""Task contexts: what a model sees of the repository at the base commit.

Per task: the file tree, candidate files (the files the change touches that
exist at the base, plus nearby distractors so relevance is a real decision)
with contents cut to a token budget, and a tree-sitter symbol index.
Candidate order is a stable shuffle, so position never tells which files the
gold change touched.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from distill_assets.config import ContextConfig
from distill_assets.mining.miner import NOISE_CATEGORIES
from distill_assets.symbols import extract_symbols, language_for_path
from distill_assets.tasks.external import stable_hash
from distill_assets.tasks.snapshot import Snapshot, SnapshotError, base_snapshot, is_probably_binary

CANDIDATE = pl.Struct({"path": pl.Utf8, "content": pl.Utf8, "tokens": pl.Int64, "truncated": pl.Boolean})
SYMBOL = pl.Struct({"path": pl.Utf8, "name": pl.Utf8, "kind": pl.Utf8, "start_line": pl.Int64, "end_line": pl.Int64})

CONTEXT_SCHEMA = {
    "task_id": pl.Utf8,
    "status": pl.Utf8,  # ok | no_snapshot | snapshot_error | error
    "detail": pl.Utf8,
    "file_tree": pl.List(pl.Utf8),
    "n_tree_files": pl.Int64,
    "candidates": pl.List(CANDIDATE),
    "context_tokens": pl.Int64,
    "symbols": pl.List(SYMBOL),
    "n_symbols": pl.Int64,
    "n_indexed_files": pl.Int64,
    "languages": pl.List(pl.Utf8),
}


def estimate_tokens(text: str, chars_per_token: float) -> int:
    return int(math.ceil(len(text) / chars_per_token)) if text else 0


def decode(data: bytes) -> str | None:
    if is_probably_binary(data):
        return None
    return data.decode("utf-8", "replace")


@dataclass
class SymbolCache:
    """Symbols per (path, blob id): a blob unchanged across tasks is parsed once."""

    rows: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    def index(self, snap: Snapshot, paths: list[str], max_bytes: int) -> list[dict[str, Any]]:
        tree = snap.tree()
        todo = [p for p in paths if (p, tree[p]) not in self.rows]
        self.hits += len(paths) - len(todo)
        self.misses += len(todo)
        contents = snap.read(todo, max_bytes=max_bytes) if todo else {}
        for p in todo:
            text = decode(contents[p]) if p in contents else None
            syms = extract_symbols(p, text) if text is not None else []
            self.rows[(p, tree[p])] = [
                {"path": s.path, "name": s.name, "kind": s.kind, "start_line": s.start_line, "end_line": s.end_line}
                for s in syms
            ]
        out: list[dict[str, Any]] = []
        for p in paths:
            out.extend(self.rows[(p, tree[p])])
        return out


def _stem(path: str) -> str:
    base = posixpath.basename(path)
    return base.split(".")[0]


def pick_distractors(
    task: Mapping[str, Any], tree: Mapping[str, str], gold: list[str], limit: int, mentioning: set[str]
) -> list[str]:
    """Unchanged source files near the change: same folder (2 points), mentions a changed module (1 point);
    ties broken by a stable per-task hash."""
    if limit <= 0:
        return []
    noise = {c["path"] for c in (task.get("file_changes") or []) if c["category"] in NOISE_CATEGORIES}
    changed = set(task.get("changed_files") or []) | {
        c.get("old_path") for c in task.get("file_changes") or [] if c.get("old_path")
    }
    dirs = {posixpath.dirname(p) for p in gold}
    scored = []
    for p in tree:
        if p in changed or p in noise or not language_for_path(p):
            continue
        score = (2 if posixpath.dirname(p) in dirs else 0) + (1 if p in mentioning else 0)
        if score:
            scored.append((-score, stable_hash(task["task_id"], p), p))
    scored.sort()
    return [p for _, _, p in scored[:limit]]


def build_context(task: Mapping[str, Any], cfg: ContextConfig, cache: SymbolCache) -> dict[str, Any]:
    row: dict[str, Any] = {k: None for k in CONTEXT_SCHEMA}
    row.update(
        task_id=task["task_id"],
        file_tree=[],
        candidates=[],
        symbols=[],
        languages=[],
        n_tree_files=0,
        context_tokens=0,
        n_symbols=0,
        n_indexed_files=0,
    )
    snap = base_snapshot(task)
    if snap is None:
        row.update(
            status="no_snapshot",
            detail="no local copy of the repository at base_commit (SWE-bench: set sources.external[].checkouts)",
        )
        return row
    try:
        tree = snap.tree()
    except SnapshotError as exc:
        row.update(status="snapshot_error", detail=str(exc))
        return row

    old_paths = []
    for c in task.get("file_changes") or []:
        if c["category"] in NOISE_CATEGORIES:
            continue
        p = c.get("old_path") or c["path"]
        if c["status"] not in ("A", "C") and p in tree:
            old_paths.append(p)
    gold = list(dict.fromkeys(old_paths))

    # Symbol index: changed files first, then the rest of the tree, up to the cap.
    indexable = [p for p in tree if language_for_path(p)]
    rest = sorted(p for p in indexable if p not in set(gold))
    to_index = [p for p in gold if language_for_path(p)] + rest
    to_index = to_index[: cfg.max_indexed_files]
    symbols = cache.index(snap, to_index, cfg.max_file_bytes)

    mentioning = (
        snap.files_mentioning(sorted({_stem(p) for p in gold if len(_stem(p)) > 2})) if cfg.max_distractors else set()
    )
    distractors = pick_distractors(task, tree, gold, cfg.max_distractors, mentioning)

    wanted = sorted(gold + distractors, key=lambda p: stable_hash(task["task_id"], "order", p))
    raw = snap.read(wanted, max_bytes=cfg.max_file_bytes)
    texts = {p: decode(raw[p]) if p in raw else None for p in wanted}
    readable = [p for p in wanted if texts[p] is not None]
    shares = dict(
        zip(
            readable, share_budget([estimate_tokens(texts[p], cfg.chars_per_token) for p in readable], cfg.token_budget)
        )
    )
    cands = []
    for p in wanted:  # in an order that does not reveal the changed files
        text, share = texts[p], shares.get(p, 0)
        tokens = estimate_tokens(text, cfg.chars_per_token) if text is not None else 0
        if text is not None and tokens <= share:
            cands.append({"path": p, "content": text, "tokens": tokens, "truncated": False})
        elif text is not None and share > 0:
            cut = text[: int(share * cfg.chars_per_token)]
            cut = cut[: cut.rfind("\n") + 1] or cut
            cands.append(
                {"path": p, "content": cut, "tokens": estimate_tokens(cut, cfg.chars_per_token), "truncated": True}
            )
        else:  # unreadable (binary, undecodable, over max_file_bytes) or no budget left
            cands.append({"path": p, "content": None, "tokens": 0, "truncated": True})

    row.update(
        status="ok",
        detail="",
        file_tree=sorted(tree),
        n_tree_files=len(tree),
        candidates=cands,
        context_tokens=sum(c["tokens"] for c in cands),
        symbols=symbols,
        n_symbols=len(symbols),
        n_indexed_files=len(to_index),
        languages=sorted({lang for p in to_index if (lang := language_for_path(p))}),
    )
    return row


def share_budget(tokens: list[int], budget: int, floor: int = 128) -> list[int]:
    """Each file's share of the token budget: files that fit an equal share are kept whole, the larger ones
    split what is left equally (water-filling), so one long file (a changelog, a 3,000-line module) cannot
    take the whole budget and leave the other candidates empty. Where an equal share would be under
    ``floor`` tokens, the files are served ``floor`` each in the given order until the budget runs out."""
    out = [0] * len(tokens)
    left, open_ = budget, list(range(len(tokens)))
    while open_:
        fair = left // len(open_)
        small = [i for i in open_ if tokens[i] <= fair]
        if not small:
            break
        for i in small:
            out[i], left = tokens[i], left - tokens[i]
        open_ = [i for i in open_ if i not in small]
    if open_ and left // len(open_) >= floor:
        for i in open_:
            out[i] = left // len(open_)
    else:
        for i in open_:
            out[i] = min(floor, tokens[i]) if left >= min(floor, tokens[i]) else 0
            left -= out[i]
    return out


def build_context_row(task: Mapping[str, Any], cfg: ContextConfig, cache: SymbolCache) -> dict[str, Any]:
    """``build_context``, with any failure on this task turned into its own ``error`` row naming it."""
    try:
        return build_context(task, cfg, cache)
    except Exception as exc:  # noqa: BLE001 - one bad task is a counted row, not a failed run
        row: dict[str, Any] = {k: None for k in CONTEXT_SCHEMA}
        row.update(
            task_id=task["task_id"],
            status="error",
            file_tree=[],
            candidates=[],
            symbols=[],
            languages=[],
            n_tree_files=0,
            context_tokens=0,
            n_symbols=0,
            n_indexed_files=0,
            detail=f"{task['task_id']}: {type(exc).__name__}: {str(exc)[:300]}",
        )
        return row


def build_contexts(
    tasks: pl.DataFrame, cfg: ContextConfig, progress=None, chunk_rows: int = 128
) -> tuple[pl.DataFrame, SymbolCache]:
    """Contexts of every task. Rows become Arrow every ``chunk_rows`` tasks: the symbol lists of thousands of
    tasks never sit in memory as Python objects all at once."""
    cache = SymbolCache()
    chunks: list[pl.DataFrame] = []
    rows: list[dict[str, Any]] = []
    for i, task in enumerate(tasks.iter_rows(named=True)):
        rows.append(build_context_row(task, cfg, cache))
        if len(rows) >= chunk_rows:
            chunks.append(pl.DataFrame(rows, schema=CONTEXT_SCHEMA))
            rows = []
        if progress:
            progress(i + 1, tasks.height)
    if rows or not chunks:
        chunks.append(pl.DataFrame(rows, schema=CONTEXT_SCHEMA) if rows else pl.DataFrame(schema=CONTEXT_SCHEMA))
    return pl.concat(chunks, how="vertical"), cache
