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

When a run drops most of `blobs/<algorithm>/`, moving blob by blob costs a rename per blob;
instead (`Batch.take_folder`) the few blobs kept are hard-linked into a new folder made like
`blobs/<algorithm>` (owner, group, mode, no extended attributes), and the two folders are
exchanged in one atomic step (renameat2 RENAME_EXCHANGE): at no instant is `blobs/<algorithm>`
absent or is a kept blob missing from it, and the old folder, every dropped blob in it, is the
batch's `<algorithm>/`. `settle_exchange` then puts back every entry of it that the plan did not
drop (the kept blobs' second names go; a blob a writer renamed into blobs/ between gc's last look
and the exchange is linked back). The names the plan drops are written first, durably, to
`.ocicache/<batch>.<algorithm>.dropped`, so that a run killed between the exchange and the
settle leaves the next gc, pin or repair (`recover_exchanges`) what it needs to finish it.

The purge unlinks in a few threads: on a filesystem mounted with `discard` each unlink of a
file waits for the device, and the waits overlap.

Everything is opened relative to directory fds with O_NOFOLLOW: a symlink at `.ocicache`, at a
batch or below it is never followed; a name only becomes a path after digest.is_hex_name.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from ocicache.base.errors import BusyError, RefusedError
from ocicache.base.fileio import flock_within
from ocicache.format import documents as docs
from ocicache.format.digest import ALGORITHMS, is_hex_name
from ocicache.format.names import BLOBS, OWN_DIR, QUARANTINE
from ocicache.store.base import QuarantinedBlob, batch_ns
from ocicache.store.layout import Layout

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)
_NO_LINK = (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK)  # no hard link here: rename instead
PURGE_WORKERS = 8  # threads unlinking at once (each unlink may wait on the device)
# Filesystems whose unlink never waits on a device: there, purge threads beyond the cores only
# contend for the folder's lock and the GIL (50k blobs, 2 cores, tmpfs: 8 threads 1.2 s, 2
# threads 0.72 s, 1 thread 0.86 s; ext4: 8 threads 2.3 s, 2 threads 5.2 s, 1 thread 8.6 s).
_MEMORY_FS = frozenset({"tmpfs", "ramfs"})
_CHUNK = 256  # blobs a purge thread takes at a time
_DROPPED = ".dropped"  # .ocicache/<batch>.<algorithm>.dropped: what an exchange drops
_END = "."  # the journal's last line: written whole
_T = TypeVar("_T")


