"""Whole answers of repeated read-only command lines, kept in $XDG_CACHE_HOME/ocicache/answers.

A run of `history --json` or `du` over a directory nobody changed prints what the last run
printed. The answer is a function of what is in DIR, and what is in DIR is named by:

- the listing of DIR to depth 3, the deepest these commands read (every entry's relative path,
  type, mode, owner, size, mtime in ns, blocks allocated and hard links; the device and inode
  of a folder and of a file with other hard links), as GNU
  `find -P DIR/ -printf` prints it (listing.py): a blob's digest names its content, so the
  listing names the blobs' contents (`check` is what verifies that; it never uses this);
- the bytes of index.json and oci-layout (rewritten in place within one mtime tick, they could
  keep their size and mtime);
- the command line, DIR as given (absolute) and as resolved, the caller's uid/gids (what is
  readable), the ocicache and Python versions, and the SHA-256 of ocicache's source files (the
  code that computed the answer).

Their SHA-256 is the key. The listing is started first, in the background (`Listing`): GNU find
stats DIR on another core while the command's modules load.

An answer is stored only when nothing changed between just before the listing began and the end
of the read (a "fence", compared then and at `save`): the lstat (inode, mode, mtime and ctime)
of `blobs/`, `blobs/<algorithm>/` and `ingest/` (any entry added, removed or renamed in them moves
their mtime and ctime; ctime cannot be set back), and the lstat and bytes of index.json and
oci-layout (BuildKit rewrites index.json in place: its ctime moves on every write). A blob is
never rewritten in place by BuildKit (a digest names its content); if some other program does,
its new size or mtime is in the next listing, so an answer read from the new content is kept
under a key that no later listing has. The read must also meet no read failure (a state of the
moment, not of the directory). Anything else (no GNU find, an unreadable subfolder, a damaged,
truncated or foreign answer file) is a miss: the command runs as without a memo.
Never inside DIR; OCICACHE_NO_CACHE=1 turns it off with the blob cache. One small file per
(directory, command line); `check`, `gc` and every writer never use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import marshal
import os
import sys
import zlib
from pathlib import Path

from ocicache import __version__
from ocicache.store.listing import Listing

FORMAT = 3  # 3: foreign content walked by descriptors (answers of older code are not reused)
_STAMP = f"ocicache-answer/{FORMAT}/{__version__}/py{sys.version_info[0]}.{sys.version_info[1]}"


def _code() -> str:
    """SHA-256 of ocicache's own source files: an answer is what this code printed, so a
    change to how answers are computed (not only a new version number) misses every kept
    one. ~1 ms; a package that cannot be listed keys on its version alone."""
    h = hashlib.sha256()
    base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        for sub in ("", "base", "format", "store", "core", "ops", "cli"):
            folder = os.path.join(base, sub)
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    with open(os.path.join(folder, name), "rb") as f:
                        data = f.read()
                    h.update(b"%s/%s\0%d\0%s" % (sub.encode(), name.encode(), len(data), data))
    except OSError:
        return "-"
    return h.hexdigest()
_MAGIC = b"OCA1"
_INDEX_LIMIT = 256 << 20  # as layout.INDEX_LIMIT (not imported: this module starts first)


def begin(directory: str) -> Listing:
    """A listing of DIR begun now (it runs in the background), with the fence taken just
    before it."""
    fence = _fence(os.path.abspath(directory))
    listing = Listing(directory)
    listing.fence = fence
    return listing


class Memo:
    """The memo slot of one command line over one directory."""

    def __init__(self, path: Path, listing: Listing, tag: str) -> None:
        self.path = path
        self.root = listing.root
        self.tag = tag
        self.fence: Fence | None = listing.fence  # type: ignore[assignment]
        self.key = self._key(listing)

    @classmethod
    def open(cls, directory: str, tag: str, listing: Listing | None = None) -> Memo | None:
        """The slot for `tag` (the command line without DIR) over `directory`, or None when
        answers cannot be kept (no cache directory, or it would be inside DIR). `listing`, when
        given, was begun earlier over the same directory."""
        root = os.path.abspath(directory)
        if listing is not None and listing.root != root:
            listing = None
        path = cls.slot(directory, tag)
        if path is None:
            if listing is not None:
                listing.result()  # reap find
            return None
        try:
            memo = cls(path, listing or begin(root), tag)
        except Exception:
            return None
        return memo if memo.key is not None else None

    @staticmethod
    def slot(directory: str, tag: str) -> Path | None:
        """The answer file of `tag` over `directory`; None when answers cannot be kept (no
        cache directory, or it would be inside DIR)."""
        from ocicache.base.xdg import _inside, cache_dir

        base = cache_dir()
        root = os.path.abspath(directory)
        if base is None or _inside(base, Path(root)):
            return None
        name = hashlib.sha256(f"{tag}\0{root}".encode()).hexdigest()[:32]
        return base / "answers" / f"{name}.marshal"

    def _key(self, listing: Listing) -> bytes | None:
        """SHA-256 of everything the answer depends on; None when it cannot be known."""
        data = listing.result()
        if data is None or self.fence is None:
            return None
        if os.path.lexists(os.path.join(self.root, ".ocicache", "quarantine")):
            # gc's quarantine changes below the listing's depth (quarantine.py): answers over
            # a directory that has one are not kept.
            return None
        h = hashlib.sha256()
        ids = (os.geteuid(), os.getegid(), sorted(os.getgroups()))
        for part in (_STAMP, _code(), self.tag, self.root, os.path.realpath(self.root),
                     repr(ids)):
            h.update(part.encode("utf-8", "surrogateescape") + b"\0")
        for content in self.fence[1]:  # index.json, oci-layout, as they were before the listing
            if content is None:
                h.update(b"-\0")
            else:
                h.update(b"%d\0%s" % (len(content), content))
        h.update(data)
        return h.digest()

    def load(self, now_ns: int = 0) -> tuple[str, list[str]] | None:
        """(stdout text, warnings) of the last run with this key; None on any mismatch, or when
        the answer was kept with a time window that `now_ns` is not in."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
            body = memoryview(data)[8:]
            if data[:4] != _MAGIC or zlib.crc32(body).to_bytes(4, "big") != data[4:8]:
                return None
            stamp, key, text, warnings, window = marshal.loads(body)
            if window is not None and not window[0] <= now_ns < window[1]:
                return None
            if (stamp != _STAMP or key != self.key or type(text) is not str
                    or type(warnings) is not list
                    or not all(type(w) is str for w in warnings)):
                return None
            return text, warnings
        except Exception:  # absent, unreadable, truncated, foreign: a miss
            return None

    def save(self, text: str, warnings: list[str],
             window: tuple[int, int] | None = None) -> None:
        """Keep this answer if the directory did not change while it was computed; with a
        `window` (start, end) in ns, it holds only for a clock in [start, end)."""
        with contextlib.suppress(Exception):
            if self.key is None or self.fence is None or _fence(self.root) != self.fence:
                return
            import tempfile

            body = marshal.dumps((_STAMP, self.key, text, warnings, window))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".answer-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + zlib.crc32(body).to_bytes(4, "big"))
                    f.write(body)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


