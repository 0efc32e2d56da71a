"""One table of change tasks from mined commits and external datasets, with a
train/val/test split that never leaks a repository's future into its past."""

from __future__ import annotations

import difflib
import os
import subprocess
import tempfile
from collections import defaultdict
from typing import Any, Iterable

import polars as pl

from distill_assets.config import MiningConfig, SplitConfig
from distill_assets.diffs import parse_patch, unquote_path
from distill_assets.mining.miner import NOISE_CATEGORIES, FileClassifier, MiningResult
from distill_assets.mining.text import without_surrogates
from distill_assets.tasks.external import EXTERNAL_SCHEMA, INLINE_FILE, stable_hash

FILE_CHANGE = pl.Struct(
    {
        "path": pl.Utf8,
        "old_path": pl.Utf8,
        "status": pl.Utf8,
        "additions": pl.Int64,
        "deletions": pl.Int64,
        "binary": pl.Boolean,
        "category": pl.Utf8,
    }
)

MINED_SCHEMA = {
    "repo": pl.Utf8,
    "repo_path": pl.Utf8,
    "sha": pl.Utf8,
    "parent": pl.Utf8,
    "parents": pl.List(pl.Utf8),
    "author": pl.Utf8,
    "author_email": pl.Utf8,
    "authored_at": pl.Datetime("us", "UTC"),
    "committed_at": pl.Datetime("us", "UTC"),
    "subject": pl.Utf8,
    "message": pl.Utf8,
    "files": pl.List(FILE_CHANGE),
    "kept": pl.Boolean,
    "drop_reason": pl.Utf8,
    "message_encoding": pl.Utf8,
    "detail": pl.Utf8,
    "meaningful_files": pl.Int64,
    "changed_lines": pl.Int64,
    "test_files": pl.Int64,
}

CHANGE_TASK_SCHEMA = {
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
    "file_changes": pl.List(FILE_CHANGE),
    "changed_files": pl.List(pl.Utf8),
    "plan_files": pl.List(pl.Utf8),
    "test_files": pl.List(pl.Utf8),
    "has_tests": pl.Boolean,
    "fail_to_pass": pl.List(pl.Utf8),
    "pass_to_pass": pl.List(pl.Utf8),
    "inline_files": pl.List(INLINE_FILE),
    "split": pl.Utf8,
    "undecodable_files": pl.List(pl.Utf8),
}

SPLITS = ("train", "val", "test")


def mined_table(result: MiningResult) -> pl.DataFrame:
    rows = []
    for c in result.commits:
        r = c.row()
        r["repo"], r["repo_path"] = result.repo, result.repo_path
        rows.append({k: r[k] for k in MINED_SCHEMA})
    return pl.DataFrame(rows, schema=MINED_SCHEMA) if rows else pl.DataFrame(schema=MINED_SCHEMA)


