"""CommitPackFT and SWE-bench instances from local files, in their published schemas.

Readers accept JSONL, Parquet, or a folder written by ``datasets.save_to_disk``
(loaded with ``datasets.load_from_disk``: a local copy, never the hub). Rows
that break the schema are counted by reason, never silently dropped.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import polars as pl

from distill_assets.config import ExternalSource

SWEBENCH_REQUIRED = ("repo", "instance_id", "base_commit", "patch", "problem_statement")
COMMITPACKFT_REQUIRED = ("commit", "old_file", "new_file", "old_contents", "new_contents", "message")

INLINE_FILE = pl.Struct({"path": pl.Utf8, "old_path": pl.Utf8, "old_contents": pl.Utf8, "new_contents": pl.Utf8})

EXTERNAL_SCHEMA = {
    "task_id": pl.Utf8,
    "source": pl.Utf8,
    "repo": pl.Utf8,
    "repo_path": pl.Utf8,
    "base_commit": pl.Utf8,
    "after_commit": pl.Utf8,
    "created_at": pl.Datetime("us", "UTC"),
    "description": pl.Utf8,
    "gold_patch": pl.Utf8,
    "test_patch": pl.Utf8,
    "changed_files": pl.List(pl.Utf8),
    "fail_to_pass": pl.List(pl.Utf8),
    "pass_to_pass": pl.List(pl.Utf8),
    "inline_files": pl.List(INLINE_FILE),
    "language": pl.Utf8,
}


class ExternalSourceError(ValueError):
    """The file itself cannot be read (missing, wrong format)."""


@dataclass
class ExternalReadResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    read: int = 0


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL / JSON / Parquet file or a `datasets` save_to_disk folder."""
    path = Path(path)
    if not path.exists():
        raise ExternalSourceError(f"external source not found: {path}")
    if path.is_dir():
        if not (
            (path / "dataset_info.json").exists()
            or (path / "state.json").exists()
            or (path / "dataset_dict.json").exists()
        ):
            raise ExternalSourceError(f"{path} is a folder but not a `datasets.save_to_disk` copy")
        import datasets  # heavy import, only when used

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            for split in ds.values():
                yield from split
        else:
            yield from ds
        return
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
        import gzip

        opener = gzip.open if suffix.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield {"__error__": f"line {lineno}: invalid JSON ({exc.msg})"}
                    continue
                yield rec if isinstance(rec, dict) else {"__error__": f"line {lineno}: not an object"}
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from (data if isinstance(data, list) else [data])
    elif suffix == ".parquet":
        yield from pl.read_parquet(path).iter_rows(named=True)
    else:
        raise ExternalSourceError(f"{path}: unsupported format {suffix!r} (use .jsonl, .json, .parquet)")


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = json.loads(value)
    return [str(v) for v in value]


def _date(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        from datetime import timezone

        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def files_in_patch(patch: str) -> list[str]:
    """Paths a unified git diff touches (post-change path; the old path for deletions)."""
    files: list[str] = []
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            parts = line.split()
            if len(parts) >= 4:
                b = parts[3][2:] if parts[3].startswith("b/") else parts[3]
                if b not in files:
                    files.append(b)
    return files


def unified_patch(path: str, old: str, new: str, old_path: str | None = None) -> str:
    """A git-style unified diff of one file's two versions."""
    a = old_path or path
    header = f"diff --git a/{a} b/{path}\n"
    if not old:
        header += "new file mode 100644\n"
    elif not new:
        header += "deleted file mode 100644\n"
    body = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        fromfile=f"a/{a}" if old else "/dev/null",
        tofile=f"b/{path}" if new else "/dev/null",
        n=3,
    )
    out = []
    for line in body:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return header + "".join(out)


