"""The only module that deletes: runs a gc plan, re-checked under BuildKit's lock.

Nothing is unlinked from `blobs/` directly: a dropped blob is renamed into gc's quarantine
(`DIR/.ocicache/quarantine/`, quarantine.py), put back when index.json or a new export turns out
to need it, and purged once it has been there longer than --grace (default 1h; `--grace 0`
purges at once). This is what makes gc safe during any export: an export identical to an older
one writes nothing and touches no mtime, then re-points index.json at the old manifest; an
export re-using an old layer finds it present long before its manifest exists. Neither can be
seen coming, so the deletion itself is made undoable.

One run, under an exclusive flock on DIR (quarantine.gc_lock: one gc, pin or repair at a time):
  0. settle an exchange a killed run left half done (quarantine.recover_exchanges), and put
     back from the quarantine whatever a plan made now keeps (index.json, pins, young
     manifests and what they reference) and is not in blobs/;
  1-3. move what the plan drops into this run's quarantine batch, in one of two ways:
     - when it drops most of `blobs/<algorithm>/` (and nothing is being written: ingest/,
       the folder and index.json unchanged since the plan's read), by exchanging the whole
       folder (`_exchange`): the kept blobs are hard-linked into a new folder made like it,
       the two folders swap in one atomic step, then everything in the old folder that the
       plan did not drop goes back (what a writer renamed into blobs/ since gc's last look
       included). One rename instead of one per dropped blob; every manifest left in blobs/
       references only blobs still there at every instant, as the plan keeps a closed set;
     - else blob by blob: 1. dropped manifests (a parent before the manifests it
       references), 2. their cache configs, 3. layers and unknown blobs;
  4. delete stale ingest/ entries;
  5. wait a settle time (min(SETTLE_S, grace), only when something was moved), re-read
     index.json and every new manifest, and put back what they now need;
  6. purge quarantine batches older than --grace (this run's too with `--grace 0`), except
     what step 5 says is needed, in a few threads (quarantine.purge). A blob of this run's
     batch whose lstat is no longer the plan's is put back instead of unlinked.
The directory is fsynced after each phase, so the order also holds after a crash: at every
instant, every manifest left in blobs/ references only blobs that are still there or in the
quarantine, and the next run puts back what is needed and finishes the job.

What the quarantine holds is scanned once per run (with the first read); after that gc, which
alone changes it under its lock, keeps count of what it moves in, puts back and purges.

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
alone); after an exchange the same lstat is made in the quarantine (at once with a grace, just
before the purge's unlink with `--grace 0`) and a blob that fails it goes back. Anything
already gone (another gc, a reset) is simply gone.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import signal
import stat
import time
from collections.abc import Iterable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ocicache.base.errors import BusyError, CorruptError, OcicacheError, RefusedError
from ocicache.core.exports import Export, build_exports
from ocicache.core.gc_plan import (
    BlobDeletion,
    IngestDeletion,
    Plan,
    Policy,
    expired_tags,
    make_plan,
    needed,
    summarize,
)
from ocicache.core.inventory import Inventory
from ocicache.core.reports import KIND_CONFIG, KIND_LAYER, KIND_MANIFEST, KIND_UNKNOWN
from ocicache.format import documents as docs
from ocicache.format.digest import ALGORITHMS, is_hex_name, parse_digest
from ocicache.format.indexdoc import RawEntry
from ocicache.format.model import ANN_PINNED, ANN_REF_NAME
from ocicache.format.names import BLOBS, INDEX_JSON, INGEST, LOCK_FILE, OCI_LAYOUT, QUARANTINE
from ocicache.ops.read import read_inventory, read_store
from ocicache.store.base import BlobFile, QuarantinedBlob, QuarantineScan, batch_ns
from ocicache.store.cache import ReadCache
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
    quarantined,
    recover_exchanges,
    remove_dropped,
    remove_empty_quarantine,
    restore,
    restore_plan,
    settle_exchange,
    write_dropped,
    xattrs,
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
# "0": never exchange blobs/<algorithm> whole, always move blob by blob; "always": exchange
# whenever it can, however few blobs are dropped (tests run both ways).
EXCHANGE_ENV = "OCICACHE_GC_EXCHANGE"
# Exchange when the plan drops more than this many times the blobs the folder keeps: linking a
# kept blob costs about what renaming a dropped one does, and the exchange lists the folder.
EXCHANGE_RATIO = 2
# The final re-read takes the blob cache (loading it costs ~0.2 s at 50k digests) only when
# more than this many blobs are left in blobs/; fewer are cheaper to read again.
REREAD_CACHE_MIN = 4096
INGEST_CHECK_EVERY = 64  # blob-by-blob moves between two looks at ingest/ (every one with a delay)
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
    quarantine: QuarantineReport | None = None
    registry: Any = None  # ops.registry.RegistryGc for a registry target
    expired: tuple[tuple[str, str], ...] = ()  # (tag, digest) --expire-tags dropped

    @property
    def target_kind(self) -> str:
        return "local" if self.registry is None else "registry"

    def removed(self) -> dict[str, tuple[int, int]]:
        """Per kind, what left blobs/ (into the quarantine) and ingest/: (count, bytes)."""
        return dict(self._removed)

    @functools.cached_property
    def _removed(self) -> dict[str, tuple[int, int]]:
        # (a report asks several times; one pass over 50k deletions each)
        if self.registry is not None:  # only cache manifests leave a registry
            return summarize(self.registry.deleted, ())
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
        if self.registry is not None:  # what the registry's own garbage collector frees then
            return int(self.registry.pending_bytes)
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
    # What the other batches of the quarantine hold, as this run knows it: scanned with the
    # first read, then kept up to date (gc, pin and repair are its only writers, one at a
    # time). This run's own batch is `deleted`, but the names in `back` (put back since).
    held: dict[tuple[str, str, str], QuarantinedBlob] | None = None
    odd: tuple[str, ...] = ()
    back: set[str] = field(default_factory=set)
    # (inode, mtime, ctime) of each blobs/<algorithm> just before the read that planned.
    folders: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def unlinked(self) -> None:
        self.kill_after -= 1
        if self.kill_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def others(self) -> QuarantineScan | None:
        """What the other batches hold now; None before the quarantine was scanned."""
        if self.held is None:
            return None
        return QuarantineScan(tuple(self.held.values()), self.odd)

    def know(self, scan: QuarantineScan) -> None:
        if self.held is None:
            self.held = {(q.batch, q.algorithm, q.name): q for q in scan.blobs if q.batch != self.batch.name}
            self.odd = scan.odd

    def mine(self) -> list[BlobDeletion]:
        """What this run's batch holds."""
        back = self.back
        return [b for b in self.deleted if b.name not in back] if back else self.deleted

    def by_digest(self) -> dict[str, QuarantinedBlob]:
        """One quarantined copy per digest, the newest batch's (this run's last)."""
        scan = self.others()
        out = scan.by_digest() if scan is not None else {}
        name, made = self.batch.name, batch_ns(self.batch.name) or 0
        for b in self.mine():
            out[b.digest] = quarantined(
                name, made, b.algorithm, b.name, b.size, 0 if b.links > 1 else b.allocated
            )
        return out

    def moved(self, blobs: list[BlobDeletion]) -> None:
        """`blobs` are now in this run's batch."""
        self.deleted.extend(blobs)
        self.attempt_bytes += sum(b.size for b in blobs)

    def gone(self, blobs: Iterable[QuarantinedBlob]) -> None:
        """`blobs` left the quarantine (put back)."""
        mine = self.batch.name
        for q in blobs:
            if q.batch == mine:
                self.back.add(q.name)
            elif self.held is not None:
                self.held.pop((q.batch, q.algorithm, q.name), None)


