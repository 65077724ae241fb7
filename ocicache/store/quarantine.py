"""gc's quarantine: dropped blobs are moved aside, put back when needed, and purged after grace.

Why (issue 10, item 0): an export identical to an older one writes no blob and touches no mtime;
BuildKit finds the old manifest present and, at the very end, re-points index.json at it. An
export that re-uses an old layer finds it present long before its manifest exists. No mtime,
lock or ingest entry announces either, so a grace period alone cannot protect them: the deletion
itself must be undoable for a while. gc therefore never unlinks a blob from `blobs/`: it renames
it into its own folder inside DIR,

    DIR/.ocicache/quarantine/q-<ns>-<pid>/<algorithm>/<encoded>

(a rename on the same filesystem: atomic, no copy), re-reads index.json under BuildKit's lock
after a settle time and puts back (hard link into blobs/, then unlink) everything a kept export
now needs, and purges a batch only once it is older than --grace, in the same or a later run.
Every gc run, and `pin` and `repair`, first put back what index.json needs. `<ns>` is the
wall-clock time the batch was made: its age is judged from the name, since a rename keeps the
blob's own mtime.

An exclusive flock on DIR itself is held by gc for its whole run and by pin and repair while
they rewrite index.json: they never interleave (issue 10, item 3). BuildKit never takes it.

Everything is opened relative to directory fds with O_NOFOLLOW: a symlink at `.ocicache`, at a
batch or below it is never followed; a name only becomes a path after digest.is_hex_name.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from ocicache.base.errors import BusyError, RefusedError
from ocicache.format import documents as docs
from ocicache.format.digest import ALGORITHMS, is_hex_name
from ocicache.format.names import BLOBS, OWN_DIR, QUARANTINE
from ocicache.store.base import QuarantinedBlob, batch_ns
from ocicache.store.layout import Layout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _open_dir(name: str, parent_fd: int, create: bool, where: str) -> int:
    """A directory fd below `parent_fd`, made when `create`; never through a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RefusedError("is not a directory (a symlink?); refusing to use it",
                               file=where) from None
        raise
    try:
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    except FileExistsError:
        pass
    except OSError as e:
        if e.errno in _CANNOT_WRITE:
            raise RefusedError(f"cannot create: {e.strerror}", file=where) from None
        raise
    return _open_dir(name, parent_fd, False, where)


def own_dir_fd(layout: Layout, create: bool = True) -> int | None:
    """fd of DIR/.ocicache (made when `create`); None when absent and not `create`."""
    try:
        return _open_dir(OWN_DIR, layout.root_fd, create, OWN_DIR)
    except FileNotFoundError:
        return None


@contextmanager
def gc_lock(layout: Layout, timeout: float = 120.0) -> Iterator[None]:
    """One gc, pin or repair at a time on DIR (BusyError after `timeout`): an exclusive flock
    on DIR itself, so taking it creates nothing and changes no mtime. BuildKit never locks DIR
    (its lock is index.json.lock). Where the filesystem has no flock on directories, gc, pin and
    repair still never undo each other: gc re-reads index.json after its moves and puts back
    what a pin names, and pin checks under BuildKit's lock that what it pins is present."""
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0),
                 dir_fd=layout.root_fd)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BusyError("another ocicache gc, pin or repair is running on this "
                                    "directory", file=str(layout.root),
                                    hint="try again when it has finished") from None
                time.sleep(0.05)
            except OSError:
                break  # no flock here (some network filesystems): see above
        yield
    finally:
        os.close(fd)


@dataclass
class Batch:
    """One gc run's folder in the quarantine, made on the first move."""

    layout: Layout
    name: str
    _fd: int | None = None
    _alg_fds: dict[str, int] | None = None

    def alg_fd(self, algorithm: str) -> int:
        if self._alg_fds is None:
            self._alg_fds = {}
        if algorithm not in self._alg_fds:
            if self._fd is None:
                own = own_dir_fd(self.layout)
                assert own is not None
                try:
                    q = _open_dir("quarantine", own, True, QUARANTINE)
                finally:
                    os.close(own)
                try:
                    self._fd = _open_dir(self.name, q, True, f"{QUARANTINE}/{self.name}")
                    os.fsync(q)
                finally:
                    os.close(q)
            self._alg_fds[algorithm] = _open_dir(algorithm, self._fd, True,
                                                 f"{QUARANTINE}/{self.name}/{algorithm}")
        return self._alg_fds[algorithm]

    def fsync(self) -> None:
        for fd in (self._alg_fds or {}).values():
            os.fsync(fd)
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        for fd in (self._alg_fds or {}).values():
            os.close(fd)
        self._alg_fds = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def new_batch(layout: Layout) -> Batch:
    return Batch(layout, f"q-{time.time_ns()}-{os.getpid()}")


