"""The only module that deletes: runs a gc plan, re-checked under BuildKit's lock.

Nothing is unlinked from `blobs/` directly: a dropped blob is renamed into gc's quarantine
(`DIR/.ocicache/quarantine/`, quarantine.py), put back when index.json or a new export turns out
to need it, and purged once it has been there longer than --grace (default 1h; `--grace 0`
purges at once). This is what makes gc safe during any export: an export identical to an older
one writes nothing and touches no mtime, then re-points index.json at the old manifest; an
export re-using an old layer finds it present long before its manifest exists. Neither can be
seen coming, so the deletion itself is made undoable.

One run, under an exclusive flock on DIR (quarantine.gc_lock: one gc, pin or repair at a time):
  0. put back from the quarantine whatever a plan made now keeps (index.json, pins, young
     manifests and what they reference) and is not in blobs/;
  1. move dropped manifests (a parent before the manifests it references), 2. their cache
     configs, 3. layers and unknown blobs into this run's quarantine batch, 4. delete stale
     ingest/ entries;
  5. wait a settle time (min(SETTLE_S, grace), only when something was moved), re-read
     index.json under the lock and every new manifest, and put back what they now need;
  6. purge quarantine batches older than --grace (this run's too with `--grace 0`), except
     what step 5 says is needed.
The directory is fsynced after each phase, so the order also holds after a crash: at every
instant, every manifest left in blobs/ references only blobs that are still there or in the
quarantine, and the next run puts back what is needed and finishes the job.

Lock strategy: BuildKit's exporter takes a NON-blocking flock on index.json.lock and fails the
build at once when anyone holds it, even shared. So gc never takes it: it reads index.json as
the read commands do (indexread.py: between BuildKit's in-place writes, two reads compared,
creating no lock file), for the plan, before each phase and after the settle time. gc never
writes index.json. If index.json changed, or a new or re-written JSON blob (a manifest or config
of an export in progress) appeared since the plan, we re-plan from a fresh read; the plan is
idempotent. Every blob BuildKit writes goes through `ingest/<hex>/`, so a change of ingest/'s
mtime since the plan means an export is writing: gc stops, waits until ingest/ has been quiet
for SETTLE_S, and re-plans (the new manifest and config, younger than grace, then keep what
they re-use), INGEST_WAITS times at most.

A blob is moved only after an lstat through the `blobs/<alg>` directory fd shows a regular
file with a valid digest name, the size and mtime the plan saw (a re-written blob is left
alone). Anything already gone (another gc, a reset) is simply gone.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ocicache.base.errors import BusyError, CorruptError, OcicacheError, RefusedError
from ocicache.core.exports import Export, build_exports
from ocicache.core.gc_plan import (
    BlobDeletion,
    IngestDeletion,
    Plan,
    Policy,
    make_plan,
    needed,
    stable_until,
    summarize,
)
from ocicache.core.inventory import Inventory
from ocicache.core.reports import KIND_CONFIG, KIND_LAYER, KIND_MANIFEST, KIND_UNKNOWN
from ocicache.format import documents as docs
from ocicache.format.digest import ALGORITHMS, is_hex_name, parse_digest
from ocicache.format.names import INDEX_JSON, INGEST, LOCK_FILE, OCI_LAYOUT, QUARANTINE
from ocicache.ops.read import read_inventory
from ocicache.store.base import QuarantineScan
from ocicache.store.cache import BlobCache
from ocicache.store.indexread import read_index
from ocicache.store.layout import Layout
from ocicache.store.lock import UNUSABLE, probe_shared
from ocicache.store.quarantine import (
    Batch,
    gc_lock,
    move_in,
    new_batch,
    purge,
    purge_strays,
    remove_empty_quarantine,
    restore,
    restore_plan,
)

if TYPE_CHECKING:
    from ocicache.store.listing import Listing

MAX_REPLANS = 10
SETTLE_S = 1.0  # ingest/ unchanged this long: the export that was writing has finished
INGEST_WAITS = 3  # re-plans that wait for ingest/ to settle, before gc goes on regardless
_ANY = object()  # an ingest stamp that watches nothing
# After moving blobs into the quarantine, wait this long (at most --grace) before the final
# re-read of index.json: an export that found a moved blob present just before it was moved
# lands within it. Later landings are put back by the next gc, pin or repair.
QUARANTINE_SETTLE_S = 3.0
SETTLE_ENV = "OCICACHE_GC_SETTLE"  # seconds; tests and impatient users
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
    quarantine: QuarantineReport | None = None

    def removed(self) -> dict[str, tuple[int, int]]:
        """Per kind, what left blobs/ (into the quarantine) and ingest/: (count, bytes)."""
        if self.dry_run:
            return self.plan.removed()
        return summarize(self.deleted, self.ingest_deleted)

    @property
    def removed_bytes(self) -> int:
        return sum(b for _, b in self.removed().values())

    @property
    def freed_bytes(self) -> int:
        """Bytes gone from disk in this run (or that would be): stale ingest/ entries and
        purged quarantine blobs (with `--grace 0`, everything removed)."""
        q = self.quarantine
        if q is None:
            return self.removed_bytes
        return q.purged_bytes + self.removed()["ingest"][1]


@dataclass(frozen=True)
class QuarantineReport:
    """What gc did with its quarantine (DIR/.ocicache/quarantine) in this run."""

    moved: tuple[int, int]  # (blobs, bytes) moved in by this run (or that would be)
    restored: tuple[str, ...]  # digests put back into blobs/ because something needs them
    purged: tuple[int, int]  # (blobs, bytes) deleted from the quarantine for good
    held: tuple[int, int]  # (blobs, bytes) still in the quarantine after this run
    purge_after_ns: int | None  # when the oldest held blob may be purged (None: none held)
    purged_allocated: int = 0  # the disk space the purge gave back (allocated blocks)

    @property
    def purged_bytes(self) -> int:
        return self.purged[1]


@dataclass
class _Progress:
    batch: Batch
    deleted: list[BlobDeletion] = field(default_factory=list)
    ingest: list[IngestDeletion] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    attempt_bytes: int = 0
    kill_after: int = -1

    def unlinked(self) -> None:
        self.kill_after -= 1
        if self.kill_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)


def gc(directory: str | os.PathLike[str], policy: Policy, *, now_ns: int | None = None,
       dry_run: bool = False,
       listing: Listing | None = None) -> GcResult:
    """Plan and (unless dry_run) apply gc on DIR. RefusedError: nothing unsafe was done.

    `listing` (a find listing of DIR begun earlier) is only taken by a dry run: a real gc
    stats the blobs itself, under its own timing."""
    now = time.time_ns() if now_ns is None else now_ns
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    with Layout(directory, listing if dry_run else None) as layout:
        if dry_run:
            _, inv, exports, plan = _read_and_plan(layout, policy, now,
                                                   dry_run=True)
            return GcResult(plan, True, (), (), plan.kept_bytes, 0, plan.warnings,
                            stable_until(inv, exports, policy, now),
                            _dry_quarantine(layout, plan, now))
        _require_writable_fs(layout)
        _require_usable_lock(layout)
        with gc_lock(layout):
            progress = _Progress(new_batch(layout),
                                 kill_after=int(os.environ.get(KILL_ENV, "-1") or -1))
            try:
                return _run(layout, policy, now, delay, progress)
            finally:
                progress.batch.close()


def _run(layout: Layout, policy: Policy, now: int, delay: float,
         progress: _Progress) -> GcResult:
    for attempt in range(MAX_REPLANS + 1):
        if attempt:
            _settle(layout)
        # While BuildKit keeps writing, gc waits and re-plans a few times, then goes on: what an
        # export still in progress re-uses is then put back from the quarantine when its
        # manifest appears (it is younger than grace), by this run's final pass or the next.
        stamp = _ingest_stamp(layout)
        index, inv, plan = _restore_then_plan(layout, policy, now, progress)
        if attempt == 0 and (plan.blobs or plan.ingest):
            _require_writable_dirs(layout, plan)
        progress.attempt_bytes = 0
        watch = attempt < INGEST_WAITS
        if _execute(layout, inv, plan, index, stamp if watch else _ANY, progress,
                    delay):
            break
    else:
        raise BusyError(f"the directory changed {MAX_REPLANS} times while gc ran (a build "
                        "exporting?); what was moved is consistent", file=str(layout.root),
                        hint="run gc again when the build has finished")
    if progress.deleted:
        _wait(_settle_seconds(policy))
    # The final re-read: whatever index.json or a new export needs now is put back.
    index, keep = _restore_needed(layout, policy, now, progress)
    _post_check(layout, index, progress)
    purge_now = max(now, time.time_ns())
    scan = layout.scan_quarantine()
    *purged, purged_allocated = purge(layout, scan.blobs, purge_now - policy.grace_ns + 1, keep)
    purge_strays(layout, purge_now - policy.grace_ns + 1)
    remove_empty_quarantine(layout)  # and DIR/.ocicache with it when nothing else is there
    held = layout.scan_quarantine().blobs
    report = QuarantineReport(
        moved=(len(progress.deleted), sum(b.size for b in progress.deleted)),
        restored=tuple(progress.restored), purged=(purged[0], purged[1]),
        held=(len(held), sum(q.size for q in held)),
        purge_after_ns=min(q.batch_ns for q in held) + policy.grace_ns if held else None,
        purged_allocated=purged_allocated)
    return GcResult(plan, False, tuple(progress.deleted), tuple(progress.ingest),
                    plan.size_before - progress.attempt_bytes, attempt,
                    (*plan.warnings, *progress.warnings), None, report)


def put_back_needed(layout: Layout) -> tuple[str, ...]:
    """Restore from gc's quarantine whatever index.json (and any young export) needs now: what
    pin and repair do under gc's lock before they write. The digests put back."""
    if not layout.scan_quarantine().blobs:
        return ()
    progress = _Progress(new_batch(layout))
    try:
        _restore_needed(layout, Policy(), time.time_ns(), progress)
    finally:
        progress.batch.close()
    return tuple(progress.restored)


