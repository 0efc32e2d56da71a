"""A read-only view of a repository at one point: its file tree and file contents.

``GitSnapshot`` reads a commit (or tree) of a real git repository without a
work tree: one ``ls-tree`` for the tree, one ``cat-file --batch`` process for
all contents. ``InlineSnapshot`` holds files given inline (CommitPackFT rows).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from distill_assets.tasks.external import stable_hash


class SnapshotError(RuntimeError):
    pass


class GitSnapshot:
    def __init__(self, repo_path: str | os.PathLike[str], treeish: str):
        self.repo_path = str(repo_path)
        self.treeish = treeish
        self._tree: dict[str, str] | None = None
        self.undecodable_paths = 0  # paths in the tree that are not UTF-8 (left out of it)

    def _git(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> bytes:
        proc = subprocess.run(
            ["git", "-C", self.repo_path, *args],
            input=input,
            capture_output=True,
            env={**os.environ, **(env or {})},
        )
        if proc.returncode != 0:
            raise SnapshotError(
                f"git {' '.join(args[:2])} failed in {self.repo_path}: {proc.stderr.decode(errors='replace').strip()}"
            )
        return proc.stdout

    def tree(self) -> dict[str, str]:
        """path -> blob id, regular files and symlinks only (no submodules; paths that are not UTF-8 are
        counted in ``undecodable_paths`` and left out: no table or plan can name them)."""
        if self._tree is None:
            out = self._git("ls-tree", "-r", "-z", "--full-tree", self.treeish)
            tree: dict[str, str] = {}
            for entry in out.split(b"\0"):
                if not entry:
                    continue
                meta, _, path = entry.partition(b"\t")
                mode, typ, oid = meta.split()
                if typ == b"blob":
                    try:
                        tree[path.decode("utf-8")] = oid.decode()
                    except UnicodeDecodeError:
                        self.undecodable_paths += 1
            self._tree = tree
        return self._tree

    def read(self, paths: Iterable[str], max_bytes: int | None = None) -> dict[str, bytes]:
        """Contents of the given paths that exist in this snapshot (larger than max_bytes: skipped)."""
        tree = self.tree()
        wanted = [(p, tree[p]) for p in paths if p in tree]
        if not wanted:
            return {}
        req = b"".join(oid.encode() + b"\n" for _, oid in wanted)
        out = self._git("cat-file", "--batch", input=req)
        result: dict[str, bytes] = {}
        pos = 0
        for path, _oid in wanted:
            nl = out.index(b"\n", pos)
            header = out[pos:nl].split()
            size = int(header[2])
            start = nl + 1
            if max_bytes is None or size <= max_bytes:
                result[path] = out[start : start + size]
            pos = start + size + 1
        return result

    def files_mentioning(self, words: Iterable[str]) -> set[str]:
        """Paths whose content contains any of ``words`` as a whole word (one `git grep`)."""
        words = [w for w in words if w]
        if not words:
            return set()
        args = ["grep", "-l", "-w", "-F", "-I"]
        for w in words:
            args += ["-e", w]
        proc = subprocess.run(["git", "-C", self.repo_path, *args, self.treeish], capture_output=True)
        if proc.returncode not in (0, 1):  # 1: no match
            raise SnapshotError(f"git grep failed in {self.repo_path}: {proc.stderr.decode(errors='replace').strip()}")
        prefix = self.treeish + ":"
        out = set()
        for raw in proc.stdout.splitlines():
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue  # a path that is not UTF-8 is not in tree() either
            out.add(line[len(prefix) :] if line.startswith(prefix) else line)
        return out

    def key(self) -> str:
        return stable_hash("git", self.repo_path, self._git("rev-parse", self.treeish).decode().strip())

    @classmethod
    def after_patch(cls, repo_path: str, base: str, patch: str) -> "GitSnapshot":
        """The tree that results from applying ``patch`` to ``base`` (temporary index; no work tree)."""
        snap = cls(repo_path, base)
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            snap._git("read-tree", base, env=env)
            patch_file = Path(tmp) / "gold.patch"
            patch_file.write_text(patch if patch.endswith("\n") else patch + "\n")
            snap._git("apply", "--cached", "--whitespace=nowarn", str(patch_file), env=env)
            tree = snap._git("write-tree", env=env).decode().strip()
        return cls(repo_path, tree)


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # surrogates that no bytes stand behind (a JSON "\\ud800" escape)
        return text.encode("utf-8", "replace")


class InlineSnapshot:
    def __init__(self, files: Mapping[str, str | bytes]):
        self.files = {p: (_to_bytes(c) if isinstance(c, str) else c) for p, c in files.items()}

    def tree(self) -> dict[str, str]:
        return {p: stable_hash(p, c.decode("utf-8", "replace")) for p, c in self.files.items()}

    def files_mentioning(self, words: Iterable[str]) -> set[str]:
        pats = [re.compile(rb"\b" + re.escape(w.encode()) + rb"\b") for w in words if w]
        return {p for p, c in self.files.items() if any(pat.search(c) for pat in pats)}

    def read(self, paths: Iterable[str], max_bytes: int | None = None) -> dict[str, bytes]:
        return {
            p: self.files[p]
            for p in paths
            if p in self.files and (max_bytes is None or len(self.files[p]) <= max_bytes)
        }


def is_probably_binary(data: bytes) -> bool:
    return b"\0" in data[:8192]


Snapshot = GitSnapshot | InlineSnapshot


def base_snapshot(task: Mapping[str, Any]) -> Snapshot | None:
    """The repository as it was before the change, or None where no copy of it exists here."""
    if task.get("inline_files"):
        files = {}
        for f in task["inline_files"]:
            if f["old_contents"]:
                files[f["old_path"] or f["path"]] = f["old_contents"]
        return InlineSnapshot(files)
    if task.get("repo_path") and task.get("base_commit"):
        return GitSnapshot(task["repo_path"], task["base_commit"])
    return None


def after_snapshot(task: Mapping[str, Any]) -> Snapshot | None:
    """The repository after the gold change (the commit itself, or base + gold patch)."""
    if task.get("inline_files"):
        return InlineSnapshot({f["path"]: f["new_contents"] for f in task["inline_files"] if f["new_contents"]})
    if task.get("repo_path") and task.get("after_commit"):
        return GitSnapshot(task["repo_path"], task["after_commit"])
    if task.get("repo_path") and task.get("base_commit"):
        patch = (task.get("gold_patch") or "") + (task.get("test_patch") or "")
        return GitSnapshot.after_patch(task["repo_path"], task["base_commit"], patch)
    return None