def move_in(layout: Layout, batch: Batch, algorithm: str, name: str) -> bool:
    """Rename blobs/<algorithm>/<name> into the batch; False when it is already gone."""
    if algorithm not in ALGORITHMS or not is_hex_name(algorithm, name):
        return False
    src = layout.blob_dir_fd(algorithm)
    if src is None:
        return False
    dst = batch.alg_fd(algorithm)
    try:
        os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
    except FileNotFoundError:
        return False  # another gc moved it first: gone is gone
    except OSError as e:
        rel = f"{BLOBS}/{algorithm}/{name}"
        if e.errno == errno.EXDEV:
            raise RefusedError(f"{QUARANTINE} is on another filesystem than {BLOBS}/; "
                               "stopped (what is left is consistent)", file=rel) from None
        if e.errno in _CANNOT_WRITE:
            raise RefusedError(f"cannot move into {QUARANTINE}: {e.strerror}; stopped (what "
                               "is left is consistent)", file=rel) from None
        raise
    return True


def _blob_dir_for_restore(layout: Layout, algorithm: str) -> int:
    fd = layout.blob_dir_fd(algorithm)
    if fd is not None:
        return fd
    blobs = _open_dir(BLOBS, layout.root_fd, True, BLOBS)
    try:
        os.close(_open_dir(algorithm, blobs, True, f"{BLOBS}/{algorithm}"))
    finally:
        os.close(blobs)
    layout.forget_dir(f"{BLOBS}/{algorithm}")
    layout.forget_dir(BLOBS)
    fd = layout.blob_dir_fd(algorithm)
    if fd is None:
        raise RefusedError("cannot open for restoring", file=f"{BLOBS}/{algorithm}")
    return fd


def _batch_alg_fd(layout: Layout, q: QuarantinedBlob) -> int | None:
    own = own_dir_fd(layout, create=False)
    if own is None:
        return None
    try:
        qfd = _open_dir("quarantine", own, False, QUARANTINE)
        try:
            bfd = _open_dir(q.batch, qfd, False, q.relpath)
            try:
                return _open_dir(q.algorithm, bfd, False, q.relpath)
            finally:
                os.close(bfd)
        finally:
            os.close(qfd)
    except (FileNotFoundError, RefusedError):
        return None
    finally:
        os.close(own)


