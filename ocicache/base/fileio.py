"""Bounded reads of an open file."""

from __future__ import annotations

import os


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
