"""What gc keeps (each export with the rules that keep it) and deletes: a pure function of one read.

No I/O here: the caller passes the inventory, its exports, the policy and `now_ns`, and gets a
frozen `Plan` back. `gc_apply` executes it (and re-plans when the directory changed).

Safety rules (the issue, and FORMAT.md):
- every export index.json references is kept, and the closure of its foreign entries;
- BuildKit writes layers, then the cache config, then the manifest, then updates index.json,
  and re-uses existing layers without touching their mtime: so no blob younger than the grace
  period is deleted, and every manifest (and cache config) younger than grace is kept with
  everything it references, however old those blobs are;
- an index.json that names nothing on disk (no entries, or only entries whose manifest is
  gone) while gc would delete blobs is refused unless the policy says so (`gc --all`): on its
  word every blob would go;
- fail closed: when index.json or a kept export cannot be parsed, its references are unknown,
  so nothing is deleted (RefusedError); a JSON blob that failed to parse could be a manifest, so
  it is kept (with a warning) rather than guessed about.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ocicache.base.errors import RefusedError, missing_manifest_hint
from ocicache.core import reach
from ocicache.core.exports import Export
from ocicache.core.inventory import Inventory
from ocicache.core.refs import resolve
from ocicache.core.reports import (
    KIND_CONFIG,
    KIND_IMAGE_CONFIG,
    KIND_INDEX,
    KIND_LAYER,
    KIND_MANIFEST,
    KIND_UNKNOWN,
    blob_kinds,
)
from ocicache.format.names import INDEX_JSON, LOCK_FILE
from ocicache.store.base import BlobFile

HOUR_NS = 3600 * 1_000_000_000

# Why an export is kept (JSON: kept[].rules).
RULE_INDEX = "index"  # a tag in index.json points at it
RULE_PINNED = "pinned"  # an `ocicache pin` entry in index.json points at it
RULE_FOREIGN = "foreign"  # reachable from a non-cache index.json entry
RULE_KEEP_LAST = "keep-last"
RULE_KEEP_WITHIN = "keep-within"
RULE_KEEP = "keep"  # --keep REF
RULE_GRACE = "grace"  # its manifest is younger than --grace: maybe an export in progress
# Rules --max-size may override (never index/pinned/foreign, never grace, never an explicit --keep).
_SOFT_RULES = frozenset({RULE_KEEP_LAST, RULE_KEEP_WITHIN})

# Why an export is dropped (JSON: dropped[].reason).
DROP_NO_RULE = "no-rule"
DROP_MAX_SIZE = "max-size"

# Blob kinds, in deletion order: a manifest goes before the blobs it references, so at every
# instant every manifest left on disk references only blobs that are still present.
BLOB_KINDS = (KIND_MANIFEST, KIND_CONFIG, KIND_LAYER, KIND_UNKNOWN)
KIND_INGEST = "ingest"
# Foreign content is deleted in the step of its kind: an index with the manifests (before the
# manifests it lists), an image config with the layers (after every manifest naming it).
_STEP_OF = {KIND_INDEX: KIND_MANIFEST, KIND_IMAGE_CONFIG: KIND_LAYER}


@dataclass(frozen=True, slots=True)
class Policy:
    """The retention policy: what to keep beyond what index.json references."""

    keep_last: int = 0
    keep_within_ns: int | None = None
    keep_refs: tuple[str, ...] = ()
    max_size: int | None = None
    grace_ns: int = HOUR_NS
    # `gc --all`: an index.json that names nothing on disk (no entries, or only entries whose
    # manifest is gone) really means "keep nothing it does not name"; else gc refuses.
    allow_empty_index: bool = False
    # `--expire-tags AGE`: a tag whose export is older than this is dropped (its index.json
    # entry; a registry's tag), unless it is a pin or matches a `--keep-tag` glob.
    expire_tags_ns: int | None = None
    keep_tags: tuple[str, ...] = ()


def expired_tags(exports: Sequence[Export], policy: Policy, now_ns: int) -> list[tuple[str, str]]:
    """(tag, digest) of every tag `--expire-tags` drops: the export it names was made more
    than AGE ago (an export of unknown time is never expired), it is not a pin (pins are not
    tags) and matches no --keep-tag glob."""
    import fnmatch

    if policy.expire_tags_ns is None:
        return []
    out = []
    for e in exports:
        if e.created_ns is None or now_ns - e.created_ns <= policy.expire_tags_ns:
            continue
        for tag in e.tags:
            if tag in e.pins or any(fnmatch.fnmatchcase(tag, g) for g in policy.keep_tags):
                continue
            out.append((tag, e.digest))
    return out


@dataclass(frozen=True, slots=True)
class ExportDecision:
    """One export and what gc does with it: `rules` when kept, `reason` when dropped."""

    digest: str
    tags: tuple[str, ...]
    pins: tuple[str, ...]
    created_ns: int | None
    size: int
    rules: tuple[str, ...]
    reason: str | None


class BlobDeletion(NamedTuple):
    """A blob file gc deletes: `blobs/<algorithm>/<name>`, as it was when planned (a tuple:
    a plan at 50k blobs makes 50k)."""

    algorithm: str
    name: str
    kind: str
    size: int
    mtime_ns: int
    allocated: int = 0  # st_blocks x 512 (layout.BlobFile)
    inode: str = ""  # "device:inode" when the file has other hard links
    links: int = 1

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self.name}"


def _deletions(blobs: list[BlobFile], kinds: dict[str, str]) -> list[BlobDeletion]:
    """The BlobDeletion of each blob file, its kind a step of the deletion order (`kinds`:
    reports.blob_kinds), in digest order, column by column at C speed (a plan at 50k blobs
    makes 50k)."""
    if not blobs:
        return []
    digests, sizes, mtimes, _, allocated, inodes, links = zip(*blobs, strict=True)
    if not all(map(operator.lt, digests, digests[1:])):  # (a directory's scan is in digest order)
        blobs = sorted(blobs, key=operator.itemgetter(0))
        digests, sizes, mtimes, _, allocated, inodes, links = zip(*blobs, strict=True)
    parts = list(map(str.partition, digests, itertools.repeat(":")))
    found = list(map(kinds.get, digests, itertools.repeat(KIND_UNKNOWN)))
    columns = zip(
        map(operator.itemgetter(0), parts),
        map(operator.itemgetter(2), parts),
        map(_STEP_OF.get, found, found),
        sizes,
        mtimes,
        allocated,
        inodes,
        links,
        strict=True,
    )
    return list(map(tuple.__new__, itertools.repeat(BlobDeletion), columns))


@dataclass(frozen=True, slots=True)
class IngestDeletion:
    """A stale `ingest/<name>` entry (an interrupted write) gc deletes."""

    name: str
    bytes: int
    mtime_ns: int
    allocated: int = 0  # disk blocks of its files that have no other hard link


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything gc will do, computed before anything is touched."""

    policy: Policy
    now_ns: int
    kept: tuple[ExportDecision, ...]  # newest first
    dropped: tuple[ExportDecision, ...]  # newest first
    blobs: tuple[BlobDeletion, ...]  # in deletion order (see BLOB_KINDS)
    ingest: tuple[IngestDeletion, ...]
    size_before: int  # blobs + ingest + index.json/oci-layout/lock, bytes
    kept_bytes: int  # the same after gc
    strays: tuple[str, ...]  # entries under blobs/ that are not blobs: reported, never touched
    warnings: tuple[str, ...]

    @property
    def freed_bytes(self) -> int:
        return self.size_before - self.kept_bytes

    def removed(self) -> dict[str, tuple[int, int]]:
        """Per kind (manifest, cache-config, layer, unknown, ingest): (count, bytes)."""
        return summarize(self.blobs, self.ingest)