def gc(
    directory: str | os.PathLike[str],
    policy: Policy,
    *,
    now_ns: int | None = None,
    dry_run: bool = False,
    listing: Listing | None = None,
    use_cache: bool = False,
) -> GcResult:
    """Plan and (unless dry_run) apply gc on DIR. RefusedError: nothing unsafe was done.

    `listing` (a listing of DIR begun earlier, listing.py) is only taken by a dry run: a real gc
    begins its own, under its lock, right before each plan's read. `use_cache`: read with what earlier runs
    learned about blob digests, and keep what this one learns ($XDG_CACHE_HOME/ocicache)."""
    token = _KEEP_FACTS.set(use_cache)
    try:
        return _gc(directory, policy, now_ns, dry_run, listing)
    finally:
        _KEEP_FACTS.reset(token)


# Whether this gc call reads with the kept read's facts (gc's `use_cache`), for every read it makes.
_KEEP_FACTS: ContextVar[bool] = ContextVar("ocicache_gc_keep_facts", default=False)


def _gc(
    directory: str | os.PathLike[str],
    policy: Policy,
    now_ns: int | None,
    dry_run: bool,
    listing: Listing | None,
) -> GcResult:
    now = time.time_ns() if now_ns is None else now_ns
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    with Layout(directory, listing if dry_run else None) as layout:
        if dry_run:
            _, inv, exports, plan = _read_and_plan(layout, policy, now, dry_run=True)
            return GcResult(
                plan,
                True,
                (),
                (),
                plan.kept_bytes,
                0,
                plan.warnings,
                _dry_quarantine(inv.quarantine, plan, now),
                expired=tuple(expired_tags(exports, policy, now)),
            )
        _require_writable_fs(layout)
        _require_usable_lock(layout)
        with gc_lock(layout):
            expired = _expire_tags(layout, policy, now)
            progress = _Progress(new_batch(layout), kill_after=int(os.environ.get(KILL_ENV, "-1") or -1))
            try:
                result = _run(layout, policy, now, delay, progress)
            finally:
                progress.batch.close()
            return dataclasses.replace(result, expired=expired) if expired else result