def _open_dir(name: str, parent_fd: int, create: bool, where: str) -> int:
    """A directory fd below `parent_fd`, made when `create`; never through a symlink."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RefusedError("is not a directory (a symlink?); refusing to use it", file=where) from None
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
    fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0), dir_fd=layout.root_fd)
    try:
        # (None: no flock here, some network filesystems: see above)
        if flock_within(fd, timeout, 0.05) is False:
            raise BusyError(
                "another ocicache gc, pin, repair or copy is running on this directory",
                file=str(layout.root),
                hint="try again when it has finished",
            )
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

    def _batch_fd(self) -> int:
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
        return self._fd

    def alg_fd(self, algorithm: str) -> int:
        if self._alg_fds is None:
            self._alg_fds = {}
        if algorithm not in self._alg_fds:
            self._alg_fds[algorithm] = _open_dir(
                algorithm, self._batch_fd(), True, f"{QUARANTINE}/{self.name}/{algorithm}"
            )
        return self._alg_fds[algorithm]

    def has(self, algorithm: str) -> bool:
        return bool(self._alg_fds) and algorithm in (self._alg_fds or {})

    def folder_like(self, algorithm: str, like: os.stat_result, like_xattrs: dict[str, bytes]) -> int | None:
        """A new, empty `<algorithm>/` folder in this batch with the owner, group, mode and
        extended attributes (ACLs, security label) of blobs/<algorithm> (`like`, `like_xattrs`),
        to take that folder's place (`take_folder`); None when this batch already has one, or
        it cannot be made alike (then it is not made)."""
        if self.has(algorithm):
            return None
        bfd = self._batch_fd()
        try:
            os.mkdir(algorithm, 0o700, dir_fd=bfd)
        except OSError:
            return None
        fd = _open_dir(algorithm, bfd, False, f"{QUARANTINE}/{self.name}/{algorithm}")
        want = (like.st_uid, like.st_gid, stat.S_IMODE(like.st_mode))
        try:
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != want[:2]:
                os.fchown(fd, like.st_uid, like.st_gid)  # gc run as root on a user's cache
            have = xattrs(fd)
            if have is not None and have != like_xattrs:
                for key in sorted(set(have) - set(like_xattrs)):
                    os.removexattr(fd, key)
                for key, value in sorted(like_xattrs.items()):
                    if have.get(key) != value:
                        os.setxattr(fd, key, value)
            os.fchmod(fd, want[2])  # after chown (may clear setgid) and ACLs (set the mask)
            st = os.fstat(fd)
            alike = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == want and xattrs(fd) == like_xattrs
        except OSError:
            alike = False
        if not alike:
            os.close(fd)
            with suppress(OSError):
                os.rmdir(algorithm, dir_fd=bfd)
            return None
        if self._alg_fds is None:
            self._alg_fds = {}
        self._alg_fds[algorithm] = fd
        return fd

    def take_folder(self, algorithm: str, parent_fd: int, old: os.stat_result) -> bool:
        """Exchange this batch's `<algorithm>/` (made by `folder_like`) with `<algorithm>` in
        `parent_fd` (blobs/), atomically. True when done and the folder that came in is `old`
        (same device and inode); False when the system cannot exchange (nothing changed) or
        something else was there (swapped back: nothing changed)."""
        assert self._alg_fds is not None and self._fd is not None
        if not exchange(parent_fd, algorithm, self._fd, algorithm):
            return False
        came = os.stat(algorithm, dir_fd=self._fd, follow_symlinks=False)
        if (came.st_dev, came.st_ino) != (old.st_dev, old.st_ino) or not stat.S_ISDIR(came.st_mode):
            if not exchange(parent_fd, algorithm, self._fd, algorithm):
                raise RefusedError(
                    "an exchanged folder could not be swapped back", file=f"{BLOBS}/{algorithm}"
                )
            return False
        os.fsync(parent_fd)
        os.fsync(self._fd)
        # Our fd is now blobs/<algorithm>'s: this batch's folder is the one that came in.
        os.close(self._alg_fds.pop(algorithm))
        self._alg_fds[algorithm] = _open_dir(
            algorithm, self._fd, False, f"{QUARANTINE}/{self.name}/{algorithm}"
        )
        return True

    def drop_folder(self, algorithm: str) -> None:
        """Forget this batch's `<algorithm>/` folder, and remove it when empty."""
        if self._alg_fds and algorithm in self._alg_fds:
            os.close(self._alg_fds.pop(algorithm))
            if self._fd is not None:
                with suppress(OSError):
                    os.rmdir(algorithm, dir_fd=self._fd)

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


_RENAME_EXCHANGE = 2  # <linux/fs.h>


