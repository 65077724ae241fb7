"""Exports: every cache manifest on disk as an Export value, with its time, tags, sizes and health.

When was each export made? Decided per export, from the best evidence the directory holds
(FORMAT.md):
- a manifest blob is never rewritten, so its mtime is when it was exported, when that mtime is
  credible: not older than the newest step the manifest records (a manifest is written after
  its steps were built), and not a copy's. A copy that did not keep mtimes (`cp -r`,
  `aws s3 sync`, rsync without `-t`, a git checkout) writes its files back to back: several
  manifests written within seconds of each other, at least two of them long after the steps
  they record, are a copied batch (BuildKit writes one manifest per export, right after the
  export's newest step; two concurrent exports that both re-used only old steps look the
  same, and then get their step times); a lone manifest written long after its newest step in
  one run with every blob it references is a copy too (or a fully cached first export into an
  empty directory, which then gets its step time);
- otherwise the newest `buildkit/createdat` / `createdAt` inside the export, i.e. when its
  newest step was built (`createdFrom` says which; `mtimeRejected` why the mtime was not used);
- BuildKit appends each export at the end of index.json, so the entries it wrote are in
  export order: a later entry is never placed before an earlier one, and the last is the newest.

Sizes: SIZE is the bytes on disk of every blob the export reaches (reach.py), `missingBytes`
what its descriptors say the missing ones would take, and UNIQUE is what dropping that export
alone frees (reach.Holders: the rule gc deletes by).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ocicache.base.timefmt import parse_rfc3339_ns
from ocicache.core import reach
from ocicache.core.inventory import Inventory
from ocicache.format.model import ANN_CREATED, CacheConfig, CacheManifest, Descriptor
from ocicache.store.base import BlobFile

EVIDENCE_MTIME = "mtime"
EVIDENCE_CREATEDAT = "createdat"
EVIDENCE_NONE = "none"

# Why a manifest's mtime is not its export time (JSON: mtimeRejected).
REJECT_OLDER = "older-than-steps"  # older than the newest step it records: reset, or a skewed clock
REJECT_BATCH = "copied-batch"  # one of several manifests a copy wrote within seconds
REJECT_ALONE = "copied-alone"  # written in one run with all it references, long after its steps

# A manifest written more than this before its own newest step was built cannot be right.
_SKEW_NS = 2_000_000_000
# "Long after its newest step": BuildKit writes a manifest right after the export's newest step
# was built (real exports: well under a second to a few seconds later, FORMAT.md fixtures).
_LATE_NS = 60 * 1_000_000_000
# Files one copy wrote back to back: within this of each other, plus the time it takes to
# write the files between them at a slow copy's rate (a big layer takes a while).
_RUN_GAP_NS = 3_000_000_000
_COPY_BYTES_PER_S = 8 << 20


@dataclass(frozen=True, slots=True)
class Export:
    """One cache export (a cache manifest blob) and what it references."""

    digest: str
    shape: str | None  # None when the manifest blob is missing or unreadable
    media_type: str | None
    manifest_size: int
    tags: tuple[str, ...]  # index.json ref names BuildKit wrote for it
    pins: tuple[str, ...]  # ref names `ocicache pin` registered for it
    positions: tuple[int, ...]  # its index.json positions
    tag_positions: tuple[int, ...]  # positions of the entries BuildKit wrote (not our pins)
    created_ns: int | None
    created_from: str
    mtime_rejected: str | None  # why the manifest's mtime is not its export time (REJECT_*)
    mtime_ns: int | None
    newest_step_ns: int | None
    config: Descriptor | None
    cache_config: CacheConfig | None
    layers: tuple[Descriptor, ...]  # distinct by digest, sorted by digest
    blobs: tuple[str, ...]  # manifest, config and distinct layers (sorted)
    size: int  # bytes on disk of every blob it reaches (missing ones count for nothing)
    missing_bytes: int  # what its descriptors say the missing blobs in `missing` take
    unique_size: int  # bytes dropping this export alone frees (reach.Holders, as gc does)
    missing: tuple[str, ...]  # referenced blobs not on disk
    wrong_size: tuple[str, ...]  # referenced blobs whose size differs from the descriptor
    problems: tuple[str, ...]  # why it is not usable (unreadable manifest/config, loops...)

    @property
    def current(self) -> bool:
        """The export an index.json entry BuildKit wrote points at (pins do not count; an entry
        without a ref name, as very old clients may write, still counts)."""
        return bool(self.tag_positions)

    @property
    def complete(self) -> bool:
        return self.shape is not None and not (self.missing or self.wrong_size or self.problems)

    @property
    def referenced_by_index(self) -> bool:
        return bool(self.positions)


@dataclass(slots=True)
class _Facts:
    """What one manifest says, before sizes shared with other exports are known."""

    digest: str
    manifest: CacheManifest | None
    blob_mtime: int | None
    size_on_disk: int
    present_bytes: int  # on disk: the manifest, its config and layers (those present)
    entries: list[tuple[int, str | None, bool]]
    config: Descriptor | None
    cache_config: CacheConfig | None
    layers: tuple[Descriptor, ...]
    sizes: dict[str, int]
    missing: tuple[str, ...]
    wrong: tuple[str, ...]
    problems: tuple[str, ...]
    newest_step: int | None


def build_exports(inv: Inventory) -> list[Export]:
    """Every export on disk (and every index.json entry's manifest), newest first."""
    by_digest: dict[str, list[tuple[int, str | None, bool]]] = {}
    if inv.index is not None:
        for entry in inv.index.entries:
            by_digest.setdefault(entry.descriptor.digest, []).append(
                (entry.position, entry.ref_name, entry.pinned)
            )
    digests = set(inv.manifests)
    # An index.json entry whose manifest is missing or unreadable is an export we cannot read;
    # one that is a foreign manifest (not a cache, even an invalid one) is not an export at all.
    digests.update(d for d in by_digest if not inv.is_foreign(d))
    facts = [_facts(inv, d, by_digest.get(d, [])) for d in sorted(digests)]
    docs = reach.documents(inv)
    reached = {f.digest: reach.closure(inv, [f.digest], docs=docs) for f in facts}
    holders = reach.Holders(inv, reached, reach.always_kept(inv), closed=True)
    # A registry's times are the registry's own (when each tag moved), never a copy's.
    rejected = _judge_mtimes(inv.blobs, facts, copies=inv.kind == "local")
    exports = [
        _finish(f, inv, reached[f.digest], holders.alone(f.digest), rejected.get(f.digest)) for f in facts
    ]
    if inv.kind == "registry":
        return order_registry(exports, inv.superseded)
    return order_newest_first(exports)


def _facts(inv: Inventory, digest: str, entries: list[tuple[int, str | None, bool]]) -> _Facts:
    blob = inv.blobs.get(digest)
    manifest = inv.manifests.get(digest)
    problems: list[str] = []
    sizes: dict[str, int] = {}
    layers: dict[str, Descriptor] = {}
    config = manifest.config if manifest else None
    cache_config = inv.configs.get(config.digest) if config else None
    if blob is None:
        problems.append("manifest blob is missing")
    else:
        sizes[digest] = blob.size
        if manifest is None:
            err = inv.bad_docs.get(digest)
            problems.append(f"manifest unreadable: {err.message if err else 'not a cache manifest'}")
    if manifest is not None:
        # The first descriptor of a digest wins (zip over the reversed list: later keys win).
        ordered = manifest.layers[::-1]
        layers = dict(zip([d.digest for d in ordered], ordered, strict=True))
        if config is None:
            problems.append("manifest names no cache config")
        else:
            sizes[config.digest] = config.size
            if cache_config is None and config.digest in inv.blobs:
                err = inv.bad_docs.get(config.digest)
                problems.append(f"cache config unreadable: {err.message if err else 'unknown'}")
        if cache_config is not None:
            problems.extend(f"cache config {p}" for p in cache_config.problems)
        for layer_digest, layer in layers.items():
            if layer_digest not in sizes:
                sizes[layer_digest] = layer.size
    referenced = [d for d in sizes if d != digest]
    # One pass over what a manifest references (big caches: 300 exports x 200 layers).
    missing: list[str] = []
    wrong: list[str] = []
    on_disk = inv.blobs
    present = blob.size if blob else 0
    for d in referenced:
        b = on_disk.get(d)
        if b is None:
            missing.append(d)
        else:
            present += b.size
            if b.size != sizes[d]:
                wrong.append(d)
    steps = [
        t
        for t in map(parse_rfc3339_ns, [layer.annotations.get(ANN_CREATED) for layer in layers.values()])
        if t is not None
    ]
    if cache_config is not None:
        steps.extend(cache_config.layer_created.values())
    return _Facts(
        digest=digest,
        manifest=manifest,
        blob_mtime=blob.mtime_ns if blob and digest not in inv.untimed else None,
        size_on_disk=blob.size if blob else 0,
        present_bytes=present,
        entries=sorted(entries, key=lambda e: e[0]),
        config=config,
        cache_config=cache_config,
        layers=tuple(layers[d] for d in sorted(layers)),
        sizes=sizes,
        missing=tuple(sorted(missing)),
        wrong=tuple(sorted(wrong)),
        problems=tuple(problems),
        newest_step=max(steps) if steps else None,
    )


def _judge_mtimes(blobs: dict[str, BlobFile], facts: Iterable[_Facts], copies: bool = True) -> dict[str, str]:
    """Digest -> why its manifest's mtime is not its export time, for every export whose mtime
    is not credible (module docstring). Decided per export, never for the whole directory."""
    rejected: dict[str, str] = {}
    dated = sorted(
        (f for f in facts if f.blob_mtime is not None and f.manifest is not None),
        key=lambda f: (f.blob_mtime, f.digest),
    )
    late: list[_Facts] = []
    for f in dated:
        mtime, step = f.blob_mtime, f.newest_step
        assert mtime is not None
        if step is None:
            continue
        if mtime < step - _SKEW_NS:
            rejected[f.digest] = REJECT_OLDER
        elif mtime - step > _LATE_NS:
            late.append(f)
    if not late or not copies:
        return rejected
    written = _Writes(blobs)
    if len(late) >= 2:
        # Batches: manifests chained by mtime, each written soon after the previous one (as
        # soon as a copy could write the files between them).
        batch: dict[str, int] = {}
        number = 0
        for prev, f in zip([None, *dated], dated, strict=False):
            if prev is not None and not written.back_to_back(prev.blob_mtime, f.blob_mtime):
                number += 1
            batch[f.digest] = number
        late_per_batch = Counter(batch[f.digest] for f in late)
        copied = {n for n, count in late_per_batch.items() if count >= 2}
        for f in dated:
            if f.digest not in rejected and batch[f.digest] in copied:
                # Every manifest of the batch, also the ones written soon after their own
                # steps (exported just before the copy: their mtimes are the copy's as well).
                rejected[f.digest] = REJECT_BATCH
    for f in late:
        if f.digest not in rejected and _written_in_one_go(blobs, f, written.total):
            rejected[f.digest] = REJECT_ALONE
    return rejected


def _written_in_one_go(blobs: dict[str, BlobFile], f: _Facts, total: int) -> bool:
    """Whether the manifest and every blob it references that is on disk were written within
    the time a copy takes to write them (`total`: the bytes of every blob on disk)."""
    bound = _Writes.allowance(total)
    lo = hi = f.blob_mtime
    assert lo is not None and hi is not None
    nbytes = 0
    for d in f.sizes:  # the manifest itself, its config and layers
        b = blobs.get(d)
        if b is None:
            continue
        nbytes += b.size
        lo, hi = min(lo, b.mtime_ns), max(hi, b.mtime_ns)
        if hi - lo > bound:
            return False
    return hi - lo <= _Writes.allowance(nbytes)


class _Writes:
    """Every blob's mtime, in order, with the bytes written up to each: how long a copy could
    have taken to write what lies between two instants."""

    def __init__(self, blobs: dict[str, BlobFile]) -> None:
        self.blobs = blobs
        self.total = sum([b.size for b in blobs.values()])
        self.times: list[int] = []
        self.upto: list[int] = []

    @staticmethod
    def allowance(nbytes: int) -> int:
        return _RUN_GAP_NS + nbytes * 1_000_000_000 // _COPY_BYTES_PER_S

    def back_to_back(self, earlier: int | None, later: int | None) -> bool:
        """Whether a copy writing files one after the other explains both instants: the gap is
        no longer than writing the files with mtimes in (earlier, later] takes."""
        assert earlier is not None and later is not None
        if later - earlier <= _RUN_GAP_NS:
            return True
        if later - earlier > self.allowance(self.total):
            return False
        if not self.times:  # the files in order of mtime, with the bytes written up to each
            ordered = sorted(self.blobs.values(), key=lambda b: b.mtime_ns)
            self.times = [b.mtime_ns for b in ordered]
            self.upto = list(itertools.accumulate((b.size for b in ordered), initial=0))
        lo = bisect.bisect_right(self.times, earlier)
        hi = bisect.bisect_right(self.times, later)
        return later - earlier <= self.allowance(self.upto[hi] - self.upto[lo])


def _finish(f: _Facts, inv: Inventory, reached: set[str], unique: set[str], rejected: str | None) -> Export:
    mtime, newest = f.blob_mtime, f.newest_step
    created: int | None
    if mtime is not None and rejected is None:
        created, evidence = mtime, EVIDENCE_MTIME
    elif newest is not None:
        created, evidence = newest, EVIDENCE_CREATEDAT
    else:
        created, evidence = None, EVIDENCE_NONE
    blobs = tuple(sorted(f.sizes))
    return Export(
        digest=f.digest,
        shape=f.manifest.shape if f.manifest else None,
        media_type=f.manifest.media_type if f.manifest else None,
        manifest_size=f.size_on_disk,
        tags=tuple(dict.fromkeys(n for _, n, p in f.entries if n is not None and not p)),
        pins=tuple(dict.fromkeys(n for _, n, p in f.entries if n is not None and p)),
        positions=tuple(pos for pos, _, _ in f.entries),
        tag_positions=tuple(pos for pos, n, p in f.entries if not p),
        created_ns=created,
        created_from=evidence,
        mtime_rejected=rejected if mtime is not None else None,
        mtime_ns=mtime,
        newest_step_ns=newest,
        config=f.config,
        cache_config=f.cache_config,
        layers=f.layers,
        blobs=blobs,
        # (what it reaches beyond its config and layers: normally nothing)
        size=f.present_bytes + reach.freed_bytes(inv, reached.difference(f.sizes)),
        missing_bytes=sum(f.sizes[d] for d in f.missing),
        unique_size=reach.freed_bytes(inv, unique),
        missing=f.missing,
        wrong_size=f.wrong,
        problems=f.problems,
    )


def order_registry(exports: list[Export], superseded: dict[str, int]) -> list[Export]:
    """A registry's exports as ~N counts them: the current ones (a tag names them) first, by
    export time; then the older ones by when their tag moved off them (`superseded`: the
    storage's tag history, or ocicache's record of it), newest first; an older export of unknown
    history by its export time."""

    def key(e: Export) -> tuple[int, int, str]:
        if e.current:
            return (1, e.created_ns or 0, e.digest)
        return (0, superseded.get(e.digest, e.created_ns or 0), e.digest)

    return sorted(exports, key=key, reverse=True)


def order_newest_first(exports: list[Export]) -> list[Export]:
    """Sort by export time, newest first, within what index.json proves about the order.

    BuildKit appends each export's entry at the end of index.json, so the entries it wrote are
    in export order, and the last of them is the newest export of all (even when it re-exported
    a manifest whose blob, never rewritten, keeps an older mtime).
    """
    effective: dict[str, int] = {e.digest: e.created_ns or 0 for e in exports}
    written = sorted((max(e.tag_positions), e.digest) for e in exports if e.tag_positions)
    running = 0
    for _, digest in written:
        running = max(running, effective[digest])
        effective[digest] = running
    if written:
        effective[written[-1][1]] = max(effective.values())
    last_position = {digest: pos for pos, digest in written}
    return sorted(
        exports,
        key=lambda e: (effective[e.digest], last_position.get(e.digest, -1), e.digest),
        reverse=True,
    )