def _expire_tags(layout: Layout, policy: Policy, now: int) -> tuple[tuple[str, str], ...]:
    """`--expire-tags`: remove the index.json entries of the tags it drops, before planning
    (atomically, under BuildKit's lock; every other entry keeps its bytes). An entry is removed
    only if it still names the export that was judged (an export landing meanwhile re-points
    the tag: that entry stays)."""
    if policy.expire_tags_ns is None:
        return ()
    from ocicache.store.indexwrite import rewrite_index

    inv = read_inventory(layout, _read_cache(layout))
    drop = set(expired_tags(build_exports(inv), policy, now))
    if not drop:
        return ()
    done: list[tuple[str, str]] = []

    def transform(entries: list[RawEntry]) -> list[RawEntry]:
        done.clear()
        out = []
        for x in entries:
            ann = x.doc.get("annotations")
            name = ann.get(ANN_REF_NAME) if isinstance(ann, dict) else None
            key = (name, x.doc.get("digest"))
            if key in drop and not (isinstance(ann, dict) and ANN_PINNED in ann):
                done.append((str(name), str(x.doc.get("digest"))))
                continue
            out.append(x)
        return out if done else entries

    rewrite_index(layout, transform)
    return tuple(sorted(set(done)))


def _run(layout: Layout, policy: Policy, now: int, delay: float, progress: _Progress) -> GcResult:
    recover_exchanges(layout)  # a run killed mid-exchange: finish its settle first
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
        done = _execute(layout, inv, plan, index, stamp if watch else _ANY, progress, delay)
        left = len(inv.blobs) - len(progress.deleted)
        del inv  # the final re-read makes its own (peak memory)
        if done:
            break
    else:
        raise BusyError(
            f"the directory changed {MAX_REPLANS} times while gc ran (a build "
            "exporting?); what was moved is consistent",
            file=str(layout.root),
            hint="run gc again when the build has finished",
        )
    if progress.deleted:
        _wait(_settle_seconds(policy))
    # The final re-read: whatever index.json or a new export needs now is put back.
    index, keep = _restore_needed(layout, policy, now, progress, left > REREAD_CACHE_MIN)
    _post_check(layout, index, progress)
    purge_now = max(now, time.time_ns())
    cutoff = purge_now - policy.grace_ns + 1
    others = progress.others()
    tick = progress.unlinked if progress.kill_after > 0 else None
    purged = purge(
        layout,
        others.blobs if others is not None else (),
        cutoff,
        keep,
        mine=(progress.batch.name, progress.mine()),
        tick=tick,
    )
    if purged.mismatched:
        _put_back_rewritten(layout, purged.mismatched, progress)
    purge_strays(layout, cutoff)
    remove_empty_quarantine(layout)  # and DIR/.ocicache with it when nothing else is there
    report = QuarantineReport(
        moved=(len(progress.deleted), sum(b.size for b in progress.deleted)),
        restored=tuple(progress.restored),
        purged=(purged.count, purged.bytes),
        held=(purged.held, purged.held_bytes),
        purge_after_ns=None if purged.first_ns is None else purged.first_ns + policy.grace_ns,
        purged_allocated=purged.allocated,
    )
    return GcResult(
        plan,
        False,
        tuple(progress.deleted),
        tuple(progress.ingest),
        plan.size_before - progress.attempt_bytes,
        attempt,
        (*plan.warnings, *progress.warnings),
        report,
    )