def read_swebench(src: ExternalSource) -> ExternalReadResult:
    res = ExternalReadResult()
    for rec in iter_records(src.path):
        if src.limit and len(res.rows) >= src.limit:
            break
        res.read += 1
        if "__error__" in rec:
            res.rejected["unreadable_row"] += 1
            continue
        missing = [f for f in SWEBENCH_REQUIRED if not rec.get(f)]
        if missing:
            res.rejected[f"missing_{missing[0]}"] += 1
            continue
        try:
            f2p, p2p = _as_list(rec.get("FAIL_TO_PASS")), _as_list(rec.get("PASS_TO_PASS"))
            created = _date(rec.get("created_at"))
        except (ValueError, TypeError):
            res.rejected["bad_field_value"] += 1
            continue
        checkout = src.checkouts.get(rec["repo"])
        desc = rec["problem_statement"].strip()
        if rec.get("hints_text"):
            desc += "\n\nHints:\n" + str(rec["hints_text"]).strip()
        res.rows.append(
            {
                "task_id": f"swebench:{rec['instance_id']}",
                "source": "swebench",
                "repo": rec["repo"],
                "repo_path": str(checkout) if checkout else None,
                "base_commit": rec["base_commit"],
                "after_commit": None,
                "created_at": created,
                "description": desc,
                "gold_patch": rec["patch"],
                "test_patch": rec.get("test_patch") or "",
                "changed_files": files_in_patch(rec["patch"])
                + [p for p in files_in_patch(rec.get("test_patch") or "") if p not in files_in_patch(rec["patch"])],
                "fail_to_pass": f2p,
                "pass_to_pass": p2p,
                "inline_files": [],
                "language": "python",
            }
        )
    return res


def read_commitpackft(src: ExternalSource) -> ExternalReadResult:
    """Rows are single files; rows sharing a ``commit`` become one multi-file task."""
    res = ExternalReadResult()
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    order: list[str] = []
    for rec in iter_records(src.path):
        res.read += 1
        if "__error__" in rec:
            res.rejected["unreadable_row"] += 1
            continue
        missing = [
            f for f in COMMITPACKFT_REQUIRED if rec.get(f) is None or (f in ("commit", "new_file") and not rec.get(f))
        ]
        if missing:
            res.rejected[f"missing_{missing[0]}"] += 1
            continue
        if rec["old_contents"] == rec["new_contents"] and rec["old_file"] == rec["new_file"]:
            res.rejected["no_change"] += 1
            continue
        if rec["commit"] not in groups:
            order.append(rec["commit"])
        groups[rec["commit"]].append(rec)
    for commit in order:
        if src.limit and len(res.rows) >= src.limit:
            break
        recs = groups[commit]
        seen: set[str] = set()
        inline, patches = [], []
        for r in recs:
            if r["new_file"] in seen:
                res.rejected["duplicate_file_in_commit"] += 1
                continue
            seen.add(r["new_file"])
            old_path = r["old_file"] if r["old_file"] != r["new_file"] else None
            inline.append(
                {
                    "path": r["new_file"],
                    "old_path": old_path,
                    "old_contents": r["old_contents"],
                    "new_contents": r["new_contents"],
                }
            )
            patches.append(unified_patch(r["new_file"], r["old_contents"], r["new_contents"], old_path))
        first = recs[0]
        repo = str(first.get("repos") or "unknown").split(",")[0].strip() or "unknown"
        message = (first.get("message") or first.get("subject") or "").strip()
        res.rows.append(
            {
                "task_id": f"commitpackft:{commit[:16]}",
                "source": "commitpackft",
                "repo": repo,
                "repo_path": None,
                "base_commit": None,
                "after_commit": commit,
                "created_at": None,
                "description": message,
                "gold_patch": "".join(patches),
                "test_patch": "",
                "changed_files": [f["path"] for f in inline],
                "fail_to_pass": [],
                "pass_to_pass": [],
                "inline_files": inline,
                "language": str(first.get("lang") or "").lower() or None,
            }
        )
    return res


READERS = {"swebench": read_swebench, "commitpackft": read_commitpackft}


def read_external_sources(sources: list[ExternalSource]) -> tuple[pl.DataFrame, dict[str, dict[str, int]]]:
    """All configured external sources as one table, plus per-source read/kept/rejected counts."""
    rows: list[dict[str, Any]] = []
    stats: dict[str, dict[str, int]] = {}
    for i, src in enumerate(sources):
        res = READERS[src.kind](src)
        label = f"{src.kind}:{Path(src.path).name}"
        stats[label] = {
            "read": res.read,
            "kept": len(res.rows),
            **{f"rejected_{k}": v for k, v in res.rejected.items()},
        }
        rows.extend(res.rows)
    # The same instance listed twice (two files) is one task.
    unique: dict[str, dict[str, Any]] = {}
    for r in rows:
        unique.setdefault(r["task_id"], r)
    df = (
        pl.DataFrame(list(unique.values()), schema=EXTERNAL_SCHEMA, orient="row")
        if unique
        else pl.DataFrame(schema=EXTERNAL_SCHEMA)
    )
    return df, stats


def stable_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()
