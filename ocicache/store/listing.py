"""GNU find's listing of a cache directory, begun in the background: every entry's lstat, in C.

`os.scandir` + `DirEntry.stat` cost ~7 µs an entry in Python (0.35 s for 50k blobs); `find`
stats the same entries on the other core while this one loads modules and reads index.json,
and parsing its output costs ~2 µs an entry. `Layout.scan_blobs` takes the blobs' sizes,
mtimes and modes from it instead of stat-ing each one again. The CLI begins it (`begin`) as soon
as typer has parsed DIR, before it loads the modules that read DIR.

The listing only ever replaces stat calls: every read still goes through Layout's directory
fds with O_NOFOLLOW. It is used only when it is certainly the same directory (the device and
inode of DIR, `blobs` and `blobs/<algorithm>` equal what Layout opened) and every record parses;
otherwise (no GNU find, find failed on an unreadable folder, an odd entry type, a time before
1970) Layout scans with scandir as always.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

FIND = ("/usr/bin/find", "/bin/find")
# type, mode, size, mtime (s.ns), 512-byte blocks allocated, hard links, device:inode, path
# relative to DIR; NUL-terminated (names may hold newlines and spaces: the
# path is the last field). Only folders carry their device:inode (what Layout compares with the
# folders it holds open), and files with other hard links (`du` counts such a file once); other
# files print "-" there (a blob's inode says nothing its digest, size and mtime do not; ~15 %
# less to list and hash).
DIR_FORMAT = "%y %m %s %T@ %b %n %D:%i %P\\0"
LINKED_FORMAT = DIR_FORMAT
FORMAT = "%y %m %s %T@ %b %n - %P\\0"

# Nothing deeper is read by any command that uses a listing: blobs/<algorithm>/<blob> and
# ingest/<ref>/<file> are the deepest entries (a folder in blobs/sha256 is a stray, not entered).
MAX_DEPTH = 3

_TYPES = {
    "f": stat.S_IFREG,
    "d": stat.S_IFDIR,
    "l": stat.S_IFLNK,
    "p": stat.S_IFIFO,
    "s": stat.S_IFSOCK,
    "c": stat.S_IFCHR,
    "b": stat.S_IFBLK,
}

# One entry: (st_mode with its type bits, size, mtime_ns, "dev:ino" of a folder or of a file
# with other hard links, else "-", st_blocks, st_nlink).
Entry = tuple[int, int, int, str, int, int]


class Listing:
    """`find -P DIR/ -maxdepth 3 ...`, started at construction; `result()` waits for it."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.abspath(directory)
        self._proc = _start_find(self.root)
        self._bytes: bytes | None = None

    def result(self) -> bytes | None:
        """The listing's bytes; None when it could not be made (no find, find failed)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            out, _ = proc.communicate()
            self._bytes = out if proc.returncode == 0 and out else None
        return self._bytes

    def take_tree(self) -> dict[str, dict[str, Entry]] | None:
        """Every entry by its folder's path and its name (DIR itself is `tree[""][""]`);
        None when the listing is missing or any record does not parse. Once: the listing
        lets go of its bytes (~120 bytes an entry); the caller keeps what it needs of it."""
        data = self.result()
        self._bytes = None
        if data is None:
            return None
        # Names as os.fsdecode makes them (UTF-8, undecodable bytes as surrogates), in one go.
        text = data.decode("utf-8", "surrogateescape")
        del data
        out: dict[str, dict[str, Entry]] = {}
        types = _TYPES
        folder: dict[str, Entry] = {}
        current = None
        try:
            for record in text.split("\0"):
                if not record:
                    continue
                kind, mode, size, mtime, blocks, links, ident, path = record.split(" ", 7)
                parent, _, name = path.rpartition("/")
                if parent != current:  # find lists most of a folder's entries together
                    current = parent
                    folder = out.setdefault(parent, {})
                seconds, _, frac = mtime.partition(".")
                if len(frac) < 9 or not (seconds.isascii() and seconds.isdigit()):
                    return None  # before 1970 (find's rounding is not st_mtime_ns's): scandir
                folder[name] = (
                    types[kind] | int(mode, 8),
                    int(size),
                    int(seconds) * 1_000_000_000 + int(frac[:9]),
                    ident,
                    int(blocks),
                    int(links),
                )
        except (ValueError, KeyError):
            return None
        return out

    def close(self) -> None:
        """Stop find if it still runs (the listing was not used) and reap it."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@contextmanager
def begin(directory: object) -> Iterator[Listing | None]:
    """A listing of DIR begun now, or None when DIR holds neither index.json nor blobs/ (then
    Layout says what is wrong and nothing is listed); find is reaped on the way out."""
    if not isinstance(directory, str | os.PathLike):  # a registry (targets.RegistrySource)
        yield None
        return
    path = os.fspath(directory)
    if not (os.path.isdir(os.path.join(path, "blobs")) or os.path.isfile(os.path.join(path, "index.json"))):
        yield None
        return
    listing = Listing(path)
    try:
        yield listing
    finally:
        listing.close()


def identity(st: os.stat_result) -> str:
    """An lstat's device:inode as the listing prints it."""
    return f"{st.st_dev}:{st.st_ino}"


def _start_find(root: str) -> subprocess.Popen[bytes] | None:
    """GNU find listing DIR (never following a symlink below it), begun; None if impossible."""
    find = next((f for f in FIND if os.access(f, os.X_OK)), None)
    if find is None:
        return None
    try:
        return subprocess.Popen(
            [
                find,
                "-P",
                root + "/",
                "-maxdepth",
                str(MAX_DEPTH),
                "(",
                "-type",
                "d",
                "-printf",
                DIR_FORMAT,
                ")",
                "-o",
                "(",
                "-links",
                "+1",
                "-printf",
                LINKED_FORMAT,
                ")",
                "-o",
                "-printf",
                FORMAT,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
        )
    except OSError:
        return None