def _put_back_rewritten(layout: Layout, blobs: list[QuarantinedBlob], progress: _Progress) -> None:
    """Exchanged blobs the purge found changed since the plan (written anew: BuildKit's, so
    the plan's judgement of them no longer holds): back into blobs/, left alone like the
    blob-by-blob moves leave them, and not counted as deleted."""
    restore(layout, blobs)
    back = {(q.algorithm, q.name) for q in blobs}
    for q in sorted(blobs, key=lambda q: q.name):
        progress.warnings.append(f"{BLOBS}/{q.algorithm}/{q.name}: re-written since the plan; left alone")
    kept = [b for b in progress.deleted if (b.algorithm, b.name) not in back]
    progress.attempt_bytes -= sum(b.size for b in progress.deleted) - sum(b.size for b in kept)
    progress.deleted = kept


def put_back_needed(layout: Layout) -> tuple[str, ...]:
    """Restore from gc's quarantine whatever index.json (and any young export) needs now: what
    pin and repair do under gc's lock before they write. The digests put back."""
    recover_exchanges(layout)
    scan = layout.scan_quarantine()
    if not scan.blobs:
        return ()
    progress = _Progress(new_batch(layout))
    progress.know(scan)
    try:
        _restore_needed(layout, Policy(), time.time_ns(), progress, True)
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


def _restore_then_plan(
    layout: Layout, policy: Policy, now: int, progress: _Progress
) -> tuple[bytes | None, Inventory, Plan]:
    """Put back what a plan made now needs (until nothing more comes back), then plan."""
    for _ in range(4):
        progress.folders = _folder_stamps(layout)
        # The read's lstat pass (and, on a first read, the blobs' heads) in a child, begun
        # after the folders' stamps as the read's own scan would be (store/listing.py).
        layout.list_ahead()
        index, inv, exports = _read(layout, policy, now)
        progress.know(inv.quarantine)
        if not _put_back(layout, inv, _needed(inv, exports, policy, now), progress):
            break
    plan = make_plan(inv, exports, policy, now, _metadata_bytes(layout))
    return index, inv, plan


