"""Reading index.json while BuildKit may be rewriting it in place, without changing DIR.

BuildKit rewrites index.json in place (WriteAt, then Truncate) under an exclusive flock on
index.json.lock, a file it creates before and removes after; its own readers take a shared flock
on that file (FORMAT.md, lock.py). A read command must never report a write in progress as
damage, and must leave DIR as it found it: it creates no lock file and removes none, so it never
moves DIR's mtime and never holds a lock a build could trip over longer than one read.

- index.json.lock exists: take a shared flock on it, non-blocking. Busy (a writer holds it):
  back off and retry, for up to WAIT_S. Taken: read index.json once; the read is consistent
  when the lock file is still the one we locked afterwards and the file did not move under us.
- no lock file (nobody is reading or writing through BuildKit's lock at this instant): read
  index.json twice; the read is consistent when both reads give the same bytes, neither read
  saw the file change (fstat size, mtime, ctime, inode), and no lock file appeared meanwhile.
- anything else (a FIFO, a directory, ... at index.json.lock: BuildKit itself cannot use it):
  as with no lock file, and a warning says so.

Only a consistent read is judged: torn JSON then is really torn (nobody is writing) and the
caller suggests `repair`; read without the lock, torn is believed only when a second consistent
read CONFIRM_S later gives the same bytes. If no consistent read could be made within WAIT_S
(a process held the lock all along, or index.json kept changing), index.json is used only when
it held still all that time and decodes (a stuck holder, with a warning); otherwise BusyError
(exit 7): a write is in progress, try again.
"""

from __future__ import annotations

import os
import time

from ocicache.base.errors import BusyError, CorruptError
from ocicache.format import documents as docs
from ocicache.format.names import INDEX_JSON, LOCK_FILE
from ocicache.store.base import IndexRead
from ocicache.store.layout import Layout
from ocicache.store.lock import ABSENT, BUSY, HELD, MINE, UNUSABLE, Probe, probe_shared

WAIT_S = 2.0  # how long a read waits for a write in progress (BuildKit's take milliseconds)
# A torn index.json read without the lock is judged torn only when a second consistent read this
# much later gives the same bytes (a write in progress has ended by then; damage stays).
CONFIRM_S = 0.05
_FIRST_DELAY_S = 0.001
_MAX_DELAY_S = 0.005  # short polls: a writer's lock-free gap between rewrites can be short

_Read = tuple[bytes, os.stat_result, os.stat_result] | None


def read_index(layout: Layout, wait_s: float | None = None) -> IndexRead:
    """index.json as it is between writes (see the module docstring).

    Raises BusyError when a write is in progress for all of `wait_s` (default WAIT_S) and what
    can be read is torn; CorruptError when index.json cannot be read at all (not a regular
    file, a symlink, too large: layout.py)."""
    root_fd = layout.root_fd
    wait = WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait
    delay = _FIRST_DELAY_S
    warnings: list[str] = []
    busy = False
    torn: tuple[bytes, float] | None = None  # an unconfirmed torn read and when it was made
    # What index.json held each time the lock was busy, while it held still (None: it moved).
    held_still: bytes | None = None
    moved = False
    while True:
        probe = probe_shared(root_fd)
        if probe.state == UNUSABLE and not warnings:
            warnings.append(
                f"{LOCK_FILE}: {probe.reason}, not a regular file: BuildKit cannot "
                "lock this directory (its imports and exports of it fail or hang); "
                "remove it. index.json was read without the lock"
            )
        pause = delay
        if probe.state == BUSY:
            data, stable = _double_read(layout)
            if not stable or data is None or (busy and data != held_still):
                moved = True
            busy, held_still = True, data
        else:
            data, consistent = _attempt(layout, probe)
            if consistent:
                got = _judged(data, warnings)
                if got.error is None or probe.state in (HELD, MINE):
                    return got  # locked: torn is torn (no writer could be writing)
                assert data is not None
                now = time.monotonic()
                if torn is not None and torn[0] == data and now - torn[1] >= CONFIRM_S:
                    return got
                if torn is None or torn[0] != data:
                    torn = (data, now)
                pause = CONFIRM_S
        if time.monotonic() >= deadline:
            break
        time.sleep(pause)
        delay = min(delay * 2, _MAX_DELAY_S)
    # No consistent read in time. If index.json held still the whole time the lock was held
    # (a holder that is stuck, not writing) and decodes, it is used; else a write is in
    # progress. (BuildKit writes the whole document with one WriteAt: a torn state it leaves
    # does not hold still while it keeps the lock.)
    data, stable = _double_read(layout)
    if stable and data is not None and not moved and (not busy or data == held_still):
        try:
            doc = docs.loads_strict(data, INDEX_JSON)
        except CorruptError:
            pass
        else:
            why = f"held by another process for {wait:g} s" if busy else "index.json kept changing"
            warnings.append(f"{LOCK_FILE}: {why}: index.json was read without BuildKit's lock")
            return IndexRead(data, doc, None, tuple(warnings))
    why = "index.json.lock is held by another process" if busy else "it kept changing while it was read"
    raise BusyError(
        f"a write is in progress: index.json is being rewritten ({why})",
        file=INDEX_JSON,
        hint="try again when the build has finished (a write in progress is not "
        "damage: index.json is complete again when it ends)",
    )


def _judged(data: bytes | None, warnings: list[str]) -> IndexRead:
    if data is None:
        return IndexRead(None, None, None, tuple(warnings))
    try:
        return IndexRead(data, docs.loads_strict(data, INDEX_JSON), None, tuple(warnings))
    except CorruptError as e:
        return IndexRead(data, None, e, tuple(warnings))


def _attempt(layout: Layout, probe: Probe) -> tuple[bytes | None, bool]:
    """(bytes or None, whether the read is consistent) for one try."""
    root_fd = layout.root_fd
    if probe.state in (HELD, MINE):
        try:
            got = layout.read_top_stat(INDEX_JSON)
            held = probe.state == MINE or probe.still_held(root_fd)
        finally:
            probe.release()
        return (None if got is None else got[0]), held and _unmoved(got)
    # No lock to hold: DIR's own stat moves when a writer creates or removes the lock file.
    dir_before = _key(os.fstat(root_fd))
    data, stable = _double_read(layout)
    if probe.state == ABSENT and _lock_exists(root_fd):
        return data, False  # a writer may have begun meanwhile: look again
    return data, stable and _key(os.fstat(root_fd)) == dir_before


def _double_read(layout: Layout) -> tuple[bytes | None, bool]:
    first = layout.read_top_stat(INDEX_JSON)
    second = layout.read_top_stat(INDEX_JSON)
    if first is None or second is None:
        return None, first is None and second is None
    stable = (
        first[0] == second[0] and _unmoved(first) and _unmoved(second) and _key(first[2]) == _key(second[1])
    )
    return first[0], stable


def _key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _unmoved(got: _Read) -> bool:
    return got is None or _key(got[1]) == _key(got[2])


def _lock_exists(root_fd: int) -> bool:
    try:
        os.stat(LOCK_FILE, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


__all__ = ["BUSY", "WAIT_S", "IndexRead", "read_index"]
