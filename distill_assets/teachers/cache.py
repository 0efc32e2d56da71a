"""A persistent response cache for teacher calls (SQLite, one row per finished answer).

Keyed by endpoint, model, messages, parameters and sample index. Each answer is
committed the moment it arrives, so a run killed half-way loses no finished
answer and a rerun makes no repeated (paid) call. Pending batch jobs are kept
here too, so a restarted run polls its batch instead of submitting it again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def request_key(base_url: str, model: str, messages: list[dict], params: dict[str, Any], sample_index: int) -> str:
    blob = json.dumps(
        {
            "endpoint": base_url.rstrip("/"),
            "model": model,
            "messages": messages,
            "params": params,
            "sample": sample_index,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, teacher TEXT, model TEXT, "
            "created REAL, response TEXT)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, teacher TEXT, "
            "keys TEXT, status TEXT, created REAL)"
        )

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, teacher: str, model: str, response: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (key, teacher, model, time.time(), json.dumps(response)),
            )

    def count(self, teacher: str | None = None) -> int:
        with self._lock:
            if teacher is None:
                return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM responses WHERE teacher = ?", (teacher,)).fetchone()[0]

    # ---- batch jobs
    def add_batch(self, batch_id: str, teacher: str, keys: list[str]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch_id, teacher, json.dumps(keys), "submitted", time.time()),
            )

    def pending_batches(self, teacher: str) -> list[tuple[str, list[str]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT batch_id, keys FROM batches WHERE teacher = ? AND status = 'submitted'", (teacher,)
            ).fetchall()
        return [(b, json.loads(k)) for b, k in rows]

    def finish_batch(self, batch_id: str, status: str) -> None:
        with self._lock:
            self._db.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))

    def close(self) -> None:
        with self._lock:
            self._db.close()