def _restore_needed(
    layout: Layout, policy: Policy, now: int, progress: _Progress, cached: bool
) -> tuple[bytes | None, set[str]]:
    """The final pass: put back what is needed now; return index.json and the needed set.
    `cached`: read with the blob cache (many blobs are left in blobs/)."""
    keep: set[str] = set()
    index: bytes | None = None
    for _ in range(4):
        # (what the quarantine holds is only notes in this read: put back by `progress`)
        index, inv, exports = _read(layout, policy, now, cached=cached, quarantine=progress.others())
        progress.know(inv.quarantine)
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
    present = inv.blobs.keys()
    missing = {d for d in needed_now if d not in present}
    if not missing or not (progress.held or progress.mine()):
        return False
    held = progress.by_digest()
    order = restore_plan(layout, missing, held, set(present))
    done = restore(layout, order)
    progress.gone(done)
    progress.restored.extend(q.digest for q in done)
    return bool(done)


def _dry_quarantine(scan: QuarantineScan, plan: Plan, now: int) -> QuarantineReport:
    """What a real run would do with the quarantine (a dry run moves nothing)."""
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
    return QuarantineReport(
        moved,
        (),
        purged,
        (held_n, held_b),
        None if first is None else first + plan.policy.grace_ns,
        sum(q.allocated for q in old),
    )


def _read_and_plan(
    layout: Layout, policy: Policy, now: int, dry_run: bool = False
) -> tuple[bytes | None, Inventory, list[Export], Plan]:
    """index.json (read under the lock, briefly), then everything else, then the plan."""
    index, inv, exports = _read(layout, policy, now, dry_run)
    plan = make_plan(inv, exports, policy, now, _metadata_bytes(layout))
    return index, inv, exports, plan


def _read(
    layout: Layout,
    policy: Policy,
    now: int,
    dry_run: bool = False,
    cached: bool = True,
    quarantine: QuarantineScan | None = None,
) -> tuple[bytes | None, Inventory, list[Export]]:
    """index.json (read under the lock, briefly), then everything else.

    A dry run takes no lock it would have to create (like the read commands): BuildKit's
    writers fail at once on a held lock, and a dry run must not be able to fail a build.
    `quarantine`: what the quarantine holds, when this run already knows (not scanned again).
    """
    index: bytes | None = None
    try:
        # As the read commands read it (indexread.py): between BuildKit's writes, creating no
        # lock file and holding none BuildKit could be about to take (its exporter's TryLock
        # fails the build at once on any holder, shared or not); BusyError when a write stays
        # in progress. A real gc reads it the same way: what it plans from a read that is stale
        # by the time it moves blobs, the re-reads and the quarantine put right.
        cache = _read_cache(layout) if cached else None
        if dry_run:  # (a read kept by an earlier run of exactly this input, ops/kept.py)
            inv, exports = read_store(layout, cache, quarantine=quarantine)
            return inv.index_raw, inv, exports
        inv = read_inventory(layout, cache, quarantine=quarantine)
        index = inv.index_raw
    except CorruptError:
        # reads it again and records why it is unusable
        inv = read_inventory(layout, quarantine=quarantine)
    return index, inv, build_exports(inv)


def _read_cache(layout: Layout) -> ReadCache | None:
    """What earlier runs learned about digests (a digest names its content for good), so a
    repeated gc opens only new blobs (cache.py; off with OCICACHE_NO_CACHE=1); None unless
    this gc was asked to use it."""
    return ReadCache.default(layout.root) if _KEEP_FACTS.get() else None


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
        raise RefusedError(
            f"is {probe.reason}, not a regular file: BuildKit cannot lock this directory; nothing deleted",
            file=LOCK_FILE,
            hint="remove it, then run gc again",
        )


def _require_writable_fs(layout: Layout) -> None:
    if os.fstatvfs(layout.root_fd).f_flag & os.ST_RDONLY:
        raise RefusedError(
            "read-only file system; nothing deleted",
            file=str(layout.root),
            hint="use --dry-run to see what gc would delete",
        )