def restore(layout: Layout, blobs: Iterable[QuarantinedBlob]) -> list[QuarantinedBlob]:
    """Put quarantined blobs back into blobs/, in the order given (children before parents).

    A hard link into blobs/ first, then the quarantine's name is removed: at no instant is the
    blob in neither place. A blob BuildKit has written again meanwhile is kept as BuildKit wrote
    it. Returns what is now back in blobs/ because of this call."""
    done: list[QuarantinedBlob] = []
    dirty: set[int] = set()
    for q in blobs:
        src = _batch_alg_fd(layout, q)
        if src is None:
            continue
        try:
            dst = _blob_dir_for_restore(layout, q.algorithm)
            try:
                os.link(q.name, q.name, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
                dirty.add(dst)
                done.append(q)
            except FileExistsError:
                pass  # BuildKit wrote it again: that copy stays
            except FileNotFoundError:
                continue  # purged or restored by someone else meanwhile
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                # No hard links here: a rename that never replaces an existing blob.
                try:
                    os.stat(q.name, dir_fd=dst, follow_symlinks=False)
                except FileNotFoundError:
                    with suppress(FileNotFoundError):
                        os.rename(q.name, q.name, src_dir_fd=src, dst_dir_fd=dst)
                        dirty.add(dst)
                        done.append(q)
                continue
            for fd in sorted(dirty):
                os.fsync(fd)  # the blob is durable in blobs/ before the quarantine's name goes
            dirty.clear()
            with suppress(FileNotFoundError):
                os.unlink(q.name, dir_fd=src)
        finally:
            os.close(src)
    for fd in sorted(dirty):
        os.fsync(fd)
    return done


def references(data: bytes) -> set[str]:
    """Every digest a quarantined JSON document may reference (any descriptor's `digest`, a
    cache config's `layers[].blob`): an over-approximation is safe, it only restores more."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return set()
    out: set[str] = set()
    stack: list[object] = [doc]
    while stack:  # iterative: documents from disk can nest arbitrarily deep
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("digest", "blob") and isinstance(value, str):
                    out.add(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return out


def read_quarantined(layout: Layout, q: QuarantinedBlob, limit: int = docs.JSON_LIMIT) -> bytes | None:
    """The bytes of a small quarantined blob (None: too big, unreadable, or gone)."""
    if q.size > limit:
        return None
    fd = _batch_alg_fd(layout, q)
    if fd is None:
        return None
    try:
        f = os.open(q.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                    | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        if not stat.S_ISREG(os.fstat(f).st_mode):
            return None
        chunks = []
        total = 0
        while True:
            chunk = os.read(f, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                return None
        return b"".join(chunks)
    finally:
        os.close(f)


def restore_plan(layout: Layout, missing: set[str],
                 held: dict[str, QuarantinedBlob], present: set[str]) -> list[QuarantinedBlob]:
    """What to put back so that every digest of `missing` held in the quarantine is back with
    everything it references: a post-order walk (children first), iterative."""
    order: list[QuarantinedBlob] = []
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(d, False) for d in sorted(missing) if d in held]
    while stack:
        digest, expanded = stack.pop()
        if expanded:
            order.append(held[digest])
            continue
        if digest in seen:
            continue
        seen.add(digest)
        stack.append((digest, True))
        q = held[digest]
        data = read_quarantined(layout, q) if q.size <= docs.JSON_LIMIT else None
        if data is not None and data[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
            for child in sorted(references(data)):
                if child not in seen and child not in present and child in held:
                    stack.append((child, False))
    return order


def purge(layout: Layout, held: Iterable[QuarantinedBlob], older_than_ns: int,
          keep: set[str]) -> tuple[int, int, int]:
    """Unlink every quarantined blob of a batch made before `older_than_ns` (but those in
    `keep` that are not back in blobs/), then the emptied folders. (count, bytes, allocated
    bytes given back) unlinked; anything gone is simply gone.

    A kept digest whose blob is in blobs/ again (an export wrote it anew after gc moved it:
    BuildKit found it absent) has its quarantined copy purged like any other: holding it
    would keep it, and .ocicache/, for ever."""
    count = size = allocated = 0
    by_batch: dict[str, list[QuarantinedBlob]] = {}
    for q in held:
        if q.batch_ns < older_than_ns:
            by_batch.setdefault(q.batch, []).append(q)
    for batch, blobs in sorted(by_batch.items()):
        for q in blobs:
            if q.digest in keep and not _back_in_blobs(layout, q):
                continue
            fd = _batch_alg_fd(layout, q)
            if fd is None:
                continue
            try:
                st = os.stat(q.name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue  # replaced by something else since the scan: not ours
                os.unlink(q.name, dir_fd=fd)
                count += 1
                size += q.size
                allocated += 0 if st.st_nlink > 1 else st.st_blocks * 512
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno in _CANNOT_WRITE:
                    raise RefusedError(f"cannot purge: {e.strerror}", file=q.relpath) from None
                raise
            finally:
                os.close(fd)
        _remove_empty_batch(layout, batch)
    return count, size, allocated


def _back_in_blobs(layout: Layout, q: QuarantinedBlob) -> bool:
    """True when blobs/ holds this digest again: a regular file of the quarantined size."""
    st = layout.stat_blob(q.digest)
    return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == q.size


def purge_strays(layout: Layout, older_than_ns: int) -> None:
    """Empty batch folders left by a run killed halfway (best effort, old ones only)."""
    for name in layout.quarantine_batches():
        made = batch_ns(name)
        if made is not None and made < older_than_ns:
            _remove_empty_batch(layout, name)


def _remove_empty_batch(layout: Layout, batch: str) -> None:
    own = own_dir_fd(layout, create=False)
    if own is None:
        return
    try:
        q = _open_dir("quarantine", own, False, QUARANTINE)
    except (FileNotFoundError, RefusedError):
        os.close(own)
        return
    try:
        try:
            b = _open_dir(batch, q, False, f"{QUARANTINE}/{batch}")
        except (FileNotFoundError, RefusedError):
            return
        try:
            for alg in os.listdir(b):
                with suppress(OSError):
                    os.rmdir(alg, dir_fd=b)  # only when empty (ENOTEMPTY otherwise)
        finally:
            os.close(b)
        with suppress(OSError):
            os.rmdir(batch, dir_fd=q)
        os.fsync(q)
    finally:
        os.close(q)
        os.close(own)


def remove_empty_quarantine(layout: Layout) -> None:
    """rmdir DIR/.ocicache/quarantine when nothing is held (then gc_lock removes .ocicache)."""
    own = own_dir_fd(layout, create=False)
    if own is None:
        return
    try:
        with suppress(OSError):
            os.rmdir("quarantine", dir_fd=own)
    finally:
        os.close(own)
    with suppress(OSError):  # only when empty
        os.rmdir(OWN_DIR, dir_fd=layout.root_fd)
