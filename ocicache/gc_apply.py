"""The only module that deletes: runs a gc plan, re-checked under BuildKit's lock.

Order (the invariant: at every instant, every manifest left on disk references only blobs that
are still present, so a gc killed at any point leaves a directory that imports):
  1. dropped manifests (a parent before the manifests it references),
  2. their cache configs,
  3. layers and unknown blobs,
  4. stale ingest/ entries.
The directory is fsynced after each phase, so the order also holds after a crash.

Lock strategy: BuildKit takes a NON-blocking flock on index.json.lock (a concurrent export fails
rather than waits), so we hold it only briefly and shared, as BuildKit's readers do (gc never
writes index.json): while reading index.json for the plan, and while re-reading it before each
phase; never while deleting. A dry run reads index.json as the read commands do
(indexread.py: it creates no lock file, and takes a shared flock only on one that exists).
If index.json changed, or a new or re-written JSON blob (a manifest or config of an export in
progress) appeared since the plan, we re-plan from a fresh read; the plan is idempotent, so
re-planning after a partial run just finishes the job.

An export in progress re-uses old layers before any document names them (BuildKit checks a
layer exists, then writes its other blobs, then the config): every blob BuildKit writes goes
through `ingest/<hex>/`, so a change of ingest/'s mtime since the plan means an export is
writing. Then gc stops, waits until ingest/ has been quiet for SETTLE_S, and re-plans (the new
manifest and config, younger than grace, then keep what they re-use). ingest/ is checked
before every unlink. What remains is a window of microseconds (a layer found present, nothing
written yet): BuildKit does not lock blobs, so no outside tool can close it completely.

A blob is unlinked only after an lstat through the `blobs/<alg>` directory fd shows a regular
file with a valid digest name, the size and mtime the plan saw (a re-written blob is left alone).
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocicache import documents as docs
from ocicache.cache import BlobCache
from ocicache.digest import ALGORITHMS, is_hex_name, parse_digest
from ocicache.errors import BusyError, CorruptError, RefusedError
from ocicache.exports import Export, build_exports
from ocicache.gc_plan import (
    BlobDeletion,
    IngestDeletion,
    Plan,
    Policy,
    make_plan,
    stable_until,
    summarize,
)
from ocicache.inventory import IndexBytes, Inventory, read_inventory
from ocicache.layout import INDEX_JSON, INGEST, LOCK_FILE, OCI_LAYOUT, Layout
from ocicache.lock import index_lock
from ocicache.reports import KIND_CONFIG, KIND_LAYER, KIND_MANIFEST, KIND_UNKNOWN

if TYPE_CHECKING:
    from ocicache.listing import Listing

MAX_REPLANS = 10
SETTLE_S = 1.0  # ingest/ unchanged this long: the export that was writing has finished
PHASES = ((KIND_MANIFEST,), (KIND_CONFIG,), (KIND_LAYER, KIND_UNKNOWN))
# Tests only: sleep this many seconds before each unlink, so a SIGKILL lands mid-phase; or
# SIGKILL ourselves right after the N-th unlink (a crash at an exact point).
DELAY_ENV = "OCICACHE_GC_TEST_UNLINK_DELAY"
KILL_ENV = "OCICACHE_GC_TEST_KILL_AFTER"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CANNOT_WRITE = (errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass(frozen=True)
class GcResult:
    """What gc did (or, with dry_run, would do): the last plan and what was actually deleted."""

    plan: Plan
    dry_run: bool
    deleted: tuple[BlobDeletion, ...]
    ingest_deleted: tuple[IngestDeletion, ...]
    kept_bytes: int
    replans: int
    warnings: tuple[str, ...]
    # A dry run's plan stays the same until this time (gc_plan.stable_until) if DIR does not
    # change; None after a real run.
    stable_until_ns: int | None = None

    def removed(self) -> dict[str, tuple[int, int]]:
        if self.dry_run:
            return self.plan.removed()
        return summarize(self.deleted, self.ingest_deleted)

    @property
    def freed_bytes(self) -> int:
        return sum(b for _, b in self.removed().values())


@dataclass
class _Progress:
    deleted: list[BlobDeletion] = field(default_factory=list)
    ingest: list[IngestDeletion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    attempt_bytes: int = 0
    kill_after: int = -1

    def unlinked(self) -> None:
        self.kill_after -= 1
        if self.kill_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def gc(directory: str | os.PathLike[str], policy: Policy, *, now_ns: int | None = None,
       dry_run: bool = False, lock_timeout: float = 10.0,
       listing: Listing | None = None) -> GcResult:
    """Plan and (unless dry_run) apply gc on DIR. RefusedError: nothing unsafe was done.

    `listing` (a find listing of DIR begun earlier) is only taken by a dry run: a real gc
    stats the blobs itself, under its own timing."""
    now = time.time_ns() if now_ns is None else now_ns
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    with Layout(directory, listing if dry_run else None) as layout:
        if dry_run:
            index, inv, exports, plan = _read_and_plan(layout, policy, now, lock_timeout,
                                                       dry_run=True)
            return GcResult(plan, True, (), (), plan.kept_bytes, 0, plan.warnings,
                            stable_until(inv, exports, policy, now))
        _require_writable_fs(layout)
        progress = _Progress(kill_after=int(os.environ.get(KILL_ENV, "-1") or -1))
        for attempt in range(MAX_REPLANS + 1):
            if attempt:
                _settle(layout)
            stamp = _ingest_stamp(layout)
            index, inv, _, plan = _read_and_plan(layout, policy, now, lock_timeout)
            if attempt == 0 and (plan.blobs or plan.ingest):
                _require_writable_dirs(layout, plan)
            progress.attempt_bytes = 0
            if _execute(layout, inv, plan, index, stamp, progress, lock_timeout, delay):
                _post_check(layout, index, progress, lock_timeout)
                return GcResult(plan, False, tuple(progress.deleted), tuple(progress.ingest),
                                plan.size_before - progress.attempt_bytes, attempt,
                                (*plan.warnings, *progress.warnings))
        raise BusyError(f"the directory changed {MAX_REPLANS} times while gc ran (a build "
                        "exporting?); what was deleted is consistent", file=str(layout.root),
                        hint="run gc again when the build has finished")


def _read_and_plan(layout: Layout, policy: Policy, now: int, lock_timeout: float,
                   dry_run: bool = False
                   ) -> tuple[bytes | None, Inventory, list[Export], Plan]:
    """index.json (read under the lock, briefly), then everything else, then the plan.

    A dry run takes no lock it would have to create (like the read commands): BuildKit's
    writers fail at once on a held lock, and a dry run must not be able to fail a build.
    """
    index: bytes | None = None
    try:
        if dry_run:
            # As the read commands read it (indexread.py): between BuildKit's writes, creating
            # no lock file; BusyError when a write stays in progress.
            inv = read_inventory(layout, _blob_cache(layout))
            index = inv.index_raw
        else:
            with index_lock(layout.root_fd, lock_timeout, shared=True):
                index = layout.read_top(INDEX_JSON)
            inv = read_inventory(layout, _blob_cache(layout), index_bytes=IndexBytes(index))
    except CorruptError:
        inv = read_inventory(layout)  # reads it again and records why it is unusable
    exports = build_exports(inv)
    plan = make_plan(inv, exports, policy, now, _metadata_bytes(layout))
    return index, inv, exports, plan


def _blob_cache(layout: Layout) -> BlobCache:
    """What earlier runs learned about digests (a digest names its content for good), so a
    repeated gc opens only new blobs (cache.py; off with OCICACHE_NO_CACHE=1)."""
    return BlobCache.default(layout.root)


def _metadata_bytes(layout: Layout) -> int:
    total = 0
    for name in (INDEX_JSON, OCI_LAYOUT, LOCK_FILE):
        st = layout.stat_top(name)
        if st is not None and stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


def _require_writable_fs(layout: Layout) -> None:
    if os.fstatvfs(layout.root_fd).f_flag & os.ST_RDONLY:
        raise RefusedError("read-only file system; nothing deleted", file=str(layout.root),
                           hint="use --dry-run to see what gc would delete")


def _require_writable_dirs(layout: Layout, plan: Plan) -> None:
    """Refuse before the first unlink, not halfway, when a directory cannot be written."""
    fds = {layout.blob_dir_fd(b.algorithm) for b in plan.blobs}
    if plan.ingest:
        fds.add(_ingest_fd(layout))
    for fd in fds:
        if fd is not None and not os.access(".", os.W_OK, dir_fd=fd):
            raise RefusedError("no write permission on blobs/ or ingest/; nothing deleted",
                               file=str(layout.root),
                               hint="run gc as the user that runs the builds")


def _changed(layout: Layout, index: bytes | None, known: dict[str, int],
             lock_timeout: float) -> bool:
    """True when index.json differs from the plan's, or a new JSON blob appeared."""
    with index_lock(layout.root_fd, lock_timeout, shared=True):
        try:
            now_index = layout.read_top(INDEX_JSON)
        except CorruptError:
            return True
    if now_index != index:
        return True
    for digest, blob in layout.scan_blobs().blobs.items():
        if known.get(digest) == blob.mtime_ns:
            continue
        if blob.size <= docs.JSON_LIMIT:
            try:
                if docs.looks_like_json(layout.read_blob_head(blob, 64)):
                    return True  # a manifest or config we have not planned with
            except (OSError, CorruptError):
                return True
        known[digest] = blob.mtime_ns  # a new layer: younger than grace, never deleted
    return False


