"""One cache layer for expensive results kept on disk by content: one file per key under a folder,
written atomically (a crash leaves no half-written entry that would read as a result), read back with
the value's own loader. Sandbox runs, test selections and evaluation rows use it.

The other caches are different on purpose: teacher answers live in SQLite (``teachers/cache.py``: many
threads write concurrently, and batch jobs are tracked next to them); per-repository test environments are
folders with a size cap, eviction and failure back-off (``environments/build.py``); the symbol index cache
is in memory for one materialization (``contexts/build.py``: a blob parsed once across tasks); training
runs are folders keyed by data and config hash that hold checkpoints to resume from (``training/launch.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


def content_key(*parts: Any) -> str:
    """A stable key of JSON-serialisable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class FileCache(Generic[T]):
    def __init__(self, root: str | Path, suffix: str, write: Callable[[T, Path], None], read: Callable[[Path], T]):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.suffix, self._write, self._read = suffix, write, read

    def path(self, key: str) -> Path:
        return self.root / f"{key}{self.suffix}"

    def get(self, key: str) -> T | None:
        p = self.path(key)
        return self._read(p) if p.exists() else None

    def put(self, key: str, value: T) -> None:
        p = self.path(key)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.partial")
        try:
            self._write(value, tmp)
            os.replace(tmp, p)
        finally:
            tmp.unlink(missing_ok=True)
