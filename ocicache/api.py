"""The library façade: one function per command. Returns values, raises OcicacheError, never prints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ocicache import reports
from ocicache.cache import BlobCache
from ocicache.exports import Export, build_exports
from ocicache.inventory import Inventory, read_inventory
from ocicache.layout import INDEX_JSON, LOCK_FILE, OCI_LAYOUT, Layout
from ocicache.refs import resolve


@dataclass(frozen=True)
class Snapshot:
    """One read of a cache directory: the inventory and its exports, newest first."""

    root: Path
    inventory: Inventory
    exports: list[Export]
    metadata_sizes: tuple[int, ...]  # index.json, oci-layout, index.json.lock (those present)

    @property
    def warnings(self) -> list[str]:
        return [str(p) for p in self.inventory.problems]


def read(directory: str | os.PathLike[str], use_cache: bool = True) -> Snapshot:
    """Read DIR once (no writes to DIR, no locks): every export and blob it holds.

    What is learned about blob digests is kept in $XDG_CACHE_HOME/ocicache (cache.py), never
    in DIR, so the next read opens only new blobs; OCICACHE_NO_CACHE=1 or `use_cache=False`
    (for a command that must see every document as it is on disk now, like `check`) turns
    that off.
    """
    with Layout(directory) as layout:
        cache = BlobCache.default(layout.root) if use_cache else None
        inv = read_inventory(layout, cache)
        sizes = []
        for name in (INDEX_JSON, OCI_LAYOUT, LOCK_FILE):
            st = layout.stat_top(name)
            if st is not None:
                sizes.append(st.st_size)
    return Snapshot(layout.root, inv, build_exports(inv), tuple(sizes))


def history(directory: str | os.PathLike[str]) -> Snapshot:
    """Every export, newest first. Raises CorruptError when index.json is torn or invalid."""
    snap = read(directory)
    snap.inventory.require_index()
    return snap


@dataclass(frozen=True)
class ShowResult:
    snapshot: Snapshot
    export: Export
    position: int  # N in ~N
    layers: list[reports.StackLayer]


def show(directory: str | os.PathLike[str], ref: str) -> ShowResult:
    """One export, REF as a tag, digest, digest prefix or ~N; its layers in stack order."""
    snap = history(directory)
    export = resolve(snap.exports, ref)
    return ShowResult(snap, export, snap.exports.index(export),
                      reports.stack(snap.inventory, export))


def blobs(directory: str | os.PathLike[str]) -> tuple[Snapshot, list[reports.BlobRow]]:
    """Every blob on disk with its kind and how many exports reference it."""
    snap = read(directory)
    return snap, reports.blob_rows(snap.inventory, snap.exports)


def du(directory: str | os.PathLike[str]) -> tuple[Snapshot, list[reports.Usage]]:
    """Where the bytes are, by category."""
    snap = read(directory)
    return snap, reports.disk_usage(snap.inventory, snap.exports, list(snap.metadata_sizes))