def _ingest_stamp(layout: Layout) -> tuple[int, int] | None:
    """(inode, mtime) of ingest/: it changes whenever BuildKit starts or finishes a blob write."""
    st = layout.stat_top(INGEST)
    return None if st is None else (st.st_ino, st.st_mtime_ns)


def _settle(layout: Layout, limit_s: float = 60.0) -> None:
    """Wait (at most `limit_s`) until no blob write has started or ended for SETTLE_S."""
    deadline = time.monotonic() + limit_s
    last = _ingest_stamp(layout)
    while time.monotonic() < deadline:
        time.sleep(SETTLE_S)
        now = _ingest_stamp(layout)
        if now == last:
            return
        last = now


def _execute(layout: Layout, inv: Inventory, plan: Plan, index: bytes | None,
             stamp: tuple[int, int] | None, progress: _Progress, lock_timeout: float,
             delay: float) -> bool:
    """Run the plan phase by phase; False when the directory changed and a re-plan is due."""
    known = {d: b.mtime_ns for d, b in inv.blobs.items()}
    for kinds in PHASES:
        batch = [b for b in plan.blobs if b.kind in kinds]
        if not batch:
            continue
        if _changed(layout, index, known, lock_timeout):
            return False
        fds: set[int] = set()
        try:
            for blob in batch:
                if _ingest_stamp(layout) != stamp:
                    return False  # an export is writing blobs: wait, then re-plan
                fd = _unlink_blob(layout, blob, progress, delay)
                if fd is not None:
                    fds.add(fd)
        finally:
            for fd in sorted(fds):
                os.fsync(fd)  # this phase is durable before the next begins
    if plan.ingest:
        _delete_ingest(layout, plan, progress, delay)
    return True


