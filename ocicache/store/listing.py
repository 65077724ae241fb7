"""The blob scan of a cache directory, begun in the background by a forked child.

Stat-ing every entry of blobs/<algorithm>/ is the one cost every command pays (50k lstat
calls in a big cache, ~0.2 s). The CLI begins it (`begin`) as soon as typer has parsed DIR:
a child of this process runs Layout's own scan (store/scan.py, which Layout.scan_columns runs:
directory fds opened as Layout opens them, O_NOFOLLOW, nothing read but lstat) on the other
core while this one loads the modules that read DIR, and sends the result back as one marshal
document. `Layout.scan_blobs` then builds its BlobScan from those bytes
(`Layout.scan_from_columns`) instead of stat-ing again: the same values, from the same code,
as a scan of its own.

The columns are used only when they are certainly of the same directory (the device and
inode of DIR, `blobs` and each `blobs/<algorithm>` equal what the reading Layout opened) and the
child exited cleanly; otherwise (fork failed, DIR is not a cache directory, a folder vanished)
Layout scans itself as always. No other process is run, and nothing is written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_CHUNK = 1 << 20


class Listing:
    """A scan of DIR's blobs, begun at construction in a child; `result()` waits for it."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.abspath(directory)
        self._pid, self._fd = _start(self.root)
        self._bytes: bytes | None = None

    def result(self) -> bytes | None:
        """The marshalled columns (Layout.scan_columns); None when the child could not make them."""
        pid, fd = self._pid, self._fd
        self._pid, self._fd = None, None
        if pid is None or fd is None:
            return self._bytes
        chunks: list[bytes] = []
        try:
            while chunk := os.read(fd, _CHUNK):
                chunks.append(chunk)
        except OSError:
            chunks = []
        finally:
            os.close(fd)
        status = _reap(pid)
        data = b"".join(chunks)
        self._bytes = data if status == 0 and data else None
        return self._bytes

    def take(self) -> bytes | None:
        """result(), once: the listing lets go of its bytes (the caller keeps what it needs)."""
        data = self.result()
        self._bytes = None
        return data

    def close(self) -> None:
        """Stop the child if it still runs (the listing was not used) and reap it."""
        pid, fd = self._pid, self._fd
        self._pid, self._fd = None, None
        if fd is not None:
            os.close(fd)
        if pid is not None:
            with suppress(OSError):
                os.kill(pid, 9)
            _reap(pid)


# The read commands whose DIR may be listed before the command line is parsed (`begin_early`);
# gc only with --dry-run (a real gc stats every blob itself, under its rules).
EARLY_COMMANDS = frozenset({"history", "show", "blobs", "du", "diff"})
_early: dict[str, Listing] = {}


def _is_cache_dir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "blobs")) or os.path.isfile(os.path.join(path, "index.json"))


def begin_early(argv: list[str]) -> None:
    """Begin the listing of the directory a read command line most likely names, before the
    modules that parse it are even loaded (~0.1 s sooner). A guess, never a decision: the
    command's first argument that is not an option, when it is a cache directory; `begin`
    uses the listing only if typer's DIR is that very path, and a listing nobody takes is
    stopped on exit."""
    args = [a for a in argv if a != "--debug"]
    if len(args) < 2 or args[0] not in EARLY_COMMANDS | {"gc"}:
        return
    if args[0] == "gc" and "--dry-run" not in args[1:]:
        return
    first = next((a for a in args[1:] if not a.startswith("-")), None)
    if first is None or "=" in first or first.startswith("registry://") or not _is_cache_dir(first):
        return
    import atexit

    listing = Listing(first)
    _early[listing.root] = listing
    atexit.register(stop_early)


def stop_early() -> None:
    while _early:
        _, listing = _early.popitem()
        listing.close()


@contextmanager
def begin(directory: object) -> Iterator[Listing | None]:
    """A listing of DIR begun now (or by `begin_early`), or None when DIR holds neither
    index.json nor blobs/ (then Layout says what is wrong and nothing is listed); the child is
    reaped on the way out."""
    if not isinstance(directory, str | os.PathLike):  # a registry (targets.RegistrySource)
        stop_early()
        yield None
        return
    path = os.fspath(directory)
    listing = _early.pop(os.path.abspath(path), None)
    stop_early()  # (a guess that was wrong)
    if listing is None:
        if not _is_cache_dir(path):
            yield None
            return
        listing = Listing(path)
    try:
        yield listing
    finally:
        listing.close()


def _start(root: str) -> tuple[int | None, int | None]:
    """Fork the child that scans DIR; (pid, read end of its pipe), or (None, None): also in a
    process with other threads, whose locks a forked child could find held forever."""
    import _thread

    if _thread._count() > 0:  # threads started by threading or _thread (~3 ms less than threading)
        return None, None
    try:
        r, w = os.pipe()
    except OSError:
        return None, None
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None, None
    if pid == 0:  # the child: scan, write, and leave without running anything of the parent's
        code = 1
        try:
            os.close(r)
            from ocicache.store.scan import columns_of  # (imports os and marshal only)

            view = memoryview(columns_of(root))
            while view:
                view = view[os.write(w, view) :]
            code = 0
        except BaseException:  # any failure means "no listing"; the parent scans
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _reap(pid: int) -> int:
    """Wait for the child; its exit status (-1 when it died of a signal or cannot be waited)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status)