def summarize(blobs: Iterable[BlobDeletion], ingest: Iterable[IngestDeletion]) -> dict[str, tuple[int, int]]:
    """(count, bytes) per kind, every kind present (zeros included)."""
    out = {k: (0, 0) for k in (*BLOB_KINDS, KIND_INGEST)}
    for b in blobs:
        n, size = out[b.kind]
        out[b.kind] = (n + 1, size + b.size)
    for i in ingest:
        n, size = out[KIND_INGEST]
        out[KIND_INGEST] = (n + 1, size + i.bytes)
    return out


def allocated_freed(blobs: Iterable[BlobDeletion], ingest: Iterable[IngestDeletion]) -> int:
    """The disk space deleting these files gives back: their allocated blocks (a sparse file
    frees only what it uses), except for a file with hard links that are not all deleted with
    it (another link keeps its blocks: a `cp -al` copy of the cache, say)."""
    freed = sum(i.allocated for i in ingest)
    linked: dict[str, list[BlobDeletion]] = {}
    for b in blobs:
        if b.links > 1 and b.inode:
            linked.setdefault(b.inode, []).append(b)
        else:
            freed += b.allocated
    for names in linked.values():
        if len(names) >= names[0].links:  # every link goes
            freed += names[0].allocated
    return freed


def make_plan(
    inv: Inventory, exports: Sequence[Export], policy: Policy, now_ns: int, metadata_bytes: int = 0
) -> Plan:
    """The plan for one read of DIR; RefusedError when it cannot be sure what is needed."""
    if inv.index_error is not None:
        e = inv.index_error
        hint = e.hint
        if inv.index_raw is None and not inv.manifests and e.message == "missing":
            hint = (
                "blobs/ holds no cache manifest, so `ocicache repair` has nothing to point "
                "index.json at; an export to DIR (--cache-to type=local,dest=DIR) writes one"
            )
        raise RefusedError(
            f"{e.message}; nothing deleted (which exports are current is unknown)",
            file=e.file or INDEX_JSON,
            where=e.where,
            hint=hint,
        )
    _require_known_foreign(inv)
    warnings: list[str] = []
    rules = _rules(inv, exports, policy, now_ns)
    by_digest = {e.digest: e for e in exports}
    for digest in rules:
        _require_known_references(inv, by_digest[digest])
    for digest, err in sorted(inv.bad_docs.items()):
        warnings.append(
            f"{inv.blobs[digest].relpath}: kept: unparseable JSON could be a manifest ({err.message})"
            if digest in inv.blobs
            else str(err)
        )
    protected = _protected_roots(inv, policy, now_ns)
    ingest_stale = tuple(i for i in inv.ingest if not _young(i.mtime_ns, now_ns, policy.grace_ns))

    size_before = metadata_bytes + sum(b.size for b in inv.blobs.values()) + sum(i.bytes for i in inv.ingest)
    # Not _young, inline (50k blobs): a blob is old when now - mtime >= grace.
    cutoff = now_ns - policy.grace_ns

    def old_bytes(digests: Iterable[str]) -> int:
        return sum([b.size for b in map(inv.blobs.__getitem__, digests) if b.mtime_ns <= cutoff])

    # What no kept export and no protected root reaches is freed (reach.Holders: the rule
    # history's UNIQUE uses), but a blob younger than grace.
    holders = reach.Holders(inv, {d: [d] for d in rules}, protected)
    freed = holders.unheld()
    dropped_by_size: list[str] = []
    if policy.max_size is not None:
        after = size_before - sum(i.bytes for i in ingest_stale) - old_bytes(freed)
        # Oldest first among exports only soft rules keep; never an index.json one.
        candidates = [
            e.digest for e in reversed(exports) if e.digest in rules and set(rules[e.digest]) <= _SOFT_RULES
        ]
        while after > policy.max_size and candidates:
            victim = candidates.pop(0)
            del rules[victim]
            dropped_by_size.append(victim)
            more = holders.drop(victim)
            freed |= more
            after -= old_bytes(more)
        if after > policy.max_size:
            warnings.append(
                f"still over --max-size: {after} bytes kept > {policy.max_size}; "
                "what is left is needed by index.json, --keep, or is younger "
                "than --grace"
            )
    deletions = _deletions(
        [b for d, b in inv.blobs.items() if d in freed and b.mtime_ns <= cutoff], blob_kinds(inv)
    )
    if deletions and not policy.allow_empty_index:
        _require_index_protects_something(inv, deletions)
    removed = sum(d.size for d in deletions) + sum(i.bytes for i in ingest_stale)
    for stray in inv.strays:
        warnings.append(f"{stray.relpath}: {stray.reason}; left alone")
    warnings.extend(str(p) for p in inv.problems if p.file == LOCK_FILE)
    kept = tuple(_decision(e, tuple(rules[e.digest]), None) for e in exports if e.digest in rules)
    dropped = tuple(
        _decision(e, (), DROP_MAX_SIZE if e.digest in dropped_by_size else DROP_NO_RULE)
        for e in exports
        if e.digest not in rules
    )
    return Plan(
        policy=policy,
        now_ns=now_ns,
        kept=kept,
        dropped=dropped,
        blobs=_deletion_order(inv, deletions),
        ingest=tuple(IngestDeletion(i.name, i.bytes, i.mtime_ns, i.allocated) for i in ingest_stale),
        size_before=size_before,
        kept_bytes=size_before - removed,
        strays=tuple(s.relpath for s in inv.strays),
        warnings=tuple(warnings),
    )