def _settle_seconds(policy: Policy) -> float:
    """How long to wait for a landing export before the final re-read (never past grace)."""
    env = os.environ.get(SETTLE_ENV)
    wanted = QUARANTINE_SETTLE_S
    if env:
        with suppress(ValueError):
            wanted = max(0.0, float(env))
    return min(wanted, policy.grace_ns / 1e9)


def _wait(seconds: float) -> None:
    """The settle time before the final re-read. Not extended while exports keep landing: the
    re-read puts back what they need, and the next run what lands later."""
    if seconds > 0:
        time.sleep(seconds)


def _restore_then_plan(layout: Layout, policy: Policy, now: int,
                       progress: _Progress) -> tuple[bytes | None, Inventory, Plan]:
    """Put back what a plan made now needs (until nothing more comes back), then plan."""
    for _ in range(4):
        index, inv, exports = _read(layout, policy, now)
        if not _put_back(layout, inv, _needed(inv, exports, policy, now), progress):
            break
    plan = make_plan(inv, exports, policy, now, _metadata_bytes(layout))
    return index, inv, plan


def _restore_needed(layout: Layout, policy: Policy, now: int,
                    progress: _Progress) -> tuple[bytes | None, set[str]]:
    """The final pass: put back what is needed now; return index.json and the needed set."""
    keep: set[str] = set()
    index: bytes | None = None
    for _ in range(4):
        index, inv, exports = _read(layout, policy, now)
        keep = _needed(inv, exports, policy, now)
        if not _put_back(layout, inv, keep, progress):
            break
    return index, keep