def _require_writable_dirs(layout: Layout, plan: Plan) -> None:
    """Refuse before the first unlink, not halfway, when a directory cannot be written."""
    fds = {layout.blob_dir_fd(a) for a in {b.algorithm for b in plan.blobs}}
    if plan.ingest:
        fds.add(_ingest_fd(layout))
    for fd in fds:
        if fd is not None and not os.access(".", os.W_OK, dir_fd=fd):
            raise RefusedError(
                "no write permission on blobs/ or ingest/; nothing deleted",
                file=str(layout.root),
                hint="run gc as the user that runs the builds",
            )


def _index_changed(layout: Layout, index: bytes | None) -> bool:
    try:
        return read_index(layout).data != index
    except (BusyError, CorruptError):
        return True


def _new_json(layout: Layout, algorithm: str, names: Iterable[str]) -> bool:
    """True when one of these (new) blobs of blobs/<algorithm> could be a manifest or config
    we have not planned with; unreadable counts as could."""
    fd = layout.blob_dir_fd(algorithm)
    for name in names:
        if fd is None or not is_hex_name(algorithm, name):
            continue  # a stray: never touched
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode) or st.st_size > docs.JSON_LIMIT:
            continue  # a new layer: younger than grace (or not planned), never moved
        blob = BlobFile(f"{algorithm}:{name}", st.st_size, st.st_mtime_ns, st.st_mode)
        try:
            if docs.looks_like_json(layout.read_blob_head(blob, 64)):
                return True
        except (OSError, CorruptError):
            return True
    return False


def _changed(layout: Layout, index: bytes | None, known: dict[str, set[str]]) -> bool:
    """True when index.json differs from the plan's, or a new JSON blob appeared. Only the
    names in blobs/ are listed: a blob re-written under a known name is caught by the lstat
    right before it is moved; a new layer is added to `known`."""
    if _index_changed(layout, index):
        return True
    for algorithm in ALGORITHMS:
        fd = layout.blob_dir_fd(algorithm)
        if fd is None:
            continue
        names = known.setdefault(algorithm, set())
        new = [e.name for e in os.scandir(fd) if e.name not in names]
        if new and _new_json(layout, algorithm, new):
            return True
        names.update(new)
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


def _execute(
    layout: Layout,
    inv: Inventory,
    plan: Plan,
    index: bytes | None,
    stamp: object,
    progress: _Progress,
    delay: float,
) -> bool:
    """Run the plan; False when the directory changed and a re-plan is due."""
    exchanged = _exchange(layout, inv, plan, index, stamp, progress, delay)
    if exchanged is False:
        return False
    if exchanged is None and not _move_one_by_one(layout, inv, plan, index, stamp, progress, delay):
        return False
    if plan.ingest:
        _delete_ingest(layout, plan, progress, delay)
    return True


def _move_one_by_one(
    layout: Layout,
    inv: Inventory,
    plan: Plan,
    index: bytes | None,
    stamp: object,
    progress: _Progress,
    delay: float,
) -> bool:
    """The plan's blobs into the batch blob by blob, phase by phase (PHASES)."""
    known: dict[str, set[str]] = {}
    for b in inv.blobs.values():
        known.setdefault(b.algorithm, set()).add(b.name)
    every = 1 if delay else INGEST_CHECK_EVERY
    for kinds in PHASES:
        batch = [b for b in plan.blobs if b.kind in kinds]
        if not batch:
            continue
        if _changed(layout, index, known):
            return False
        fds: set[int] = set()
        try:
            for n, blob in enumerate(batch):
                if stamp is not _ANY and not n % every and _ingest_stamp(layout) != stamp:
                    return False  # an export is writing blobs: wait, then re-plan
                fd = _move_blob(layout, blob, progress, delay)
                if fd is not None:
                    fds.add(fd)
        finally:
            for fd in sorted(fds):
                os.fsync(fd)  # this phase is durable before the next begins
            progress.batch.fsync()
    return True