def needed(inv: Inventory, exports: Sequence[Export], policy: Policy, now_ns: int) -> set[str]:
    """Every digest a plan made now keeps, present or not: each index.json entry, each kept
    export and protected root, with everything they reference. It never refuses (a manifest
    index.json names may be in gc's quarantine: this says it must be put back)."""
    roots = [*_rules(inv, exports, policy, now_ns), *_protected_roots(inv, policy, now_ns)]
    if inv.index is not None:
        roots.extend(e.descriptor.digest for e in inv.index.entries)
    return reach.closure(inv, roots)


def _young(mtime_ns: int, now_ns: int, grace_ns: int) -> bool:
    """Younger than grace (a future mtime counts as young: when in doubt, keep)."""
    return now_ns - mtime_ns < grace_ns


def _rules(inv: Inventory, exports: Sequence[Export], policy: Policy, now_ns: int) -> dict[str, list[str]]:
    """Every kept export's digest -> the rules that keep it (in a fixed order)."""
    rules: dict[str, list[str]] = {}

    def add(digest: str, rule: str) -> None:
        got = rules.setdefault(digest, [])
        if rule not in got:
            got.append(rule)

    expired: dict[str, set[str]] = {}
    for tag, digest in expired_tags(exports, policy, now_ns):
        expired.setdefault(digest, set()).add(tag)
    for e in exports:
        if e.tags and not set(e.tags) <= expired.get(e.digest, set()):
            add(e.digest, RULE_INDEX)
        if e.pins or (e.positions and not e.tags):
            add(e.digest, RULE_PINNED if e.pins else RULE_INDEX)
        if e.digest in inv.foreign_closure:
            add(e.digest, RULE_FOREIGN)
    older = [e for e in exports if e.digest not in rules]
    for e in older[: max(policy.keep_last, 0)]:
        add(e.digest, RULE_KEEP_LAST)
    if policy.keep_within_ns is not None:
        for e in exports:
            if e.created_ns is not None and now_ns - e.created_ns <= policy.keep_within_ns:
                add(e.digest, RULE_KEEP_WITHIN)
    for ref in policy.keep_refs:
        # NotFoundError: keep nothing by guess
        add(resolve(exports, ref, inv.foreign_entries()).digest, RULE_KEEP)
    for e in exports:
        # (a registry's manifest of unknown push time: its blob's time is when ocicache first
        # saw it, or now; inventory.untimed)
        blob = inv.blobs.get(e.digest)
        mtime = e.mtime_ns if e.mtime_ns is not None or blob is None else blob.mtime_ns
        if mtime is not None and _young(mtime, now_ns, policy.grace_ns):
            add(e.digest, RULE_GRACE)
    return rules


