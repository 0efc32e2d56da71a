"""One reader of unified diffs (git patches and plain ``diff -u``), on ``unidiff``.

Per file: the paths before and after (git's C-quoted paths with spaces or non-ASCII bytes unquoted),
status (``A`` added, ``D`` deleted, ``R`` renamed, ``C`` copied, ``M`` modified, mode-only changes
included), whether it is binary, +/- counts, and the hunks with line numbers on both sides, which
is what reference plans map onto symbol spans.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

import unidiff

__all__ = ["Hunk", "FileDiff", "parse_patch", "line_hunks", "unquote_path"]


@dataclass
class Hunk:
    removed: list[tuple[int, str]] = field(default_factory=list)  # (old 1-based line number, text)
    added: list[tuple[int, str]] = field(default_factory=list)  # (new 1-based line number, text)


@dataclass
class FileDiff:
    path: str  # after the change; for a deletion the path it had
    old_path: str | None  # before the change, for renames and copies; else None
    status: str  # A D R C M
    binary: bool
    additions: int | None  # None for binary files
    deletions: int | None
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def base_path(self) -> str:
        return self.old_path or self.path


_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote_path(path: str) -> str:
    """git's C-style quoted path (``"a/caf\\303\\251 x.py"``) -> the path; unquoted paths unchanged."""
    if len(path) < 2 or not (path.startswith('"') and path.endswith('"')):
        return path
    raw = path[1:-1]
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt in "01234567" and re.fullmatch(r"[0-7]{3}", raw[i + 1 : i + 4] or ""):
                out.append(int(raw[i + 1 : i + 4], 8))
                i += 4
                continue
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
        out.extend(ch.encode("utf-8", "surrogateescape"))
        i += 1
    return out.decode("utf-8", "replace")


def _strip_prefix(path: str) -> str | None:
    path = unquote_path(path.strip())
    if path == "/dev/null":
        return None
    if path[:2] in ("a/", "b/"):
        return path[2:]
    return path


_GIT_HEADER = re.compile(r'^diff --git (?P<a>"(?:[^"\\]|\\.)*"|\S+) (?P<b>"(?:[^"\\]|\\.)*"|\S+)$')


def parse_patch(text: str) -> list[FileDiff]:
    """Every file of a patch, in order. Text that unidiff cannot read raises ``unidiff.UnidiffParseError``."""
    if not text or not text.strip():
        return []
    out: list[FileDiff] = []
    for pf in unidiff.PatchSet.from_string(text):
        src, tgt = _strip_prefix(pf.source_file or ""), _strip_prefix(pf.target_file or "")
        header = _GIT_HEADER.match((pf.patch_info[0] if pf.patch_info else "").rstrip("\n")) if pf.patch_info else None
        if header and (src is None and tgt is None or pf.is_binary_file):
            src = src if src is not None else (_strip_prefix(header["a"]) if not pf.is_added_file else None)
            tgt = tgt if tgt is not None else (_strip_prefix(header["b"]) if not pf.is_removed_file else None)
        if src is None and tgt is None and header:
            src, tgt = _strip_prefix(header["a"]), _strip_prefix(header["b"])
        info = "".join(pf.patch_info or [])
        copied = re.search(r"^copy from ", info, re.M) is not None
        if pf.is_added_file:
            status, path, old = "A", tgt or src or pf.path, None
        elif pf.is_removed_file:
            status, path, old = "D", src or tgt or pf.path, None
        elif pf.is_rename or copied:
            m_from = re.search(r"^(?:rename|copy) from (.*)$", info, re.M)
            m_to = re.search(r"^(?:rename|copy) to (.*)$", info, re.M)
            old = unquote_path(m_from.group(1)) if m_from else src
            path = unquote_path(m_to.group(1)) if m_to else (tgt or pf.path)
            status = "C" if copied else "R"
        else:
            status, path, old = "M", tgt or src or unquote_path(pf.path), None
        fd = FileDiff(
            path=path,
            old_path=old,
            status=status,
            binary=bool(pf.is_binary_file),
            additions=None if pf.is_binary_file else pf.added,
            deletions=None if pf.is_binary_file else pf.removed,
        )
        for h in pf:
            hunk = Hunk()
            for line in h:
                if line.is_removed:
                    hunk.removed.append((line.source_line_no, line.value.rstrip("\r\n")))
                elif line.is_added:
                    hunk.added.append((line.target_line_no, line.value.rstrip("\r\n")))
            fd.hunks.append(hunk)
        out.append(fd)
    return out


def line_hunks(old: str, new: str) -> list[Hunk]:
    """Hunks of a line diff between two texts (for changes that come without a patch)."""
    a, b = old.splitlines(), new.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        out.append(Hunk(removed=[(i + 1, a[i]) for i in range(i1, i2)], added=[(j + 1, b[j]) for j in range(j1, j2)]))
    return out


def split_sections(patch: str) -> list[tuple[FileDiff | None, str]]:
    """A git patch cut into its files: (what that file's part says, the part's text, binary patches included).

    Text before the first ``diff --git`` (none in git's output) is kept as a part with no file."""
    if not patch:
        return []
    parts = re.split(r"(?m)^(?=diff --git )", patch)
    out: list[tuple[FileDiff | None, str]] = []
    for part in parts:
        if not part:
            continue
        if not part.startswith("diff --git "):
            out.append((None, part))
            continue
        files = parse_patch(part if part.endswith("\n") else part + "\n")
        out.append((files[0] if files else None, part))
    return out
