"""Whole answers of repeated read-only command lines, kept in $XDG_CACHE_HOME/ocicache/answers.

A run of `history --json` or `du` over a directory nobody changed prints what the last run
printed. The answer is a function of what is in DIR, and what is in DIR is named by:

- the full recursive listing of DIR (every entry's relative path, type, mode, owner, size and
  mtime in ns), as GNU `find -P DIR -printf` prints it: a blob's digest names its content, so
  the listing names the blobs' contents (`check` is what verifies that; it never uses this);
- the bytes of index.json and oci-layout (rewritten in place within one mtime tick, they could
  keep their size and mtime);
- the command line, DIR as given (absolute) and as resolved, the caller's uid/gids (what is
  readable), the ocicache and Python versions.

Their SHA-256 is the key. An answer is stored only when the key computed before the read equals
the key computed after it (nothing changed while reading) and the read had no read failure (a
state of the moment, not of the directory). Anything else (no GNU find, an unreadable subfolder,
a damaged, truncated or foreign answer file) is a miss: the command runs as without a memo.
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

FORMAT = 1
_STAMP = f"ocicache-answer/{FORMAT}/{__version__}/py{sys.version_info[0]}.{sys.version_info[1]}"
_MAGIC = b"OCA1"
_FIND = ("/usr/bin/find", "/bin/find")
# type, mode, uid, gid, size, mtime (s.ns), path relative to DIR; NUL-terminated (names may
# hold newlines).
_FORMAT = "%y %m %U %G %s %T@ %P\\0"
_INDEX_LIMIT = 16 << 20


class Memo:
    """The memo slot of one command line over one directory."""

    def __init__(self, path: Path, root: str, tag: str) -> None:
        self.path = path
        self.root = root
        self.tag = tag
        self.key = self.current_key()

    @classmethod
    def open(cls, directory: str, tag: str) -> Memo | None:
        """The slot for `tag` (the command line without DIR) over `directory`, or None when
        answers cannot be kept (no cache directory, or it would be inside DIR)."""
        from ocicache.xdg import _inside, cache_dir

        base = cache_dir()
        root = os.path.abspath(directory)
        if base is None or _inside(base, Path(root)):
            return None
        name = hashlib.sha256(f"{tag}\0{root}".encode()).hexdigest()[:32]
        try:
            memo = cls(base / "answers" / f"{name}.marshal", root, tag)
        except Exception:
            return None
        return memo if memo.key is not None else None

    def current_key(self) -> bytes | None:
        """SHA-256 of everything the answer depends on; None when it cannot be known."""
        listing = _listing(self.root)
        if listing is None:
            return None
        h = hashlib.sha256()
        ids = (os.geteuid(), os.getegid(), sorted(os.getgroups()))
        for part in (_STAMP, self.tag, self.root, os.path.realpath(self.root), repr(ids)):
            h.update(part.encode("utf-8", "surrogateescape") + b"\0")
        for name in ("index.json", "oci-layout"):
            data = _read_small(os.path.join(self.root, name))
            if data is None:
                h.update(b"-\0")
            elif isinstance(data, bytes):
                h.update(b"%d\0%s" % (len(data), data))
            else:
                return None
        h.update(listing)
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
            if self.key is None or self.current_key() != self.key:
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


def _listing(root: str) -> bytes | None:
    """GNU find's listing of DIR (never following a symlink below it); None on any failure."""
    find = next((f for f in _FIND if os.access(f, os.X_OK)), None)
    if find is None:
        return None
    import subprocess

    try:
        proc = subprocess.run([find, "-P", root + "/", "-printf", _FORMAT],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
                              check=False)
    except OSError:
        return None
    if proc.returncode != 0 or not proc.stdout:
        return None
    return proc.stdout


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
            data = f.read(_INDEX_LIMIT + 1)
    except OSError:
        return False
    return False if len(data) > _INDEX_LIMIT else data