def _require_known_references(inv: Inventory, e: Export) -> None:
    """A kept export whose references cannot be known makes the whole plan unsafe."""
    where = f"export {e.digest}"
    if e.digest not in inv.blobs and inv.held(e.digest):
        raise RefusedError(
            "index.json references this manifest and it is held in gc's quarantine; a gc "
            "without --dry-run puts it back first",
            file=INDEX_JSON,
            where=e.digest,
            hint="run `ocicache gc DIR` (it restores what index.json needs before planning)",
        )
    if e.digest not in inv.blobs:
        name, pin = (e.tags[0], False) if e.tags else (e.pins[0], True) if e.pins else (None, False)
        raise RefusedError(
            "index.json references this manifest but it is missing; which blobs it needs is "
            "unknown, so nothing is deleted",
            file=INDEX_JSON,
            where=e.digest,
            hint=missing_manifest_hint(inv.root, name, pin),
        )
    if e.digest not in inv.manifests:
        err = inv.bad_docs.get(e.digest)
        raise RefusedError(
            f"kept manifest cannot be parsed ({err.message if err else 'not a cache manifest'}); "
            "nothing deleted",
            file=inv.blobs[e.digest].relpath,
            where=where,
        )
    if e.config is not None and e.config.digest in inv.blobs and e.cache_config is None:
        err = inv.bad_docs.get(e.config.digest)
        raise RefusedError(
            f"kept export's cache config cannot be parsed ({err.message if err else 'unknown'});"
            " nothing deleted",
            file=inv.blobs[e.config.digest].relpath,
            where=where,
        )