def _folder_stamp(fd: int) -> tuple[int, int, int]:
    """What any entry added to, removed from or renamed in a folder changes."""
    st = os.fstat(fd)
    return st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def _folder_stamps(layout: Layout) -> dict[str, tuple[int, int, int]]:
    out = {}
    for algorithm in ALGORITHMS:
        fd = layout.blob_dir_fd(algorithm)
        if fd is not None:
            out[algorithm] = _folder_stamp(fd)
    return out


def _exchange(
    layout: Layout,
    inv: Inventory,
    plan: Plan,
    index: bytes | None,
    stamp: object,
    progress: _Progress,
    delay: float,
) -> bool | None:
    """Move the plan's blobs in by exchanging blobs/<algorithm> whole (quarantine.py): True when
    done; False when the directory changed (re-plan); None when not done (too few dropped for
    it to pay, an export writing, strays, no way to make a folder alike or to exchange): then
    blob by blob. Nothing is changed unless True."""
    if not plan.blobs or stamp is _ANY or os.environ.get(EXCHANGE_ENV) == "0":
        return None
    algorithms = {b.algorithm for b in plan.blobs}
    algorithm = algorithms.pop()
    where = f"{BLOBS}/{algorithm}"
    if (
        algorithms
        or progress.batch.has(algorithm)
        or any(s in (BLOBS, where) or s.startswith(f"{where}/") for s in plan.strays)
    ):
        return None  # strays are never touched, not even moved and back
    old_fd = layout.blob_dir_fd(algorithm)
    before = progress.folders.get(algorithm)
    if old_fd is None or before is None:
        return None
    dropped = {b.name: b for b in plan.blobs}
    try:
        parent = os.open(BLOBS, _DIR_FLAGS, dir_fd=layout.root_fd)
    except OSError:
        return None
    try:
        old = os.fstat(old_fd)
        at = os.stat(algorithm, dir_fd=parent, follow_symlinks=False)
        attrs = xattrs(old_fd)
        if (
            (at.st_dev, at.st_ino) != (old.st_dev, old.st_ino)
            or attrs is None
            or not os.access(".", os.W_OK, dir_fd=parent)
        ):
            return None
        # What is in the folder now: the plan's read, unless it changed since that began.
        looked = _folder_stamp(old_fd)
        prefix = f"{algorithm}:"
        cut = len(prefix)
        if looked == before:  # (no list of the 50k names: only the kept ones)
            kept = [d[cut:] for d in inv.blobs if d.startswith(prefix) and d[cut:] not in dropped]
        else:
            entries = list(os.scandir(old_fd))
            if any(
                not e.is_file(follow_symlinks=False) or not is_hex_name(algorithm, e.name) for e in entries
            ):
                return None  # a stray appeared
            names = [e.name for e in entries]
            known = {d[cut:] for d in inv.blobs if d.startswith(prefix)}
            if _new_json(layout, algorithm, [n for n in names if n not in known]):
                return False
            del known, entries
            kept = [n for n in names if n not in dropped]
        if _index_changed(layout, index):
            return False
        if len(dropped) <= EXCHANGE_RATIO * len(kept) and os.environ.get(EXCHANGE_ENV) != "always":
            return None
        new_fd = progress.batch.folder_like(algorithm, old, attrs)
        if new_fd is None:
            return None
        batch = progress.batch.name
        write_dropped(layout, batch, algorithm, dropped)
        if not _link_kept(old_fd, new_fd, kept, progress, delay):
            _undo_folder(layout, progress, algorithm)
            return None
        os.fsync(new_fd)
        # The last look before the exchange: nothing written since the plan's read or the
        # listing (else re-plan; or blob by blob, which never touches what it did not plan).
        # The folder last, right before the exchange: a blob renamed in after it is in the
        # folder exchanged out, and the settle links it back.
        if (stamp is not _ANY and _ingest_stamp(layout) != stamp) or _index_changed(layout, index):
            _undo_folder(layout, progress, algorithm)
            return False
        if _folder_stamp(old_fd) != looked:
            _undo_folder(layout, progress, algorithm)
            return None
        if not progress.batch.take_folder(algorithm, parent, old):
            _undo_folder(layout, progress, algorithm)
            return None
    finally:
        os.close(parent)
    layout.forget_dir(where)  # blobs/<algorithm> is another folder now
    progress.unlinked()
    held, _ = settle_exchange(layout, batch, algorithm, dropped)
    remove_dropped(layout, batch, algorithm)
    if len(held) == len(dropped):  # all there (the usual case), in the plan's order
        moved = list(plan.blobs)
    else:
        here = {b.name for b in held}
        moved = [b for b in plan.blobs if b.name in here]
    del dropped, held
    if plan.policy.grace_ns:  # (else the purge's lstat, just before it unlinks, does)
        moved = _verify_exchanged(layout, moved, progress)
    progress.moved(moved)
    return True