def _unlink_blob(layout: Layout, blob: BlobDeletion, progress: _Progress,
                 delay: float) -> int | None:
    if blob.algorithm not in ALGORITHMS or not is_hex_name(blob.algorithm, blob.name):
        return None  # never: the plan only holds scanned digest names; checked again anyway
    fd = layout.blob_dir_fd(blob.algorithm)
    rel = f"blobs/{blob.algorithm}/{blob.name}"
    if fd is None:
        return None
    try:
        st = os.stat(blob.name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        progress.warnings.append(f"{rel}: no longer a regular file; left alone")
        return None
    if (st.st_size, st.st_mtime_ns) != (blob.size, blob.mtime_ns):
        progress.warnings.append(f"{rel}: re-written since the plan; left alone")
        return None
    if delay:
        time.sleep(delay)
    try:
        os.unlink(blob.name, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in _CANNOT_WRITE:
            raise RefusedError(f"cannot delete: {e.strerror}; stopped (what is left is "
                               "consistent)", file=rel) from None
        raise
    progress.unlinked()
    progress.deleted.append(blob)
    progress.attempt_bytes += blob.size
    return fd


def _ingest_fd(layout: Layout) -> int | None:
    try:
        return os.open(INGEST, _DIR_FLAGS, dir_fd=layout.root_fd)
    except OSError:
        return None


def _delete_ingest(layout: Layout, plan: Plan, progress: _Progress, delay: float) -> None:
    fd = _ingest_fd(layout)
    if fd is None:
        return
    try:
        for entry in plan.ingest:
            if _delete_ingest_entry(fd, entry, plan, progress, delay):
                progress.ingest.append(entry)
                progress.attempt_bytes += entry.bytes
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete_ingest_entry(ingest_fd: int, entry: IngestDeletion, plan: Plan,
                         progress: _Progress, delay: float) -> bool:
    rel = f"{INGEST}/{entry.name}"
    try:
        st = os.stat(entry.name, dir_fd=ingest_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if delay:
        time.sleep(delay)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(entry.name, dir_fd=ingest_fd)  # a stray file or symlink: the link itself
        return True
    try:
        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=ingest_fd)
    except OSError:
        return False
    try:
        names: list[str] = []
        age_ns = st.st_mtime_ns
        # `data` last: a gc killed halfway leaves an entry still judged by its old data mtime.
        for f in sorted(os.scandir(sub), key=lambda e: (e.name == "data", e.name)):
            fst = f.stat(follow_symlinks=False)
            if stat.S_ISDIR(fst.st_mode):
                progress.warnings.append(f"{rel}: holds a directory; left alone")
                return False
            if f.name == "data":
                age_ns = fst.st_mtime_ns
            names.append(f.name)
        if plan.now_ns - age_ns < plan.policy.grace_ns:
            return False  # the write resumed since the plan
        for name in names:
            os.unlink(name, dir_fd=sub)
            progress.unlinked()
        os.fsync(sub)
    finally:
        os.close(sub)
    os.rmdir(entry.name, dir_fd=ingest_fd)
    return True


def _post_check(layout: Layout, before: bytes | None, progress: _Progress,
                lock_timeout: float) -> None:
    """If index.json changed during the last phase, say so when it names a deleted manifest."""
    try:
        with index_lock(layout.root_fd, lock_timeout, shared=True):
            data = layout.read_top(INDEX_JSON)
    except (BusyError, CorruptError, RefusedError):  # e.g. the lock file became a FIFO
        return
    if data == before or data is None:
        return
    gone = {b.digest for b in progress.deleted}
    try:
        index = docs.parse_index(docs.loads_strict(data, INDEX_JSON))
    except CorruptError:
        return
    for entry in index.entries:
        if entry.descriptor.digest in gone:
            d = parse_digest(entry.descriptor.digest)
            progress.warnings.append(
                f"{INDEX_JSON}: manifests[{entry.position}]: a concurrent export re-pointed a "
                f"tag at {Layout.blob_relpath(d)}, which gc had just deleted; build again")
