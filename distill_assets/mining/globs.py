"""Path globs with ``**`` compiled into one regular expression per pattern set.

``pathlib.PurePath.match`` in Python 3.11 has no recursive ``**``; ``fnmatch``
lets ``*`` cross ``/``. Mining classifies every path of every commit, so each
pattern set becomes one compiled regex and results are memoised per path.
"""

from __future__ import annotations

import re
from functools import lru_cache


def _translate(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class GlobSet:
    """Matches repo-relative POSIX paths against any of several globs.

    A pattern without ``/`` matches the file name anywhere (like .gitignore),
    so ``package-lock.json`` matches ``web/package-lock.json``.
    """

    def __init__(self, patterns: list[str] | tuple[str, ...]):
        self.patterns = tuple(patterns)
        parts = []
        for p in self.patterns:
            p = p.lstrip("/")
            if "/" not in p:
                p = "**/" + p
            parts.append(_translate(p))
        self._regex = re.compile("^(?:" + "|".join(parts) + ")$") if parts else None
        self.matches = lru_cache(maxsize=200_000)(self._match)

    def _match(self, path: str) -> bool:
        return bool(self._regex and self._regex.match(path))

    def __bool__(self) -> bool:
        return bool(self.patterns)
