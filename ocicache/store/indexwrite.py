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
import os
import secrets
import stat

from ocicache.base.errors import CorruptError, RefusedError, TooLargeError
from ocicache.format import documents as docs
from ocicache.format.indexdoc import Rewrite, Transform, join_index, split_index
from ocicache.format.names import INDEX_JSON, INDEX_LIMIT, INDEX_LIMIT_NAME
from ocicache.store.layout import Layout
from ocicache.store.lock import index_lock

TEMP_PREFIX = ".index.json.ocicache-"
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


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
            raise RefusedError(
                f"{e.message}; not rewritten (every entry it holds would be lost)", file=INDEX_JSON
            ) from None
        if data is None:
            raise CorruptError(
                "missing", file=INDEX_JSON, hint="`ocicache repair DIR` can rebuild it from blobs/"
            )
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
        raise RefusedError(
            f"the new index.json would be {len(data)} bytes, over ocicache's "
            f"{INDEX_LIMIT_NAME} ({INDEX_LIMIT} bytes); not written",
            file=INDEX_JSON,
        )


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
