"""Exports: every cache manifest on disk as an Export value, with its time, tags, sizes and health.

Ordering (newest first) uses the best evidence the directory still holds (FORMAT.md):
- a manifest blob is never rewritten, so its mtime is when it was exported;
- where mtimes were lost (a git checkout or a copy that did not keep them: every manifest is
  then younger than every step ever built in the directory), the newest `buildkit/createdat` /
  `createdAt` inside the export, i.e. when its newest step was built;
- BuildKit appends each export at the end of index.json, so the entries it wrote are in
  export order: a later entry is never placed before an earlier one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ocicache.inventory import Inventory
from ocicache.model import ANN_CREATED, CacheConfig, CacheManifest, Descriptor
from ocicache.timefmt import parse_rfc3339_ns

EVIDENCE_MTIME = "mtime"
EVIDENCE_CREATEDAT = "createdat"
EVIDENCE_NONE = "none"

# A manifest written more than this before its own newest step was built cannot be right.
_SKEW_NS = 2_000_000_000
_INSTANT_NS = 2_000_000_000  # every blob written within this: one bulk copy or checkout
_LONG_AFTER_NS = 3600 * 1_000_000_000  # ... long after the newest step was built


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
    mtime_ns: int | None
    newest_step_ns: int | None
    config: Descriptor | None
    cache_config: CacheConfig | None
    layers: tuple[Descriptor, ...]  # distinct by digest, sorted by digest
    blobs: tuple[str, ...]  # manifest, config and distinct layers (sorted)
    size: int
    unique_size: int
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
                (entry.position, entry.ref_name, entry.pinned))
    digests = set(inv.manifests)
    # An index.json entry whose manifest is missing or unreadable is an export we cannot read;
    # one that is a foreign manifest (not a cache, even an invalid one) is not an export at all.
    digests.update(d for d in by_digest if not inv.is_foreign(d))
    facts = [_facts(inv, d, by_digest.get(d, [])) for d in sorted(digests)]
    counts: Counter[str] = Counter()
    for f in facts:
        counts.update(f.sizes.keys())
    usable = _mtimes_usable(facts, [b.mtime_ns for b in inv.blobs.values()])
    return order_newest_first([_finish(f, counts, usable) for f in facts])


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
    for d in referenced:
        b = on_disk.get(d)
        if b is None:
            missing.append(d)
        elif b.size != sizes[d]:
            wrong.append(d)
    steps = [t for t in map(parse_rfc3339_ns, [layer.annotations.get(ANN_CREATED)
                                              for layer in layers.values()]) if t is not None]
    if cache_config is not None:
        steps.extend(cache_config.layer_created.values())
    return _Facts(
        digest=digest,
        manifest=manifest,
        blob_mtime=blob.mtime_ns if blob else None,
        size_on_disk=blob.size if blob else 0,
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


def _mtimes_usable(facts: list[_Facts], blob_mtimes: list[int]) -> bool:
    """Whether manifest mtimes are export times, for the whole directory at once.

    Not when any manifest is older than its own newest step (a manifest is written after its
    steps were built: its mtime comes from a skewed clock or was reset), nor when every manifest
    is younger than every step ever built (a checkout or a copy that dropped mtimes: in a
    directory BuildKit wrote, the first export predates the steps later exports built).
    Evidence is never mixed: two clocks would interleave exports wrongly.
    """
    dated = [(f.blob_mtime, f.newest_step) for f in facts
             if f.blob_mtime is not None and f.manifest is not None]
    if any(step is not None and mtime < step - _SKEW_NS for mtime, step in dated):
        return False
    steps = [step for _, step in dated if step is not None]
    if len(dated) == 1 and steps:
        # One manifest: lost when the whole directory was written within an instant (a checkout
        # or a copy) long after its newest step was built. BuildKit writes an export's blobs
        # over its upload, right after the build; a fully cached export into an empty directory
        # long after the build looks the same, and then gets the step time (createdat) instead.
        spread = max(blob_mtimes) - min(blob_mtimes) if blob_mtimes else 0
        return not (dated[0][0] - steps[0] > _LONG_AFTER_NS and spread < _INSTANT_NS)
    return not (len(dated) >= 2 and steps and min(m for m, _ in dated) >= max(steps))


def _finish(f: _Facts, counts: Counter[str], mtimes_usable: bool) -> Export:
    mtime, newest = f.blob_mtime, f.newest_step
    created: int | None
    if mtime is not None and mtimes_usable:
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
        mtime_ns=mtime,
        newest_step_ns=newest,
        config=f.config,
        cache_config=f.cache_config,
        layers=f.layers,
        blobs=blobs,
        size=sum(f.sizes.values()),
        unique_size=sum(s for d, s in f.sizes.items() if counts[d] == 1),
        missing=f.missing,
        wrong_size=f.wrong,
        problems=f.problems,
    )


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