# lstat fields that move when a directory's entries change (mtime, ctime) or it is replaced.
_Stat = tuple[int, int, int, int, int, int] | None
Fence = tuple[tuple[_Stat, ...], tuple[bytes | None, ...]]
_FENCED_DIRS = ("blobs", "blobs/sha256", "blobs/sha512", "ingest")
_FENCED_FILES = ("index.json", "oci-layout")


def _lstat(path: str) -> _Stat:
    """The fenced fields; None when there is no such entry (or a file stands where a folder
    on the way should be: `blobs` as a regular file). Other errors propagate."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _fence(root: str) -> Fence | None:
    """What must not change while an answer is computed (module docstring); None when a
    fenced entry cannot be looked at (then nothing is kept)."""
    try:
        stats = tuple(_lstat(os.path.join(root, name)) for name in _FENCED_DIRS + _FENCED_FILES)
    except OSError:
        return None
    contents: list[bytes | None] = []
    for name in _FENCED_FILES:
        data = _read_small(os.path.join(root, name))
        if data is False:
            return None
        contents.append(data if isinstance(data, bytes) else None)
    return stats, tuple(contents)


def _read_small(path: str) -> bytes | bool | None:
    """A top-level file's bytes; None when absent; False when it cannot be used as a key."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        return False
    try:
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size > _INDEX_LIMIT:
                return False  # never read a (sparse, hostile) file that large for a key
            data = f.read(_INDEX_LIMIT + 1)
    except OSError:
        return False
    return False if len(data) > _INDEX_LIMIT else data
