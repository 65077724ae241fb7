"""ocicache's one cache, in $XDG_CACHE_HOME/ocicache (never inside a directory it reads): the
kept read of each directory.

`reads/<SHA-256 of DIR's path>.marshal` holds the newest read of DIR (ops/kept.py: what the
reader found, by digest, and the exports). A digest names its content for good, so what a blob
*is* (not JSON; a cache manifest; a cache config; a foreign manifest; JSON that failed to parse,
and why) never changes: a read of an unchanged directory takes everything from it, and a read of
a changed one opens only the blobs it does not know (of the right size).

Never a wrong answer, never an error:
- the file is stamped with ocicache's version, Python's (marshal's format is per version) and a
  SHA-256 of the whole package and its schemas (`read_stamp`: no hand-bumped format number),
  and checksummed; anything unreadable, mismatched or malformed is ignored as if absent;
- writes go to a temporary file renamed over the old one (atomic); of two processes writing at
  once the last one wins (each file is whole and right);
- `check` never uses it; OCICACHE_NO_CACHE=1 turns it off; a library call uses it only when
  asked (`use_cache=True`; the CLI asks).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import tempfile
import zlib
from pathlib import Path

from ocicache import __version__
from ocicache.base.xdg import _inside, cache_dir
from ocicache.format.schema import schema_dir

_PY = f"py{sys.version_info[0]}.{sys.version_info[1]}"  # marshal's format is per version
READS_DIR = "reads"  # one kept read per directory
_READ_MAGIC = b"OCR1 "  # then read_stamp, a newline, the CRC-32 of the rest, and the rest


@functools.cache
def read_stamp() -> str:
    """The stamp a kept read must carry to be used: ocicache's version, Python's, and a SHA-256
    of every module of the package and the schemas (a kept read holds values the reader, the
    format and core computed). ~2 ms."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    try:
        for path in sorted(package.rglob("*.py")):
            h.update(b"%s\0%s\0" % (str(path.relative_to(package)).encode(), path.read_bytes()))
        for entry in sorted(schema_dir().iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                h.update(b"%s\0%s\0" % (entry.name.encode(), entry.read_bytes()))
    except OSError:
        return f"ocicache-read/{__version__}/{_PY}/-"  # cannot list: the version alone
    return f"ocicache-read/{__version__}/{_PY}/{h.hexdigest()}"


class ReadCache:
    """Where the kept reads live (None: nowhere, nothing is kept)."""

    def __init__(self, directory: Path | None, layout_root: Path | str | None = None) -> None:
        self.directory: Path | None = None
        if directory is not None and not (isinstance(layout_root, Path) and _inside(directory, layout_root)):
            self.directory = directory

    @classmethod
    def default(cls, layout_root: Path | str | None = None) -> ReadCache:
        return cls(cache_dir(), layout_root)

    def _read_path(self, root: Path | str) -> Path | None:
        if self.directory is None:
            return None
        name = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:40]
        return self.directory / READS_DIR / f"{name}.marshal"

    def kept_read(self, root: Path | str) -> memoryview | None:
        """The bytes of the read of `root` kept by an earlier run (whole, checksum right, same
        stamp); None when there is none or it is unusable."""
        path = self._read_path(root)
        if path is None:
            return None
        head = _READ_MAGIC + read_stamp().encode() + b"\n"
        try:
            with open(path, "rb") as f:
                data = f.read()
                with contextlib.suppress(OSError):
                    os.utime(f.fileno())  # (used: pruned last)
            body = memoryview(data)[len(head) + 4 :]
            if (
                not data.startswith(head)
                or zlib.crc32(body).to_bytes(4, "big") != data[len(head) : len(head) + 4]
            ):
                return None
            return body  # (a view: a 10 MB read is not copied)
        except Exception:  # absent, unreadable, truncated, foreign: as if there were none
            return None

    def keep_read(self, root: Path | str, data: bytes) -> None:
        """Keep `data` as the read of `root` (atomically; errors are ignored)."""
        path = self._read_path(root)
        if path is None:
            return
        with contextlib.suppress(Exception):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".read-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_READ_MAGIC + read_stamp().encode() + b"\n" + zlib.crc32(data).to_bytes(4, "big"))
                    f.write(data)  # (not concatenated: that would copy ~10 MB at peak memory)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            _prune(path.parent, keep=path.name)
            with contextlib.suppress(OSError):
                os.unlink(path.parent.parent / _OLD_FACTS)  # 0.5's per-digest file: replaced


_OLD_FACTS = "blobs.marshal"
MAX_READS = 32  # kept reads (directories) at most; the least recently used go first


def _prune(folder: Path, keep: str) -> None:
    """Delete the oldest kept reads past MAX_READS (a read refreshes its file's mtime), and
    temporary files a killed run left (over an hour old)."""
    import time

    entries: list[tuple[int, str]] = []
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            if entry.name.startswith(".read-"):
                if st.st_mtime < time.time() - 3600:
                    os.unlink(entry.path)
            elif entry.name.endswith(".marshal") and entry.name != keep:
                entries.append((st.st_mtime_ns, entry.name))
    entries.sort()
    for _, name in entries[: max(0, len(entries) + 1 - MAX_READS)]:
        with contextlib.suppress(OSError):
            os.unlink(folder / name)