def _needed(inv: Inventory, exports: list[Export], policy: Policy, now: int) -> set[str]:
    try:
        return needed(inv, exports, policy, now)
    except OcicacheError:
        # A --keep REF that names nothing now: keep what index.json and young blobs need.
        return needed(inv, exports, Policy(grace_ns=policy.grace_ns), now)


def _put_back(layout: Layout, inv: Inventory, needed_now: set[str], progress: _Progress) -> bool:
    """Restore from the quarantine every digest of `needed_now` not in blobs/; True if any."""
    scan = layout.scan_quarantine()
    if not scan.blobs:
        return False
    present = set(inv.blobs)
    missing = needed_now - present
    if not missing:
        return False
    held = scan.by_digest()
    order = restore_plan(layout, missing, held, present)
    done = restore(layout, order)
    progress.restored.extend(q.digest for q in done)
    return bool(done)


def _dry_quarantine(layout: Layout, plan: Plan, now: int) -> QuarantineReport:
    """What a real run would do with the quarantine (a dry run moves nothing)."""
    scan: QuarantineScan = layout.scan_quarantine()
    cutoff = now - plan.policy.grace_ns + 1
    old = [q for q in scan.blobs if q.batch_ns < cutoff]
    moved = (len(plan.blobs), sum(b.size for b in plan.blobs))
    purged = (len(old), sum(q.size for q in old))
    if plan.policy.grace_ns == 0:
        purged = (purged[0] + moved[0], purged[1] + moved[1])
    young = [q for q in scan.blobs if q.batch_ns >= cutoff]
    held_n = len(young) + (0 if plan.policy.grace_ns == 0 else moved[0])
    held_b = sum(q.size for q in young) + (0 if plan.policy.grace_ns == 0 else moved[1])
    # Only what is already held has a purge time; what a real run would move gets one then.
    first = min((q.batch_ns for q in young), default=None)
    return QuarantineReport(moved, (), purged, (held_n, held_b),
                            None if first is None else first + plan.policy.grace_ns,
                            sum(q.allocated for q in old))


