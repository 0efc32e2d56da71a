"""Bytes from git as text: UTF-8 when it is, a recorded fallback when it is not; never lone surrogates.

Commit messages and author names are bytes in whatever encoding the author's editor used (git records an
``encoding`` header only sometimes). ``decode_text`` tries UTF-8, then Windows-1252, then Latin-1 (which
never fails) and says which one it used, so a table never holds text that cannot be written.
"""

from __future__ import annotations

FALLBACKS = ("cp1252", "latin-1")


def decode_text(data: bytes) -> tuple[str, str | None]:
    """(text, None) for UTF-8; (text, encoding) when a fallback decoded it."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    for enc in FALLBACKS:
        try:
            return data.decode(enc), enc
        except UnicodeDecodeError:
            continue
    return data.decode("utf-8", "replace"), "utf-8-replace"  # unreachable: latin-1 decodes every byte


def decode_path(data: bytes) -> str | None:
    """A path as UTF-8, or None when it is not (such a path cannot be named in a plan or a table)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def without_surrogates(text: str | None) -> str | None:
    """Lone surrogates (from ``surrogateescape`` decoding) replaced by U+FFFD; other text unchanged."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        try:
            raw = text.encode("utf-8", "surrogateescape")  # bytes that surrogateescape decoding stood in for
        except UnicodeEncodeError:
            raw = text.encode("utf-8", "replace")  # surrogates from elsewhere (a JSON "\\ud800" escape)
        return raw.decode("utf-8", "replace")