def _git_log_patches(repo_path: str, shas: list[str], attributes: str | None = None) -> bytes:
    cmd = ["git", "-C", repo_path]
    if attributes is not None:
        cmd += ["-c", f"core.attributesFile={attributes}"]
    cmd += [
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-p",
        "-M",
        "--binary",
        "--full-index",
        "--no-color",
        "--no-ext-diff",
        "--format=%x1e%H",
    ]
    proc = subprocess.run(cmd, input="\n".join(shas).encode() + b"\n", capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"git log -p failed in {repo_path}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def _file_sections(patch: bytes) -> list[bytes]:
    """A commit's patch cut at each ``diff --git`` header."""
    parts = patch.split(b"\ndiff --git ")
    return [parts[0]] + [b"diff --git " + p for p in parts[1:]]


def _section_path(section: bytes) -> str:
    """The path after the change named by one file section of a git patch."""
    text = section.decode("utf-8", "surrogateescape")
    for line in text.split("\n"):
        if line.startswith("+++ ") and line[4:].strip() != "/dev/null":
            return unquote_path(line[4:].rstrip("\t").rstrip()).removeprefix("b/")
        if line.startswith("rename to ") or line.startswith("copy to "):
            return unquote_path(line.split(" to ", 1)[1])
    header = text.split("\n", 1)[0][len("diff --git ") :]
    if header.endswith('"'):
        return unquote_path(header[header.rfind(' "') + 1 :]).removeprefix("b/")
    n = (len(header) - 1) // 2  # "a/X b/X"
    return header[n + 1 :].removeprefix("b/")


def _gitattributes_line(path: str) -> str:
    quoted = '"/' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{quoted} binary\n"


def fetch_patches(repo_path: str, shas: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Full git patches (renames detected, binary included) of many commits in two git calls at most.

    sha -> (patch, paths treated as binary). A file whose text is not UTF-8 cannot be stored as text and
    re-encoded unchanged, so its diff is taken again as a binary patch (``git apply`` still applies it)."""
    if not shas:
        return {}
    raw = _git_log_patches(repo_path, shas)
    per_commit: dict[str, list[bytes]] = {}
    bad: dict[str, list[str]] = defaultdict(list)
    for rec in raw.split(b"\x1e"):
        if not rec.strip():
            continue
        sha, _, patch = rec.partition(b"\n")
        sha_s = sha.decode().strip()
        sections = _file_sections(patch.lstrip(b"\n")) if patch.strip() else []
        per_commit[sha_s] = sections
        for sec in sections:
            try:
                sec.decode("utf-8")
            except UnicodeDecodeError:
                bad[sha_s].append(_section_path(sec))
    if bad:
        with tempfile.TemporaryDirectory() as tmp:
            attrs = os.path.join(tmp, "attributes")
            with open(attrs, "w", encoding="utf-8", errors="surrogateescape") as fh:
                for paths in bad.values():
                    for pth in paths:
                        fh.write(_gitattributes_line(pth))
            again = _git_log_patches(repo_path, sorted(bad), attributes=attrs)
        for rec in again.split(b"\x1e"):
            if not rec.strip():
                continue
            sha, _, patch = rec.partition(b"\n")
            per_commit[sha.decode().strip()] = _file_sections(patch.lstrip(b"\n")) if patch.strip() else []
    out: dict[str, tuple[str, list[str]]] = {}
    for sha, sections in per_commit.items():
        text = b"\n".join(sections)  # the newline each cut took away
        out[sha] = (text.decode("utf-8", "replace"), sorted(set(bad.get(sha, []))))
    return out


def _split_by_time(rows: list[dict[str, Any]], cfg: SplitConfig) -> None:
    """Within one repo: oldest tasks train, then val, newest test. Equal timestamps never straddle."""
    rows.sort(key=lambda r: (r["created_at"], r["task_id"]))
    n = len(rows)
    n_test = int(round(n * cfg.test_fraction)) if n >= 3 else 0
    n_val = int(round(n * cfg.val_fraction)) if n >= 3 else 0
    labels = ["train"] * (n - n_test - n_val) + ["val"] * n_val + ["test"] * n_test
    # Move boundary ties to the earlier split so no train task shares a time with a later split.
    for i in range(1, n):
        if rows[i]["created_at"] == rows[i - 1]["created_at"] and SPLITS.index(labels[i]) > SPLITS.index(labels[i - 1]):
            labels[i] = labels[i - 1]
    for r, lab in zip(rows, labels):
        r["split"] = lab


def _split_by_hash(rows: list[dict[str, Any]], repo: str, cfg: SplitConfig) -> None:
    """No timestamps: the whole repository goes to one split (by a stable hash), so nothing leaks."""
    u = int(stable_hash("split", repo)[:8], 16) / 0xFFFFFFFF
    lab = "test" if u < cfg.test_fraction else "val" if u < cfg.test_fraction + cfg.val_fraction else "train"
    for r in rows:
        r["split"] = lab


def assign_splits(rows: list[dict[str, Any]], cfg: SplitConfig) -> None:
    by_repo: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_repo[(r["source"], r["repo"])].append(r)
    for (_source, repo), group in by_repo.items():
        timed = [r for r in group if r["created_at"] is not None]
        untimed = [r for r in group if r["created_at"] is None]
        if timed:
            _split_by_time(timed, cfg)
        if untimed:
            _split_by_hash(untimed, repo, cfg)


def split_leaks(df: pl.DataFrame) -> list[str]:
    """Every (source, repo) whose train tasks are newer than any of its val/test tasks."""
    problems = []
    timed = df.filter(pl.col("created_at").is_not_null())
    for (source, repo), g in timed.group_by(["source", "repo"], maintain_order=True):
        order = {s: i for i, s in enumerate(SPLITS)}
        latest_by = {s: g.filter(pl.col("split") == s)["created_at"].max() for s in SPLITS}
        earliest_by = {s: g.filter(pl.col("split") == s)["created_at"].min() for s in SPLITS}
        for a in SPLITS:
            for b in SPLITS:
                if order[a] < order[b] and latest_by[a] is not None and earliest_by[b] is not None:
                    if latest_by[a] > earliest_by[b]:
                        problems.append(
                            f"{source}:{repo}: a {a} task ({latest_by[a]}) is newer than a {b} task ({earliest_by[b]})"
                        )
    return problems


def _changes_from_patch(patch: str) -> list[dict[str, Any]]:
    return [
        {
            "path": fd.path,
            "old_path": fd.old_path,
            "status": fd.status,
            "additions": fd.additions,
            "deletions": fd.deletions,
            "binary": fd.binary,
        }
        for fd in parse_patch(patch)
    ]


def _file_columns(row: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """changed / plan / test files and has_tests from categorised file changes."""
    row["file_changes"] = changes
    row["changed_files"] = [c["path"] for c in changes]
    row["plan_files"] = [c["path"] for c in changes if c["category"] not in NOISE_CATEGORIES]
    row["test_files"] = [c["path"] for c in changes if c["category"] == "test"]
    row["has_tests"] = bool(row["test_files"]) or bool(row.get("fail_to_pass"))
    return row


def _finish(row: dict[str, Any], changes: list[dict[str, Any]], classifier: FileClassifier) -> dict[str, Any]:
    for ch in changes:
        ch["category"] = classifier.category(ch["path"], bool(ch["binary"]))
    return _file_columns(row, changes)


def tasks_from_mined(mined: pl.DataFrame, errors: list[str] | None = None) -> list[dict[str, Any]]:
    """Tasks of kept commits, one repository at a time. With ``errors``, a repository that fails is one line
    there (naming it) and the others go on; without, the failure is raised."""
    rows: list[dict[str, Any]] = []
    kept = mined.filter(pl.col("kept"))
    for (repo, repo_path), g in kept.group_by(["repo", "repo_path"], maintain_order=True):
        try:
            rows.extend(_repo_tasks(repo, repo_path, g))
        except Exception as exc:  # noqa: BLE001 - one repository never takes down the others
            if errors is None:
                raise
            errors.append(f"repository {repo!r} ({repo_path}): {type(exc).__name__}: {str(exc).strip()[:300]}")
    return rows


def _repo_tasks(repo: str, repo_path: str, g: pl.DataFrame) -> list[dict[str, Any]]:
    patches = fetch_patches(repo_path, g["sha"].to_list())
    rows = []
    for c in g.iter_rows(named=True):
        patch, binary_paths = patches.get(c["sha"], ("", []))
        files = [dict(f) for f in c["files"]]
        for f in files:
            if f["path"] in binary_paths:
                f.update(binary=True, category="binary", additions=None, deletions=None)
        row = {
            "task_id": f"git:{repo}:{c['sha'][:12]}",
            "source": "git",
            "repo": repo,
            "repo_path": repo_path,
            "base_commit": c["parent"],
            "after_commit": c["sha"],
            "created_at": c["committed_at"],
            "description": c["message"],
            "gold_patch": patch,
            "test_patch": "",
            "fail_to_pass": [],
            "pass_to_pass": [],
            "inline_files": [],
            "undecodable_files": binary_paths,
        }
        rows.append(_file_columns(row, files))  # the miner already categorised the files
    return rows


def tasks_from_external(external: pl.DataFrame, mining: MiningConfig) -> list[dict[str, Any]]:
    classifier = FileClassifier(mining)
    rows: list[dict[str, Any]] = []
    for r in external.iter_rows(named=True):
        row = {k: r.get(k) for k in EXTERNAL_SCHEMA if k in CHANGE_TASK_SCHEMA}
        if r["source"] == "commitpackft":
            changes = []
            for f in r["inline_files"] or []:
                status = (
                    "A" if not f["old_contents"] else "D" if not f["new_contents"] else "R" if f["old_path"] else "M"
                )
                old_lines, new_lines = (f["old_contents"] or "").splitlines(), (f["new_contents"] or "").splitlines()
                sm = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
                adds = sum(j2 - j1 for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag in ("insert", "replace"))
                dels = sum(i2 - i1 for tag, i1, i2, j1, j2 in sm.get_opcodes() if tag in ("delete", "replace"))
                changes.append(
                    {
                        "path": f["path"],
                        "old_path": f["old_path"],
                        "status": status,
                        "additions": adds,
                        "deletions": dels,
                        "binary": False,
                    }
                )
        else:
            changes = _changes_from_patch(r["gold_patch"] or "") + _changes_from_patch(r["test_patch"] or "")
        rows.append(_finish(row, changes, classifier))
    return rows


def _clean(value: Any) -> Any:
    """No lone surrogate reaches a table: strings (also inside lists and structs) are made writable."""
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def build_change_tasks(
    mined: Iterable[pl.DataFrame],
    external: pl.DataFrame | None,
    mining: MiningConfig,
    split: SplitConfig,
    errors: list[str] | None = None,
) -> pl.DataFrame:
    """All tasks in one table. ``errors`` (optional) collects one line per repository that failed; without
    it a failure is raised."""
    rows: list[dict[str, Any]] = []
    for m in mined:
        if m.height:
            rows.extend(tasks_from_mined(m, errors))
    if external is not None and external.height:
        rows.extend(tasks_from_external(external, mining))
    assign_splits(rows, split)
    if not rows:
        return pl.DataFrame(schema=CHANGE_TASK_SCHEMA)
    for r in rows:
        r.setdefault("undecodable_files", [])
    df = pl.DataFrame([{k: _clean(r.get(k)) for k in CHANGE_TASK_SCHEMA} for r in rows], schema=CHANGE_TASK_SCHEMA)
    return df.sort(["source", "repo", "created_at", "task_id"], nulls_last=True)
