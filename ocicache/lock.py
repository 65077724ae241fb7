"""BuildKit's own index.json lock: a short, non-blocking flock on DIR/index.json.lock.

BuildKit's client (client/ociindex) takes a NON-blocking flock on `index.json.lock` around every
access to index.json: shared (TryRLock) to read it, exclusive (TryLock) to rewrite it, and it
removes the lock file after unlocking. A writer that finds the lock taken fails its export at
once, so we hold the lock briefly, and shared when we only read.
We do the same, retry briefly while it is busy, and after locking check that the file we hold
is still the one at that path (BuildKit may have unlinked it between our open and flock).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from ocicache.errors import BusyError, RefusedError
from ocicache.layout import LOCK_FILE

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@contextmanager
def index_lock(root_fd: int, timeout: float = 10.0, shared: bool = False) -> Iterator[None]:
    """Hold BuildKit's index.json lock in the directory `root_fd` (shared: as a reader, which
    BuildKit's own readers do not block on); BusyError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            fd = os.open(LOCK_FILE, _FLAGS, 0o644, dir_fd=root_fd)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise RefusedError(f"cannot create the lock file: {e.strerror}",
                                   file=LOCK_FILE) from None
            if e.errno == errno.ELOOP:
                raise RefusedError("is a symlink; refusing to use it", file=LOCK_FILE) from None
            raise
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise BusyError("held by another process (a BuildKit export?)", file=LOCK_FILE,
                                hint="try again when the build has finished") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        # The holder before us may have unlinked the file: then we locked an orphan inode.
        try:
            now = os.stat(LOCK_FILE, dir_fd=root_fd, follow_symlinks=False)
            held = os.fstat(fd)
            same = stat.S_ISREG(now.st_mode) and (now.st_ino, now.st_dev) == (
                held.st_ino, held.st_dev)
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        break
    try:
        yield
    finally:
        # Like BuildKit: remove the lock file while still holding it, then release.
        with suppress(FileNotFoundError):
            os.unlink(LOCK_FILE, dir_fd=root_fd)
        os.close(fd)
