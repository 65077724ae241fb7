"""BuildKit's own index.json lock: a short, non-blocking flock on DIR/index.json.lock.

BuildKit's client (client/ociindex) takes a NON-blocking flock on `index.json.lock` around every
access to index.json: shared (TryRLock) to read it, exclusive (TryLock) to rewrite it, and it
removes the lock file after unlocking. A writer that finds the lock taken fails its export at
once, so we hold the lock briefly, and shared when we only read.

Writers (`index_lock`) do the same, retry briefly while it is busy, and after locking check that
the file we hold is still the one at that path (BuildKit may have unlinked it between our open
and flock). The lock file is opened with O_NONBLOCK|O_NOFOLLOW and must be a regular file: a
FIFO, socket, directory or symlink there is refused (RefusedError, naming the file), never
waited on.

Readers (`probe_shared`, used by indexread.py) never create the lock file: when it exists they
take a shared flock on it for as long as they read index.json, and report whether it is absent,
busy (someone holds it exclusively: a write is in progress) or unusable.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from ocicache.base.errors import BusyError, RefusedError
from ocicache.format.names import LOCK_FILE
from ocicache.store.layout import file_kind

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_PROBE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_HINT = "remove it (BuildKit creates a regular file there when it needs one)"

# Directories (st_dev, st_ino) whose lock this process holds through index_lock, and how many
# times: a read under our own lock (repair, gc) must not wait for itself.
_held: dict[tuple[int, int], int] = {}


def _open_error(e: OSError) -> str:
    """Why the lock file could not be opened, in the words of `layout.file_kind` where it can say."""
    if e.errno == errno.ELOOP:
        return "a symlink"
    if e.errno == errno.EISDIR:
        return "a directory"
    if e.errno == errno.ENXIO:
        return "a socket"
    return f"cannot be opened ({e.strerror})"


def _dir_key(root_fd: int) -> tuple[int, int]:
    st = os.fstat(root_fd)
    return st.st_dev, st.st_ino


def holding(root_fd: int) -> bool:
    """True while this process holds the lock of this directory through index_lock."""
    return _held.get(_dir_key(root_fd), 0) > 0


def _same_file(root_fd: int, fd: int) -> bool:
    """The path index.json.lock still names the (regular) file open as `fd`."""
    try:
        now = os.stat(LOCK_FILE, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return stat.S_ISREG(now.st_mode) and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev)


def _open_for_writer(root_fd: int) -> int:
    try:
        fd = os.open(LOCK_FILE, _FLAGS, 0o644, dir_fd=root_fd)
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise RefusedError(f"cannot create the lock file: {e.strerror}", file=LOCK_FILE) from None
        what = _open_error(e)
        if what.startswith("a "):
            raise RefusedError(
                f"is {what}, not a regular file: refusing to lock through it", file=LOCK_FILE, hint=_HINT
            ) from None
        raise RefusedError(f"{what}: refusing to go on without BuildKit's lock", file=LOCK_FILE) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise RefusedError(
            f"is {file_kind(st.st_mode)}, not a regular file: refusing to lock through it",
            file=LOCK_FILE,
            hint=_HINT,
        )
    return fd


@contextmanager
def index_lock(root_fd: int, timeout: float = 10.0, shared: bool = False) -> Iterator[None]:
    """Hold BuildKit's index.json lock in the directory `root_fd` (shared: as a reader, which
    BuildKit's own readers do not block on); BusyError after `timeout` seconds; RefusedError
    when index.json.lock is not a regular file or cannot be created."""
    deadline = time.monotonic() + timeout
    delay = 0.005

    def busy() -> BusyError:
        return BusyError(
            "held by another process (a BuildKit export?)",
            file=LOCK_FILE,
            hint="try again when the build has finished",
        )

    while True:
        fd = _open_for_writer(root_fd)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise busy() from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        except OSError as e:
            os.close(fd)
            raise RefusedError(f"cannot be locked: {e.strerror}", file=LOCK_FILE) from None
        # The holder before us may have unlinked the file: then we locked an orphan inode.
        if _same_file(root_fd, fd):
            break
        os.close(fd)
        try:
            st = os.stat(LOCK_FILE, dir_fd=root_fd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise RefusedError(
                f"is {file_kind(st.st_mode)}, not a regular file: refusing to lock through it",
                file=LOCK_FILE,
                hint=_HINT,
            )
        if time.monotonic() >= deadline:
            raise busy()
    key = _dir_key(root_fd)
    _held[key] = _held.get(key, 0) + 1
    try:
        yield
    finally:
        _held[key] -= 1
        if not _held[key]:
            del _held[key]
        # Like BuildKit: remove the lock file while still holding it, then release (only if
        # the path still names the file we hold: never someone else's).
        with suppress(OSError):
            if _same_file(root_fd, fd):
                os.unlink(LOCK_FILE, dir_fd=root_fd)
        os.close(fd)


# -- readers -----------------------------------------------------------------------------------
ABSENT = "absent"  # no index.json.lock: nobody is reading or writing through it right now
HELD = "held"  # we hold a shared flock on it (release it with Probe.release)
BUSY = "busy"  # someone holds it exclusively: a write is in progress
MINE = "mine"  # this process holds it already (index_lock): read freely
UNUSABLE = "unusable"  # not a regular file, or cannot be opened: `reason` says why


@dataclass
class Probe:
    """What a reader found at index.json.lock."""

    state: str
    fd: int | None = None
    reason: str | None = None

    def still_held(self, root_fd: int) -> bool:
        """The lock we hold is still the file at the path (nobody unlinked and re-created it:
        a writer locking the new file would not have waited for us)."""
        return self.fd is not None and _same_file(root_fd, self.fd)

    def release(self) -> None:
        """Unlock by closing; the file is left where it was (a reader creates and removes
        nothing)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def probe_shared(root_fd: int) -> Probe:
    """Take a shared flock on an existing index.json.lock, without creating it, blocking or
    following a symlink (see the module docstring)."""
    if holding(root_fd):
        return Probe(MINE)
    try:
        fd = os.open(LOCK_FILE, _PROBE_FLAGS, dir_fd=root_fd)
    except FileNotFoundError:
        return Probe(ABSENT)
    except OSError as e:
        return Probe(UNUSABLE, reason=_open_error(e))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return Probe(UNUSABLE, reason=file_kind(st.st_mode))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return Probe(BUSY)
    except OSError as e:
        os.close(fd)
        return Probe(UNUSABLE, reason=f"cannot be locked ({e.strerror})")
    probe = Probe(HELD, fd)
    if not probe.still_held(root_fd):
        # Unlinked (BuildKit removes it after use) or replaced since we opened it.
        probe.release()
        return Probe(ABSENT)
    return probe
