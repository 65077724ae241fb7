"""Bounded reads of an open file, and a bounded wait for its flock."""

from __future__ import annotations

import fcntl
import os
import time


def read_at_most(fd: int, limit: int) -> bytes:
    """The file's bytes from its offset, at most `limit` + 1 of them: more than `limit` means it
    is over the limit (the caller says so), however its size changed since it was stat-ed."""
    chunks: list[bytes] = []
    remaining = limit + 1
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def flock_within(fd: int, timeout: float, poll: float) -> bool | None:
    """An exclusive flock of `fd`, waited for at most `timeout` seconds (tried every `poll`):
    True when taken, False when another holder kept it that long, None when the filesystem
    gives no flock (some network filesystems). Released when `fd` is closed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
        except OSError:
            return None
