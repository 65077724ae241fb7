"""Pure views over an inventory and its exports: the stack of one export, the blob list, disk usage."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from ocicache.core.exports import Export
from ocicache.core.inventory import Inventory
from ocicache.format import mediatypes as mt
from ocicache.format.model import Descriptor

KIND_MANIFEST = "manifest"
KIND_CONFIG = "cache-config"
KIND_LAYER = "layer"
KIND_UNKNOWN = "unknown"
# Foreign content only (images, artifacts in the layout): an image index or Docker manifest
# list, and an image config (or any blob a foreign manifest names in `config`).
KIND_INDEX = mt.ROLE_INDEX
KIND_IMAGE_CONFIG = mt.ROLE_CONFIG
_ROLE_KINDS = {
    mt.ROLE_MANIFEST: KIND_MANIFEST,
    mt.ROLE_INDEX: KIND_INDEX,
    mt.ROLE_CONFIG: KIND_IMAGE_CONFIG,
    mt.ROLE_LAYER: KIND_LAYER,
    mt.ROLE_CACHE_CONFIG: KIND_CONFIG,
}


@dataclass(frozen=True, slots=True)
class StackLayer:
    """One layer of an export in stack order: its place in the chain and what is known of it."""

    index: int  # position in the cache config's layers[]
    parent: int  # -1 for a root
    depth: int  # 0 for a root
    digest: str
    media_type: str | None
    size: int | None
    created_ns: int | None
    diff_id: str | None
    origins: tuple[str, ...]
    present: bool


def stack(inv: Inventory, export: Export) -> list[StackLayer]:
    """The layers of `export` in stack order (parents before children, roots first).

    A cache config's layers form a forest (one chain per build result); each chain is listed
    root first, depth-first, siblings by creation time then digest. Layers the manifest lists
    that the config does not place come last, at depth 0.
    """
    descriptors: dict[str, Descriptor] = {d.digest: d for d in export.layers}
    config = export.cache_config
    out: list[StackLayer] = []
    if config is not None and not config.problems:
        children: dict[int, list[int]] = {}
        for i, layer in enumerate(config.layers):
            children.setdefault(layer.parent, []).append(i)

        def created(i: int) -> int:
            d = descriptors.get(config.layers[i].blob)
            t = config.layer_created.get(i) or (d.created_ns if d else None)
            return t or 0

        # Depth-first, iteratively (a chain can be thousands of layers deep): a stack of
        # (layer, depth), children pushed in reverse so that they come out in order.
        def ordered(ids: list[int]) -> list[int]:
            return sorted(ids, key=lambda c: (created(c), c))

        todo = [(root, 0) for root in reversed(ordered(children.get(-1, [])))]
        while todo:
            i, depth = todo.pop()
            layer = config.layers[i]
            out.append(
                _stack_layer(
                    inv, i, layer.parent, depth, layer.blob, descriptors, config.layer_created.get(i)
                )
            )
            todo.extend((child, depth + 1) for child in reversed(ordered(children.get(i, []))))
    placed = {s.digest for s in out}
    for digest in sorted(descriptors):
        if digest not in placed:
            out.append(_stack_layer(inv, -1, -1, 0, digest, descriptors, None))
    return out


def _stack_layer(
    inv: Inventory,
    i: int,
    parent: int,
    depth: int,
    digest: str,
    descriptors: dict[str, Descriptor],
    created: int | None,
) -> StackLayer:
    d = descriptors.get(digest)
    return StackLayer(
        index=i,
        parent=parent,
        depth=depth,
        digest=digest,
        media_type=d.media_type if d else None,
        size=d.size if d else (inv.blobs[digest].size if digest in inv.blobs else None),
        created_ns=(d.created_ns if d else None) or created,
        diff_id=d.diff_id if d else None,
        origins=d.origins if d else (),
        present=digest in inv.blobs,
    )


class BlobRow(NamedTuple):
    """One blob on disk: what it is, and who needs it (a tuple: `blobs` makes one per blob)."""

    digest: str
    size: int
    kind: str
    exports: int  # how many exports reference it (as manifest, config or layer)
    from_index: bool  # reachable from index.json
    mtime_ns: int
    mode: int


def reachable_from_index(inv: Inventory, exports: list[Export]) -> set[str]:
    """Every blob the index.json entries reach (cache exports and foreign closures)."""
    out = set(inv.foreign_closure)
    for e in exports:
        if e.referenced_by_index:
            out.update(e.blobs)
    return out


def blob_kinds(inv: Inventory) -> dict[str, str]:
    """manifest / index / cache-config / config / layer for every blob some parsed document
    names as such (a blob no document names is `unknown`). A document is what its content is;
    any other blob is what the descriptor that names it says (foreign content: by media type,
    then by the key it sits in)."""
    kinds: dict[str, str] = {}
    for m in inv.manifests.values():
        for d in (*m.layers, *m.others):
            kinds.setdefault(d.digest, KIND_LAYER)
    for other in inv.foreign.values():
        for i, child in enumerate(other.children):
            kinds.setdefault(child.digest, _ROLE_KINDS[mt.role_of(other.key(i), child.media_type)])
    for digest, role in inv.foreign_roles.items():  # reachable: how it was reached wins
        kinds[digest] = _ROLE_KINDS[role]
    for m in inv.manifests.values():
        if m.config is not None:
            kinds[m.config.digest] = KIND_CONFIG
    for digest in inv.configs:
        kinds[digest] = KIND_CONFIG
    for digest, other in inv.foreign.items():
        kinds[digest] = KIND_INDEX if other.media_type in mt.INDEX_TYPES else KIND_MANIFEST
    for digest in inv.manifests:
        kinds[digest] = KIND_MANIFEST
    return kinds


def blob_rows(inv: Inventory, exports: list[Export]) -> list[BlobRow]:
    """Every blob on disk, sorted by digest."""
    counts = Counter(itertools.chain.from_iterable(e.blobs for e in exports))
    kinds = blob_kinds(inv)
    indexed = reachable_from_index(inv, exports)
    if not inv.blobs:
        return []
    # Column by column, at C speed (map over the blobs' own columns: no Python call per blob).
    digests, sizes, mtimes, modes = list(zip(*inv.blobs.values(), strict=True))[:4]
    columns = zip(
        digests,
        sizes,
        map(kinds.get, digests, itertools.repeat(KIND_UNKNOWN)),
        map(counts.get, digests, itertools.repeat(0)),
        map(indexed.__contains__, digests),
        mtimes,
        modes,
        strict=True,
    )
    return list(map(tuple.__new__, itertools.repeat(BlobRow), columns))


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes and file counts of one category of `du`: `bytes` is what the files hold (their
    apparent size), `allocated` what they take on disk (st_blocks x 512: a sparse file its real
    blocks, a file with several hard links once, in the first category that meets it)."""

    category: str
    files: int
    bytes: int
    allocated: int = 0


