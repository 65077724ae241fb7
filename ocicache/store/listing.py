"""The blob scan of a cache directory, begun in the background by a forked child.

Stat-ing every entry of blobs/<algorithm>/ is the one cost every command pays (50k lstat
calls in a big cache, ~0.2 s). The CLI begins it (`begin`) as soon as typer has parsed DIR:
a child of this process runs Layout's own scan (store/scan.py, which Layout.scan_columns runs:
directory fds opened as Layout opens them, O_NOFOLLOW, nothing read but lstat) on the other
core while this one loads the modules that read DIR, and sends the result back as one marshal
document, after the clock's time before it began and its length. `Layout.scan_blobs` then
builds its BlobScan from those bytes (`Layout.scan_from_columns`) instead of stat-ing again:
the same values, from the same code, as a scan of its own. A real gc begins one under its
lock, just before each plan's read (Layout.list_ahead).

Then the child waits for one byte of answer. On a first read (the reader knows no blob:
Layout.sniff_ahead) it is "h": the child goes on to read the first 64 bytes of every regular
blob, newest first, as the reader sniffs (scan.heads: each from the very file the scan listed,
its lstat fields unchanged), and streams them back while this process parses the documents;
`Heads` hands them to Layout.read_blob_head. Otherwise the child leaves at once.

The columns are used only when they are certainly of the same directory (the device and
inode of DIR, `blobs` and each `blobs/<algorithm>` equal what the reading Layout opened), they
came whole (their length), and the scan began after the index.json the reader read was
written (Layout.scan_blobs: a scan begun before an export's index.json write may lack the
blobs that index names); otherwise (fork failed, DIR is not a cache directory, a folder
vanished, an export landing) Layout scans itself as always. A head the child did not send is
read by Layout itself. No other process is run, and nothing is written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

_CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20


class Listing:
    """A scan of DIR's blobs, begun at construction in a child; `result()` waits for it."""

    def __init__(self, directory: str) -> None:
        self.root = os.path.abspath(directory)
        self._pid, self._fd, self._go = _start(self.root)
        self._bytes: bytes | None = None
        self._stream: int | None = None  # the heads' stream, while the child sends them
        self._began = 0  # the clock's time before the child's scan began

    def result(self) -> bytes | None:
        """The marshalled columns (Layout.scan_columns); None when the child could not make them."""
        return self._columns(False)

    def take(self, heads: bool = False, began_after: Callable[[int], bool] | None = None) -> bytes | None:
        """result(), once: the listing lets go of its bytes (the caller keeps what it needs).
        `heads`: the child goes on to read the blobs' heads (store/scan.heads), which `heads()`
        then hands out. `began_after(ns)`: given the clock's time before the child's scan began
        (time.time_ns()), False when the scan is too old for the caller (Layout: it may predate
        the index.json just read); the columns are then dropped (None) and no head is read."""
        data = self._columns(heads, began_after)
        self._bytes = None
        return data

    def _columns(self, heads: bool, began_after: Callable[[int], bool] | None = None) -> bytes | None:
        pid, fd, go = self._pid, self._fd, self._go
        self._fd, self._go = None, None
        if fd is None:  # (answered already)
            return self._bytes if self._bytes and _fits(began_after, self._began) else None
        data: bytes | None = None
        try:
            head = _read_exactly(fd, 16)
            if head is not None:
                self._began = int.from_bytes(head[:8], "big")
                data = _read_exactly(fd, int.from_bytes(head[8:], "big"))
                if data and not _fits(began_after, self._began):
                    data = None
        except OSError:
            data = None
        # The child waits for this answer before it reads a single head.
        answer = b"h" if heads and data else b"-"
        if go is not None:
            with suppress(OSError):
                os.write(go, answer)
            os.close(go)
        if answer == b"h":
            self._stream = fd  # the child goes on; reaped by close()
        else:
            os.close(fd)
            self._pid = None
            if pid is not None:
                _reap(pid)
        self._bytes = data or None
        return self._bytes

    def heads(self, folders: list[tuple[str, list[str]]]) -> Heads | None:
        """The heads the child is reading (after `take(heads=True)`), for the scan's folders
        (algorithm, names) in the columns' order; None when it reads none."""
        fd, self._stream = self._stream, None
        if fd is None:
            return None
        return Heads(fd, folders, self.close)

    def close(self) -> None:
        """Stop the child if it still runs (the listing was not used, or its heads are no
        longer wanted) and reap it."""
        pid, fd, go, stream = self._pid, self._fd, self._go, self._stream
        self._pid, self._fd, self._go, self._stream = None, None, None, None
        for f in (fd, go, stream):
            if f is not None:
                os.close(f)
        if pid is not None:
            with suppress(OSError):
                os.kill(pid, 9)
            _reap(pid)


