"""Pure views over an inventory and its exports: the stack of one export, the blob list, disk usage."""

from __future__ import annotations

from dataclasses import dataclass

from ocicache.exports import Export
from ocicache.inventory import Inventory
from ocicache.model import Descriptor

KIND_MANIFEST = "manifest"
KIND_CONFIG = "cache-config"
KIND_LAYER = "layer"
KIND_UNKNOWN = "unknown"


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
            out.append(_stack_layer(inv, i, layer.parent, depth, layer.blob, descriptors,
                                    config.layer_created.get(i)))
            todo.extend((child, depth + 1) for child in reversed(ordered(children.get(i, []))))
    placed = {s.digest for s in out}
    for digest in sorted(descriptors):
        if digest not in placed:
            out.append(_stack_layer(inv, -1, -1, 0, digest, descriptors, None))
    return out


def _stack_layer(inv: Inventory, i: int, parent: int, depth: int, digest: str,
                 descriptors: dict[str, Descriptor], created: int | None) -> StackLayer:
    d = descriptors.get(digest)
    return StackLayer(
        index=i, parent=parent, depth=depth, digest=digest,
        media_type=d.media_type if d else None,
        size=d.size if d else (inv.blobs[digest].size if digest in inv.blobs else None),
        created_ns=(d.created_ns if d else None) or created,
        diff_id=d.diff_id if d else None,
        origins=d.origins if d else (),
        present=digest in inv.blobs,
    )


@dataclass(frozen=True, slots=True)
class BlobRow:
    """One blob on disk: what it is, and who needs it."""

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
    """manifest / cache-config / layer for every blob some parsed document names as such
    (a blob no document names is `unknown`)."""
    kinds: dict[str, str] = {}
    for m in inv.manifests.values():
        for d in (*m.layers, *m.others):
            kinds.setdefault(d.digest, KIND_LAYER)
    for other in inv.foreign.values():
        for child in other.children:
            kinds.setdefault(child.digest, KIND_LAYER)
    for m in inv.manifests.values():
        if m.config is not None:
            kinds[m.config.digest] = KIND_CONFIG
    for digest in inv.configs:
        kinds[digest] = KIND_CONFIG
    for digest in (*inv.manifests, *inv.foreign):
        kinds[digest] = KIND_MANIFEST
    return kinds


def blob_rows(inv: Inventory, exports: list[Export]) -> list[BlobRow]:
    """Every blob on disk, sorted by digest."""
    counts: dict[str, int] = {}
    for e in exports:
        for d in e.blobs:
            counts[d] = counts.get(d, 0) + 1
    kinds = blob_kinds(inv)
    indexed = reachable_from_index(inv, exports)
    return [
        BlobRow(b.digest, b.size, kinds.get(b.digest, KIND_UNKNOWN), counts.get(b.digest, 0),
                b.digest in indexed, b.mtime_ns, b.mode)
        for b in inv.blobs.values()
    ]


@dataclass(frozen=True, slots=True)
class Usage:
    """Bytes and file counts of one category of `du`: `bytes` is what the files hold (their
    apparent size), `allocated` what they take on disk (st_blocks x 512: a sparse file its real
    blocks, a file with several hard links once, in the first category that meets it)."""

    category: str
    files: int
    bytes: int
    allocated: int = 0


CATEGORIES = ("index", "older-exports", "unreferenced", "ingest", "stray", "metadata")


def disk_usage(inv: Inventory, exports: list[Export], metadata: list[int],
               metadata_allocated: list[int] | None = None) -> list[Usage]:
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
        cat = ("index" if b.digest in indexed else
               "older-exports" if b.digest in referenced else "unreferenced")
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
    acc["metadata"] = [len(metadata), sum(metadata), sum(metadata_allocated or [])]
    return [Usage(c, n, size, allocated) for c, (n, size, allocated) in acc.items()]