def _require_known_foreign(inv: Inventory) -> None:
    """Foreign content reachable from index.json is kept whole; a document in it that cannot be
    read or understood references blobs nobody can name, so nothing may be deleted."""
    for digest, why in sorted(inv.foreign_unknown.items()):
        blob = inv.blobs.get(digest)
        raise RefusedError(
            f"{why}: index.json reaches this document (through an entry that is no cache "
            "export: an image, an artifact) and which blobs it needs is unknown; nothing deleted",
            file=blob.relpath if blob is not None else digest,
            where=inv.reached_from(digest),
            hint="`ocicache check DIR` says more; remove the index.json entry that reaches it "
            "(`ocicache unpin DIR NAME --force`) to let gc run",
        )


def _require_index_protects_something(inv: Inventory, deletions: Sequence[BlobDeletion]) -> None:
    """An index.json that names nothing on disk (no entries, or only entries whose manifest is
    gone) would make gc delete every blob: refuse unless `--all` says that is meant."""
    if not inv.names_nothing_present():
        return
    assert inv.index is not None
    entries = inv.index.entries
    what = (
        "has no entries"
        if not entries
        else f"names nothing on disk ({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, "
        "no manifest present)"
    )
    n, size = len(deletions), sum(d.size for d in deletions)
    raise RefusedError(
        f"{what}: gc would delete every blob it holds ({n} blob{'' if n == 1 else 's'}, "
        f"{size} bytes); nothing deleted",
        file=INDEX_JSON,
        hint="`ocicache repair DIR` points `latest` at the newest export; `ocicache gc --all "
        "DIR` deletes everything index.json does not name",
    )


def _protected_roots(inv: Inventory, policy: Policy, now_ns: int) -> list[str]:
    """Blobs kept whatever the policy, with everything they reference.

    The foreign closure and JSON that failed to parse (it could be a manifest: reach.always_kept);
    and every manifest or cache config younger than grace: an export in progress may re-use old
    layers, and its config (written before its manifest) already names them.
    """
    roots = set(reach.always_kept(inv))
    for digest in (*inv.manifests, *inv.configs, *inv.foreign):
        blob = inv.blobs.get(digest)
        if blob is not None and _young(blob.mtime_ns, now_ns, policy.grace_ns):
            roots.add(digest)
    return sorted(roots)


def _deletion_order(inv: Inventory, deletions: list[BlobDeletion]) -> tuple[BlobDeletion, ...]:
    """Manifests first (a parent before the manifests it references), then configs, layers,
    unknown blobs; by digest within each step, so the order is deterministic (`deletions`:
    _deletions's, in digest order)."""
    doomed = {d.digest for d in deletions if d.kind == KIND_MANIFEST}
    parents: dict[str, list[str]] = {}
    for p in sorted(doomed):
        for child in reach.children(inv, p):
            if child in doomed and child != p:
                parents.setdefault(child, []).append(p)
    depth = _depths(parents, doomed)
    steps: dict[str, list[BlobDeletion]] = {k: [] for k in BLOB_KINDS}
    for d in deletions:
        steps[d.kind].append(d)
    steps[KIND_MANIFEST].sort(key=lambda d: (depth[d.digest], d.digest))
    out: list[BlobDeletion] = []
    for kind in BLOB_KINDS:
        out.extend(steps[kind])  # (the others stay in digest order, as _deletions made them)
    return tuple(out)


def _depths(parents: dict[str, list[str]], nodes: Iterable[str]) -> dict[str, int]:
    """Per node, the longest chain of nodes above it (0: nothing references it), following
    `parents` and ignoring a link back into the current chain (a loop); iterative: foreign
    indexes can nest thousands deep."""
    depth: dict[str, int] = {}
    for start in sorted(nodes):
        if start in depth:
            continue
        best = {start: -1}
        on_path = {start}
        stack = [(start, iter(parents.get(start, ())))]
        while stack:
            node, todo = stack[-1]
            for p in todo:
                if p in on_path:
                    continue
                if p in depth:
                    best[node] = max(best[node], depth[p])
                    continue
                best[p] = -1
                on_path.add(p)
                stack.append((p, iter(parents.get(p, ()))))
                break
            else:
                stack.pop()
                on_path.discard(node)
                depth[node] = 1 + best[node]
                if stack:
                    above = stack[-1][0]
                    best[above] = max(best[above], depth[node])
    return depth


def _decision(e: Export, rules: tuple[str, ...], reason: str | None) -> ExportDecision:
    return ExportDecision(e.digest, e.tags, e.pins, e.created_ns, e.size, rules, reason)