class Heads:
    """Blob heads read ahead by a listing's child (store/scan.heads: records of position,
    length, head), handed out by digest. `get` waits for the child when it has not reached the
    blob yet (it reads newest first, as the reader sniffs); None when the child sent no head for
    it (the file was not the scan's; the caller reads it itself), or already gave it."""

    def __init__(self, fd: int, folders: list[tuple[str, list[str]]], done: Callable[[], None]) -> None:
        self._fd: int | None = fd
        self._done = done
        self._rest = b""
        self._got: dict[str, dict[str, bytes | None]] = {alg: {} for alg, _ in folders}
        # (first position, names, heads by name: None where the child sent none)
        self._spans: list[tuple[int, list[str], dict[str, bytes | None]]] = []
        start = 0
        for alg, names in folders:
            self._spans.append((start, names, self._got[alg]))
            start += len(names)
        self._given: set[str] = set()

    def get(self, algorithm: str, name: str) -> bytes | None:
        got = self._got.get(algorithm)
        if got is None:
            return None
        key = f"{algorithm}:{name}"
        if key in self._given:
            return None
        while name not in got:
            if self._fd is None:
                return None
            self._more()
        self._given.add(key)
        return got.pop(name)

    def _more(self) -> None:
        fd = self._fd
        assert fd is not None
        try:
            chunk = os.read(fd, _CHUNK)
        except OSError:
            chunk = b""
        if not chunk:  # the child is done (or gone): what was not sent is read by the caller
            self.close()
            return
        buf = self._rest + chunk if self._rest else chunk
        spans = self._spans
        one = spans[0] if len(spans) == 1 else None
        i, end = 0, len(buf)
        while i + 5 <= end:
            n = buf[i + 4]
            stop = i + 5 + (0 if n == 255 else n)
            if stop > end:
                break
            pos = int.from_bytes(buf[i : i + 4], "big")
            span = one if one is not None else _span(spans, pos)
            if span is not None and 0 <= pos - span[0] < len(span[1]):
                span[2][span[1][pos - span[0]]] = buf[i + 5 : stop] if n != 255 else None
            i = stop
        self._rest = buf[i:]

    def close(self) -> None:
        """Close the stream (its fd is this object's) and stop the child (`done`)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            self._done()


def _fits(began_after: Callable[[int], bool] | None, began_ns: int) -> bool:
    return began_after is None or began_after(began_ns)


def _span(
    spans: list[tuple[int, list[str], dict[str, bytes | None]]], pos: int
) -> tuple[int, list[str], dict[str, bytes | None]] | None:
    for span in reversed(spans):
        if pos >= span[0]:
            return span
    return None


def _read_exactly(fd: int, n: int) -> bytes | None:
    """n bytes from the pipe, or None when it ends before."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


# The read commands whose DIR may be listed before the command line is parsed (`begin_early`);
# gc only with --dry-run (a real gc begins its own, under its lock: Layout.list_ahead).
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


def _start(root: str) -> tuple[int | None, int | None, int | None]:
    """Fork the child that scans DIR; (pid, read end of its pipe, write end of the pipe that
    answers it), or Nones: also in a process with other threads, whose locks a forked child
    could find held forever."""
    import _thread

    if _thread._count() > 0:  # threads started by threading or _thread (~3 ms less than threading)
        return None, None, None
    try:
        r, w = os.pipe()
    except OSError:
        return None, None, None
    try:
        ask_r, ask_w = os.pipe()
    except OSError:
        os.close(r)
        os.close(w)
        return None, None, None
    with suppress(OSError):  # (room for the heads while the parent is busy: 1 MiB, Linux's most)
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
    try:
        pid = os.fork()
    except OSError:
        for f in (r, w, ask_r, ask_w):
            os.close(f)
        return None, None, None
    if pid == 0:  # the child: scan, write, and leave without running anything of the parent's
        code = 1
        try:
            os.close(r)
            os.close(ask_w)
            from ocicache.store.scan import serve  # (imports os, marshal, stat and time only)

            def send(data: bytes) -> None:
                view = memoryview(data)
                while view:
                    view = view[os.write(w, view) :]

            serve(root, send, lambda: os.read(ask_r, 1) == b"h")
            code = 0
        except BaseException:  # any failure means "no listing" (or no more heads); the parent reads
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.close(ask_r)
    return pid, r, ask_w


def _reap(pid: int) -> int:
    """Wait for the child; its exit status (-1 when it died of a signal or cannot be waited)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return -1
    return os.waitstatus_to_exitcode(status)
