"""The only writer of index.json: an atomic, locked rewrite keeping every untouched entry's bytes.

BuildKit rewrites index.json in place, under a non-blocking flock on index.json.lock (FORMAT.md).
We take the same lock, read index.json, let a transform decide the new list of entries, and
write the result to a temporary file in DIR, fsync it, rename it over index.json and fsync DIR:
a crash at any point leaves either the old or the new file, never a torn one (a stale temporary
file at worst, which the next rewrite removes while it holds the lock).

Entries the transform keeps are written back as the exact JSON text they had in the file, so a
pin or an unpin never changes a byte of what BuildKit wrote; new entries are encoded the way
Go's encoding/json writes them (compact, UTF-8, `<>&` escaped), like BuildKit's own entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocicache.base.errors import CorruptError, RefusedError, TooLargeError
from ocicache.format import documents as docs
from ocicache.store.layout import INDEX_JSON, INDEX_LIMIT, INDEX_LIMIT_NAME, Layout
from ocicache.store.lock import index_lock

TEMP_PREFIX = ".index.json.ocicache-"
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_WRITE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                | getattr(os, "O_CLOEXEC", 0))


@dataclass(frozen=True)
class RawEntry:
    """One element of index.json `manifests`: its exact JSON text and its decoded value."""

    text: str
    doc: dict[str, Any]

    @classmethod
    def new(cls, doc: dict[str, Any]) -> RawEntry:
        return cls(go_json(doc), doc)


@dataclass(frozen=True)
class Rewrite:
    """What a rewrite did: the entries before and after, and whether the file changed."""

    before: tuple[RawEntry, ...]
    after: tuple[RawEntry, ...]
    changed: bool


Transform = Callable[[list[RawEntry]], list[RawEntry]]


def go_json(doc: object) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escapes, raw UTF-8)."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, esc)
    return text


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _expect(text: str, i: int, char: str) -> int:
    if text[i:i + 1] != char:
        raise CorruptError(f"expected {char!r} at offset {i}", file=INDEX_JSON)
    return _skip(text, i + 1)


def _members(text: str, i: int) -> tuple[list[tuple[str, str, str]], int]:
    """(key, raw key, raw value) of the object starting at text[i] == '{'; the end offset."""
    out: list[tuple[str, str, str]] = []
    i = _expect(text, i, "{")
    if text[i:i + 1] == "}":
        return out, i + 1
    while True:
        start = i
        key, i = _DECODER.raw_decode(text, i)
        raw_key = text[start:i]
        i = _expect(text, _skip(text, i), ":")
        start = i
        _, i = _DECODER.raw_decode(text, i)
        out.append((key, raw_key, text[start:i]))
        i = _skip(text, i)
        if text[i:i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        if text[i:i + 1] != "}":
            raise CorruptError(f"expected ',' or '}}' at offset {i}", file=INDEX_JSON)
        return out, i + 1


def _elements(text: str) -> list[str]:
    """The raw text of each element of a JSON array."""
    out: list[str] = []
    i = _expect(text, _skip(text, 0), "[")
    if text[i:i + 1] == "]":
        return out
    while True:
        start = i
        _, i = _DECODER.raw_decode(text, i)
        out.append(text[start:i])
        i = _skip(text, i)
        if text[i:i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        return out


def split_index(data: bytes) -> tuple[list[tuple[str, str, str]], list[RawEntry], str]:
    """index.json as (top-level members, entries with their raw text, trailing text).

    Raises CorruptError when index.json is torn or invalid: we never rewrite what we cannot read.
    """
    doc = docs.loads_strict(data, INDEX_JSON)
    docs.parse_index(doc)  # validates against the image-index schema
    text = data.decode("utf-8")
    members, end = _members(text, _skip(text, 0))
    raw = dict((k, v) for k, _, v in members)
    entries = [RawEntry(t, e) for t, e in zip(_elements(raw["manifests"]), doc["manifests"],
                                              strict=True)]
    return members, entries, text[end:]


def join_index(members: list[tuple[str, str, str]], entries: list[RawEntry], tail: str) -> bytes:
    """The compact document: every top-level member as it was, `manifests` replaced."""
    manifests = "[" + ",".join(e.text for e in entries) + "]"
    parts = [f"{rk}:{manifests if k == 'manifests' else rv}" for k, rk, rv in members]
    return ("{" + ",".join(parts) + "}" + tail).encode("utf-8")


def rewrite_index(layout: Layout, transform: Transform, timeout: float = 10.0) -> Rewrite:
    """Under BuildKit's lock, replace index.json's entries with `transform(entries)`, atomically.

    The transform runs under the lock (it sees the index as it is now, not as it was when the
    caller last read it) and may raise to abort; nothing is written when it returns the same list.
    """
    root_fd = layout.root_fd
    with index_lock(root_fd, timeout):
        _remove_stale_temps(layout)
        try:
            data = layout.read_top(INDEX_JSON)
        except TooLargeError as e:
            raise RefusedError(f"{e.message}; not rewritten (every entry it holds would be "
                               "lost)", file=INDEX_JSON) from None
        if data is None:
            raise CorruptError("missing", file=INDEX_JSON,
                               hint="`ocicache repair DIR` can rebuild it from blobs/")
        try:
            members, before, tail = split_index(data)
        except CorruptError as e:  # read under our exclusive lock: nobody is writing it
            if e.hint is None:
                e.hint = "`ocicache repair DIR` can rebuild it from blobs/"
            raise
        after = transform(list(before))
        if [e.text for e in after] == [e.text for e in before]:
            return Rewrite(tuple(before), tuple(after), False)
        new = join_index(members, after, tail)
        require_readable_size(new)
        # The result must itself be an index we (and BuildKit) can read.
        docs.parse_index(docs.loads_strict(new, INDEX_JSON))
        st = os.stat(INDEX_JSON, dir_fd=root_fd, follow_symlinks=False)
        replace_index(root_fd, new, stat.S_IMODE(st.st_mode))
    return Rewrite(tuple(before), tuple(after), True)


def require_readable_size(data: bytes) -> None:
    """Refuse to write an index.json larger than ocicache reads back (layout.INDEX_LIMIT)."""
    if len(data) > INDEX_LIMIT:
        raise RefusedError(f"the new index.json would be {len(data)} bytes, over ocicache's "
                           f"{INDEX_LIMIT_NAME} ({INDEX_LIMIT} bytes); not written",
                           file=INDEX_JSON)


def replace_index(root_fd: int, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temp file in DIR, fsync, rename over index.json, fsync DIR.

    The caller holds BuildKit's lock. Any failure leaves the old index.json in place (the
    temp file is removed) and is raised as RefusedError naming the file.
    """
    temp = TEMP_PREFIX + secrets.token_hex(8)
    renamed = False
    try:
        fd = os.open(temp, _WRITE_FLAGS, 0o600, dir_fd=root_fd)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, INDEX_JSON, src_dir_fd=root_fd, dst_dir_fd=root_fd)
        renamed = True
        os.fsync(root_fd)
    except OSError as e:
        if renamed:
            return  # the new index.json is in place; only the directory fsync failed
        raise RefusedError(f"cannot replace index.json: {e.strerror}", file=INDEX_JSON) from e
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=root_fd)


def _remove_stale_temps(layout: Layout) -> None:
    """Temp files of a rewrite that crashed: safe to remove while we hold the lock."""
    for name in layout.top_names:
        if name.startswith(TEMP_PREFIX):
            try:
                st = os.stat(name, dir_fd=layout.root_fd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    os.unlink(name, dir_fd=layout.root_fd)
            except FileNotFoundError:
                pass