def _read_and_plan(layout: Layout, policy: Policy, now: int,
                   dry_run: bool = False
                   ) -> tuple[bytes | None, Inventory, list[Export], Plan]:
    """index.json (read under the lock, briefly), then everything else, then the plan."""
    index, inv, exports = _read(layout, policy, now, dry_run)
    plan = make_plan(inv, exports, policy, now, _metadata_bytes(layout))
    return index, inv, exports, plan


def _read(layout: Layout, policy: Policy, now: int,
          dry_run: bool = False) -> tuple[bytes | None, Inventory, list[Export]]:
    """index.json (read under the lock, briefly), then everything else.

    A dry run takes no lock it would have to create (like the read commands): BuildKit's
    writers fail at once on a held lock, and a dry run must not be able to fail a build.
    """
    index: bytes | None = None
    try:
        # As the read commands read it (indexread.py): between BuildKit's writes, creating no
        # lock file and holding none BuildKit could be about to take (its exporter's TryLock
        # fails the build at once on any holder, shared or not); BusyError when a write stays
        # in progress. A real gc reads it the same way: what it plans from a read that is stale
        # by the time it moves blobs, the re-reads and the quarantine put right.
        inv = read_inventory(layout, _blob_cache(layout))
        index = inv.index_raw
    except CorruptError:
        inv = read_inventory(layout)  # reads it again and records why it is unusable
    return index, inv, build_exports(inv)


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


def _require_usable_lock(layout: Layout) -> None:
    """Something other than a regular file at index.json.lock (a FIFO, a directory, ...): BuildKit
    cannot lock this directory, so its writes of index.json are not what gc assumes; refuse."""
    probe = probe_shared(layout.root_fd)
    if probe.fd is not None:
        os.close(probe.fd)
    if probe.state == UNUSABLE:
        raise RefusedError(f"is {probe.reason}, not a regular file: BuildKit cannot lock this "
                           "directory; nothing deleted", file=LOCK_FILE,
                           hint="remove it, then run gc again")


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