@functools.cache
def _renameat2() -> Any:
    """libc's renameat2, or None (not Linux, an old C library)."""
    try:
        import ctypes

        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (ImportError, OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


def exchange(a_fd: int, a_name: str, b_fd: int, b_name: str) -> bool:
    """Swap two directory entries in one atomic step (renameat2 RENAME_EXCHANGE): at no instant
    is either name absent. False, and nothing changed, when the system or the filesystem cannot
    (or any other failure: a failed renameat2 changes nothing)."""
    fn = _renameat2()
    if fn is None:
        return False
    return int(fn(a_fd, os.fsencode(a_name), b_fd, os.fsencode(b_name), _RENAME_EXCHANGE)) == 0


def xattrs(fd: int) -> dict[str, bytes] | None:
    """The extended attributes of an open file (ACLs, security label, user attributes) that
    this process can list; {} where unsupported, None when one cannot be read."""
    try:
        names = os.listxattr(fd)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in names:
        try:
            out[name] = os.getxattr(fd, name)
        except OSError:
            return None
    return out


_SET_HELD = tuple(
    QuarantinedBlob.__dict__[f].__set__  # slot descriptors: C-level setters
    for f in ("batch", "batch_ns", "algorithm", "name", "size", "allocated")
)


def quarantined(
    batch: str, made: int, algorithm: str, name: str, size: int, allocated: int
) -> QuarantinedBlob:
    """QuarantinedBlob(...) without the frozen-dataclass __init__ (one per blob a run moves)."""
    q: QuarantinedBlob = object.__new__(QuarantinedBlob)
    s_batch, s_made, s_alg, s_name, s_size, s_alloc = _SET_HELD
    s_batch(q, batch)
    s_made(q, made)
    s_alg(q, algorithm)
    s_name(q, name)
    s_size(q, size)
    s_alloc(q, allocated)
    return q


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
            raise RefusedError(
                f"{QUARANTINE} is on another filesystem than {BLOBS}/; stopped (what is left is consistent)",
                file=rel,
            ) from None
        if e.errno in _CANNOT_WRITE:
            raise RefusedError(
                f"cannot move into {QUARANTINE}: {e.strerror}; stopped (what is left is consistent)", file=rel
            ) from None
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


def _batch_alg_fd(layout: Layout, batch: str, algorithm: str) -> int | None:
    """fd of `.ocicache/quarantine/<batch>/<algorithm>/` (None when absent or not a folder)."""
    own = own_dir_fd(layout, create=False)
    if own is None:
        return None
    where = f"{QUARANTINE}/{batch}/{algorithm}"
    try:
        qfd = _open_dir("quarantine", own, False, QUARANTINE)
        try:
            bfd = _open_dir(batch, qfd, False, where)
            try:
                return _open_dir(algorithm, bfd, False, where)
            finally:
                os.close(bfd)
        finally:
            os.close(qfd)
    except (FileNotFoundError, NotADirectoryError, RefusedError):
        return None
    finally:
        os.close(own)


class _Folders:
    """Batch folder fds opened once per (batch, algorithm) for a loop over many blobs."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.fds: dict[tuple[str, str], int | None] = {}

    def get(self, batch: str, algorithm: str) -> int | None:
        key = (batch, algorithm)
        if key not in self.fds:
            self.fds[key] = _batch_alg_fd(self.layout, batch, algorithm)
        return self.fds[key]

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()


def _put_back_one(src: int, dst: int, name: str) -> bool:
    """Make `name` in folder `src` also present in blobs/ folder `dst`, never replacing what is
    there: a hard link (a rename where there are none). True when `dst` has it now (also when
    it already had it: a writer put it there again), False when `src` no longer has it."""
    try:
        os.link(name, name, src_dir_fd=src, dst_dir_fd=dst, follow_symlinks=False)
        return True
    except FileExistsError:
        return True  # BuildKit wrote it again (or the plan kept it): that copy stays
    except FileNotFoundError:
        return False  # purged or put back by someone else meanwhile
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
    # No hard links here: a rename that never replaces an existing entry.
    try:
        os.stat(name, dir_fd=dst, follow_symlinks=False)
        return True
    except FileNotFoundError:
        pass
    try:
        os.rename(name, name, src_dir_fd=src, dst_dir_fd=dst)
    except FileNotFoundError:
        return False
    return True


def restore(layout: Layout, blobs: Iterable[QuarantinedBlob]) -> list[QuarantinedBlob]:
    """Put quarantined blobs back into blobs/, in the order given (children before parents).

    A hard link into blobs/ first, then (once blobs/ is fsynced) the quarantine's name is
    removed: at no instant is the blob in neither place. A blob BuildKit has written again
    meanwhile is kept as BuildKit wrote it. Returns what is now back in blobs/ because of this
    call."""
    done: list[QuarantinedBlob] = []
    linked: list[tuple[int, str]] = []
    dirty: set[int] = set()
    folders = _Folders(layout)
    try:
        for q in blobs:
            src = folders.get(q.batch, q.algorithm)
            if src is None:
                continue
            dst = _blob_dir_for_restore(layout, q.algorithm)
            try:
                os.stat(q.name, dir_fd=dst, follow_symlinks=False)
                present = True
            except FileNotFoundError:
                present = False
            if not _put_back_one(src, dst, q.name):
                continue
            dirty.add(dst)
            if not present:
                done.append(q)
            linked.append((src, q.name))
        for fd in sorted(dirty):
            os.fsync(fd)  # durable in blobs/ before the quarantine's names go
        touched: set[int] = set()
        for src, name in linked:
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=src)
                touched.add(src)
        for fd in sorted(touched):
            os.fsync(fd)
    finally:
        folders.close()
    return done


# -- the exchange's journal and settle ----------------------------------------------------------
def _journal(batch: str, algorithm: str) -> str:
    return f"{batch}.{algorithm}{_DROPPED}"


def write_dropped(layout: Layout, batch: str, algorithm: str, names: Iterable[str]) -> None:
    """Record, durably, the names an exchange of blobs/<algorithm> into `batch` drops (before
    the exchange: a run killed after it leaves the next one what it needs to settle it)."""
    own = own_dir_fd(layout)
    assert own is not None
    try:
        fd = os.open(
            _journal(batch, algorithm),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
            0o600,
            dir_fd=own,
        )
        try:
            chunk: list[str] = []
            for name in itertools.chain(names, (_END,)):
                chunk.append(name)
                if len(chunk) == 4096:  # in pieces: 50k names would be 3 MB at once
                    _write_all(fd, "".join([f"{n}\n" for n in chunk]).encode())
                    chunk.clear()
            _write_all(fd, "".join([f"{n}\n" for n in chunk]).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(own)
    finally:
        os.close(own)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_dropped(own: int, journal: str) -> set[str]:
    """The names a journal lists; empty when it was not written whole (the exchange it was
    written for never happened: everything in the batch folder goes back)."""
    try:
        fd = os.open(
            journal, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=own
        )
    except OSError:
        return set()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return set()
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    lines = b"".join(chunks).decode("ascii", "replace").split("\n")
    if len(lines) < 2 or lines[-2] != _END or lines[-1] != "":
        return set()
    return set(lines[:-2])


def remove_dropped(layout: Layout, batch: str, algorithm: str) -> None:
    own = own_dir_fd(layout, create=False)
    if own is None:
        return
    try:
        with suppress(FileNotFoundError):
            os.unlink(_journal(batch, algorithm), dir_fd=own)
    finally:
        os.close(own)


def settle_exchange(
    layout: Layout, batch: str, algorithm: str, dropped: Mapping[str, _T]
) -> tuple[list[_T], list[str]]:
    """After an exchange of blobs/<algorithm> into `batch`: every entry of the batch's
    `<algorithm>/` that is not a regular file named in `dropped` goes back into blobs/ (the
    kept blobs, linked there before the exchange, lose their quarantine name; a blob a writer
    renamed into blobs/ between gc's last look and the exchange is linked back). Idempotent.
    (the values of `dropped` whose file is held, names put back)."""
    src = _batch_alg_fd(layout, batch, algorithm)
    if src is None:
        return [], []
    try:
        dst = _blob_dir_for_restore(layout, algorithm)
        held: list[_T] = []
        back: list[str] = []
        for entry in os.scandir(src):
            name = entry.name
            if name in dropped and entry.is_file(follow_symlinks=False):
                held.append(dropped[name])
            elif _put_back_one(src, dst, name):
                back.append(name)
        if back:
            os.fsync(dst)  # durable in blobs/ before the quarantine's names go
            for name in back:
                # (gone: renamed back; a folder whose name blobs/ already has stays, odd)
                with suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(name, dir_fd=src)
            os.fsync(src)
        return held, back
    finally:
        os.close(src)


def recover_exchanges(layout: Layout) -> list[str]:
    """Settle every exchange a killed run left unsettled (its journal is still there); the
    names put back into blobs/."""
    own = own_dir_fd(layout, create=False)
    if own is None:
        return []
    try:
        journals = sorted(n for n in os.listdir(own) if n.endswith(_DROPPED))
        back: list[str] = []
        for journal in journals:
            batch, _, algorithm = journal[: -len(_DROPPED)].rpartition(".")
            if batch_ns(batch) is None or algorithm not in ALGORITHMS:
                continue
            names = dict.fromkeys(_read_dropped(own, journal))
            back.extend(settle_exchange(layout, batch, algorithm, names)[1])
            with suppress(FileNotFoundError):
                os.unlink(journal, dir_fd=own)
        if journals:
            os.fsync(own)
        return back
    finally:
        os.close(own)


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
    fd = _batch_alg_fd(layout, q.batch, q.algorithm)
    if fd is None:
        return None
    try:
        f = os.open(
            q.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=fd
        )
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


def restore_plan(
    layout: Layout, missing: set[str], held: dict[str, QuarantinedBlob], present: set[str]
) -> list[QuarantinedBlob]:
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


class Planned(Protocol):
    """A blob a plan dropped, as the plan saw it (core.gc_plan.BlobDeletion)."""

    @property
    def algorithm(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def digest(self) -> str: ...


@dataclass
class Purged:
    """What a purge unlinked, what it left because it was not the file expected, and what the
    quarantine still holds after it."""

    count: int = 0
    bytes: int = 0
    allocated: int = 0  # the disk space given back (allocated blocks of last links)
    mismatched: list[QuarantinedBlob] = field(default_factory=list)
    held: int = 0
    held_bytes: int = 0
    first_ns: int | None = None  # when the oldest batch still holding a blob was made

    def hold(self, made: int, size: int) -> None:
        self.held += 1
        self.held_bytes += size
        self.first_ns = made if self.first_ns is None else min(self.first_ns, made)

    def add(self, other: Purged) -> None:
        self.count += other.count
        self.bytes += other.bytes
        self.allocated += other.allocated
        self.mismatched.extend(other.mismatched)


_Job = tuple[int, str, int, "list[Any]", bool]  # folder fd, batch, made, blobs, check them


def purge(
    layout: Layout,
    held: Iterable[QuarantinedBlob],
    older_than_ns: int,
    keep: set[str],
    *,
    mine: tuple[str, Sequence[Planned]] | None = None,
    workers: int | None = None,
    tick: Callable[[], None] | None = None,
) -> Purged:
    """Unlink every quarantined blob of a batch made before `older_than_ns` (but those in
    `keep` that are not back in blobs/), then the emptied folders; anything gone is simply
    gone, anything not a regular file is left alone.

    `mine` = (batch, blobs): what this run moved into its batch, as its plan saw them; each is
    unlinked only if its lstat still shows the size and mtime the plan saw, else it is listed
    in `mismatched` (written anew since: the caller puts it back). `workers` threads unlink at
    once (default `purge_workers`; one when `tick`, called after each unlink, is given).

    A kept digest whose blob is in blobs/ again (an export wrote it anew after gc moved it:
    BuildKit found it absent) has its quarantined copy purged like any other: holding it
    would keep it, and .ocicache/, for ever."""
    out = Purged()
    by_folder: dict[tuple[str, str], tuple[int, bool, list[Any]]] = {}

    def take(batch: str, made: int, blob: QuarantinedBlob | Planned, check: bool) -> None:
        if made >= older_than_ns or (
            blob.digest in keep and not _back_in_blobs(layout, blob.algorithm, blob.name, blob.size)
        ):
            out.hold(made, blob.size)
            return
        by_folder.setdefault((batch, blob.algorithm), (made, check, []))[2].append(blob)

    for q in held:
        take(q.batch, q.batch_ns, q, False)
    if mine is not None:  # (as `take`, inlined: one per blob the run moved, 50k at 50k)
        batch, made = mine[0], batch_ns(mine[0]) or 0
        names = {d.partition(":")[2] for d in keep}
        lists: dict[str, list[Any]] = {}
        for b in mine[1]:
            if made >= older_than_ns or (
                b.name in names
                and b.digest in keep
                and not _back_in_blobs(layout, b.algorithm, b.name, b.size)
            ):
                out.hold(made, b.size)
                continue
            alg_list = lists.get(b.algorithm)
            if alg_list is None:
                alg_list = lists[b.algorithm] = by_folder.setdefault((batch, b.algorithm), (made, True, []))[
                    2
                ]
            alg_list.append(b)
    folders = _Folders(layout)
    try:
        jobs: list[_Job] = []
        for (batch, algorithm), (made, check, blobs) in sorted(by_folder.items()):
            fd = folders.get(batch, algorithm)
            if fd is None:
                continue
            jobs.extend((fd, batch, made, blobs[i : i + _CHUNK], check) for i in range(0, len(blobs), _CHUNK))
        lock = threading.Lock()

        def run(job: _Job) -> None:
            part = _unlink_all(*job, tick)
            with lock:
                out.add(part)

        if workers is None:
            workers = purge_workers(jobs[0][0]) if jobs else 1
        in_threads(run, jobs, 1 if tick is not None else min(workers, len(jobs)))
    finally:
        folders.close()
    for batch in sorted({b for b, _ in by_folder}):
        _remove_empty_batch(layout, batch)
    return out


def _unlink_all(
    fd: int, batch: str, made: int, blobs: list[Any], check: bool, tick: Callable[[], None] | None
) -> Purged:
    """One purge thread's share: lstat (a regular file; with `check`, the one the plan saw),
    then unlink."""
    out = Purged()
    for q in blobs:
        name = q.name
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                continue  # replaced by something else since the scan: not ours
            if check and (st.st_size, st.st_mtime_ns) != (q.size, q.mtime_ns):
                out.mismatched.append(quarantined(batch, made, q.algorithm, name, q.size, 0))
                continue
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno in _CANNOT_WRITE:
                raise RefusedError(
                    f"cannot purge: {e.strerror}", file=f"{QUARANTINE}/{batch}/{q.algorithm}/{name}"
                ) from None
            raise
        out.count += 1
        out.bytes += q.size
        out.allocated += 0 if st.st_nlink > 1 else st.st_blocks * 512
        if tick is not None:
            tick()
    return out


def purge_workers(fd: int) -> int:
    """How many threads unlink at once in the folder `fd`: PURGE_WORKERS, but no more than the
    usable cores on a memory filesystem (tmpfs, ramfs), where an unlink is only CPU work."""
    if _fs_type(os.fstat(fd).st_dev) not in _MEMORY_FS:
        return PURGE_WORKERS
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(PURGE_WORKERS, cores))


def _fs_type(dev: int) -> str | None:
    """The type of the filesystem mounted from device `dev`, as /proc/self/mountinfo names it;
    None when it cannot be told (no /proc, no such mount)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                # id, parent, major:minor, root, mount point, options, optional fields..., "-", type
                if len(fields) > 2 and fields[2] == want and "-" in fields[6:]:
                    i = fields.index("-", 6)
                    return fields[i + 1] if i + 1 < len(fields) else None
    except (OSError, ValueError):
        return None
    return None


def in_threads(fn: Callable[[Any], None], jobs: list[Any], workers: int) -> None:
    """fn(job) for every job, in `workers` threads (inline when one); the first exception is
    raised once every thread has stopped (the others stop taking jobs)."""
    if workers <= 1:
        for job in jobs:
            fn(job)
        return
    todo = iter(jobs)
    errors: list[BaseException] = []

    def worker() -> None:
        for job in todo:  # a list iterator: next() is atomic under the GIL
            if errors:
                return
            try:
                fn(job)
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _back_in_blobs(layout: Layout, algorithm: str, name: str, size: int) -> bool:
    """True when blobs/ holds this digest again: a regular file of the quarantined size."""
    st = layout.stat_blob(f"{algorithm}:{name}")
    return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size


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