CATEGORIES = ("index", "older-exports", "unreferenced", "ingest", "quarantine", "stray", "metadata")


def disk_usage(
    inv: Inventory, exports: list[Export], metadata: list[int], metadata_allocated: list[int] | None = None
) -> list[Usage]:
    """Where the bytes are: reachable from index.json, only from older exports, from nothing,
    interrupted writes in ingest/, stray entries in blobs/, and the layout's own files."""
    indexed = reachable_from_index(inv, exports)
    referenced = {d for e in exports for d in e.blobs}
    acc = {c: [0, 0, 0] for c in CATEGORIES}
    seen: set[str] = set()  # "device:inode" of files with several links, counted once

    def once(inode: str, allocated: int) -> int:
        if not inode:
            return allocated
        if inode in seen:
            return 0
        seen.add(inode)
        return allocated

    for b in inv.blobs.values():
        cat = (
            "index" if b.digest in indexed else "older-exports" if b.digest in referenced else "unreferenced"
        )
        a = acc[cat]
        a[0] += 1
        a[1] += b.size
        a[2] += once(b.inode, b.allocated)
    for entry in inv.ingest:
        a = acc["ingest"]
        a[0] += 1
        a[1] += entry.bytes
        a[2] += entry.allocated + sum(once(inode, n) for inode, n in entry.shared)
    for stray in inv.strays:
        a = acc["stray"]
        a[0] += 1
        a[1] += stray.size
        a[2] += once(stray.inode, stray.allocated)
    for q in inv.quarantine.blobs:
        a = acc["quarantine"]
        a[0] += 1
        a[1] += q.size
        a[2] += q.allocated
    acc["metadata"] = [len(metadata), sum(metadata), sum(metadata_allocated or [])]
    return [Usage(c, n, size, allocated) for c, (n, size, allocated) in acc.items()]


@dataclass(frozen=True, slots=True)
class ForeignEntry:
    """An index.json entry that is not a cache export (an image, an index, an artifact): what
    it reaches, all of which gc keeps, and what `check` would say about it."""

    position: int
    digest: str
    media_type: str  # the entry's descriptor's
    ref_name: str | None
    kind: str  # KIND_MANIFEST or KIND_INDEX
    artifact_type: str | None
    blobs: int  # distinct blobs it reaches that are on disk, itself included
    size: int  # their bytes
    missing: tuple[str, ...]  # blobs it names that are not on disk
    problems: tuple[str, ...]  # documents in it that cannot be understood, wrong sizes

    @property
    def complete(self) -> bool:
        return not (self.missing or self.problems)


def foreign_entries(inv: Inventory) -> list[ForeignEntry]:
    """Every foreign index.json entry, in index.json order, with what it reaches."""
    if inv.index is None:
        return []
    kinds = blob_kinds(inv)
    out: list[ForeignEntry] = []
    for entry in inv.index.entries:
        digest = entry.descriptor.digest
        if digest not in inv.blobs or not inv.is_foreign(digest):
            continue
        seen: set[str] = {digest}
        documents: set[str] = {digest}  # reached here as a manifest, an index, a cache config
        stack = [digest]
        missing: set[str] = set()
        problems: list[str] = []
        while stack:  # iterative: chains of nested indexes can be deep
            parent = stack.pop()
            why = inv.foreign_unknown.get(parent)
            if why is not None and parent in documents:
                problems.append(f"{parent}: {why}")
            for ref in inv.foreign_refs.get(parent, ()):
                blob = inv.blobs.get(ref.digest)
                if blob is None:
                    missing.add(ref.digest)
                elif ref.size is not None and ref.size != blob.size:
                    problems.append(
                        f"{ref.digest}: {parent} ({ref.where}) says {ref.size} "
                        f"bytes, the file has {blob.size}"
                    )
                if mt.is_document_role(ref.role):
                    documents.add(ref.digest)
                if ref.digest not in seen:
                    seen.add(ref.digest)
                    stack.append(ref.digest)
        other = inv.foreign.get(digest)
        present = [d for d in seen if d in inv.blobs]
        out.append(
            ForeignEntry(
                position=entry.position,
                digest=digest,
                media_type=entry.descriptor.media_type,
                ref_name=entry.ref_name,
                kind=kinds.get(digest, KIND_MANIFEST),
                artifact_type=other.artifact_type if other is not None else None,
                blobs=len(present),
                size=sum(inv.blobs[d].size for d in present),
                missing=tuple(sorted(missing)),
                problems=tuple(sorted(set(problems))),
            )
        )
    return out
