"""What the calling process and the training process share: JSONL files and the progress line prefix.
Light on purpose: the Dagster code server imports it without torch."""

from __future__ import annotations

import json
from pathlib import Path

PROGRESS_PREFIX = "DISTILL_PROGRESS "


def read_jsonl(path: Path) -> list[dict]:
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