def _link_kept(old_fd: int, new_fd: int, kept: list[str], progress: _Progress, delay: float) -> bool:
    """Hard-link the kept blobs into the new folder; False when this filesystem cannot."""
    for name in kept:
        if delay:
            time.sleep(delay)
        try:
            os.link(name, name, src_dir_fd=old_fd, dst_dir_fd=new_fd, follow_symlinks=False)
        except (FileNotFoundError, FileExistsError):
            continue  # gone since (a reset): gone is gone
        except OSError as e:
            if e.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.EACCES):
                return False  # no hard links here, or not ours to link (protected_hardlinks)
            raise
        progress.unlinked()
    return True


def _undo_folder(layout: Layout, progress: _Progress, algorithm: str) -> None:
    """The exchange did not happen: empty the prepared folder and forget it."""
    batch = progress.batch.name
    settle_exchange(layout, batch, algorithm, {})  # only links of kept blobs: all go
    progress.batch.drop_folder(algorithm)
    remove_dropped(layout, batch, algorithm)


def _verify_exchanged(layout: Layout, moved: list[BlobDeletion], progress: _Progress) -> list[BlobDeletion]:
    """The lstat each blob-by-blob move makes, made in the quarantine after an exchange: a
    blob that is not the file the plan saw goes back into blobs/ (left alone)."""
    name, made = progress.batch.name, batch_ns(progress.batch.name) or 0
    fd = progress.batch.alg_fd(moved[0].algorithm) if moved else -1
    ok: list[BlobDeletion] = []
    back: list[QuarantinedBlob] = []
    for b in moved:
        try:
            st = os.stat(b.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and (st.st_size, st.st_mtime_ns) == (b.size, b.mtime_ns):
            ok.append(b)
            continue
        back.append(QuarantinedBlob(name, made, b.algorithm, b.name, b.size))
        progress.warnings.append(f"{BLOBS}/{b.algorithm}/{b.name}: re-written since the plan; left alone")
    if back:
        restore(layout, back)
    return ok


def _move_blob(layout: Layout, blob: BlobDeletion, progress: _Progress, delay: float) -> int | None:
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
    progress.moved([blob])
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


def _delete_ingest_entry(
    ingest_fd: int, entry: IngestDeletion, plan: Plan, progress: _Progress, delay: float
) -> bool:
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
    try:
        index = docs.parse_index(docs.loads_strict(data, INDEX_JSON))
    except CorruptError:
        return
    named = {e.descriptor.digest for e in index.entries}
    gone = {b.digest for b in progress.deleted if b.digest in named} - set(progress.restored)
    for entry in index.entries:
        if entry.descriptor.digest in gone and layout.stat_blob(entry.descriptor.digest) is None:
            d = parse_digest(entry.descriptor.digest)
            progress.warnings.append(
                f"{INDEX_JSON}: manifests[{entry.position}]: a concurrent export re-pointed a "
                f"tag at {Layout.blob_relpath(d)}, which gc had moved into {QUARANTINE} and "
                "could not put back; run gc again"
            )