def _changed(layout: Layout, index: bytes | None, known: dict[str, int]) -> bool:
    """True when index.json differs from the plan's, or a new JSON blob appeared."""
    try:
        now_index = read_index(layout).data
    except (BusyError, CorruptError):
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


def _settle(layout: Layout, limit_s: float = 10.0) -> None:
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
             stamp: object, progress: _Progress,
             delay: float) -> bool:
    """Run the plan phase by phase; False when the directory changed and a re-plan is due."""
    known = {d: b.mtime_ns for d, b in inv.blobs.items()}
    for kinds in PHASES:
        batch = [b for b in plan.blobs if b.kind in kinds]
        if not batch:
            continue
        if _changed(layout, index, known):
            return False
        fds: set[int] = set()
        try:
            for blob in batch:
                if stamp is not _ANY and _ingest_stamp(layout) != stamp:
                    return False  # an export is writing blobs: wait, then re-plan
                fd = _move_blob(layout, blob, progress, delay)
                if fd is not None:
                    fds.add(fd)
        finally:
            for fd in sorted(fds):
                os.fsync(fd)  # this phase is durable before the next begins
            progress.batch.fsync()
    if plan.ingest:
        _delete_ingest(layout, plan, progress, delay)
    return True


def _move_blob(layout: Layout, blob: BlobDeletion, progress: _Progress,
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
    if not move_in(layout, progress.batch, blob.algorithm, blob.name):
        return None
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
        try:
            os.unlink(entry.name, dir_fd=ingest_fd)  # a stray file or symlink: the link itself
        except FileNotFoundError:
            return False
        return True
    try:
        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=ingest_fd)
    except OSError:
        return False
    try:
        names: list[str] = []
        entries: list[os.DirEntry[str]] = []
        for f in os.scandir(sub):
            entries.append(f)
        age_ns = st.st_mtime_ns
        # `data` last: a gc killed halfway leaves an entry still judged by its old data mtime.
        for f in sorted(entries, key=lambda e: (e.name == "data", e.name)):
            try:
                fst = f.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(fst.st_mode):
                progress.warnings.append(f"{rel}: holds a directory; left alone")
                return False
            if f.name == "data":
                age_ns = fst.st_mtime_ns
            names.append(f.name)
        if plan.now_ns - age_ns < plan.policy.grace_ns:
            return False  # the write resumed since the plan
        for name in names:
            with suppress(FileNotFoundError):  # another gc got there first: gone is gone
                os.unlink(name, dir_fd=sub)
            progress.unlinked()
        os.fsync(sub)
    finally:
        os.close(sub)
    try:
        os.rmdir(entry.name, dir_fd=ingest_fd)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ENOTEMPTY:  # BuildKit started writing into it again
            return False
        raise
    return True


def _post_check(layout: Layout, before: bytes | None, progress: _Progress) -> None:
    """Say so when index.json (re-read after the final put-back) still names a manifest this
    run moved and could not put back."""
    try:
        data = read_index(layout).data
    except (BusyError, CorruptError, RefusedError):  # e.g. the lock file became a FIFO
        return
    if data is None:
        return
    gone = {b.digest for b in progress.deleted} - set(progress.restored)
    try:
        index = docs.parse_index(docs.loads_strict(data, INDEX_JSON))
    except CorruptError:
        return
    for entry in index.entries:
        if entry.descriptor.digest in gone and layout.stat_blob(entry.descriptor.digest) is None:
            d = parse_digest(entry.descriptor.digest)
            progress.warnings.append(
                f"{INDEX_JSON}: manifests[{entry.position}]: a concurrent export re-pointed a "
                f"tag at {Layout.blob_relpath(d)}, which gc had moved into {QUARANTINE} and "
                "could not put back; run gc again")
