"""The values a read of a store yields, shared by the façade (api.py) and the renderers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocicache.core import reports
from ocicache.core.exports import Export
from ocicache.core.inventory import Inventory

if TYPE_CHECKING:  # (the read commands never load cachefrom: ~11 ms)
    from ocicache.core.cachefrom import Readiness


@dataclass(frozen=True)
class Snapshot:
    """One read of a cache directory: the inventory and its exports, newest first."""

    root: Path | str  # a directory; for a registry, its target
    inventory: Inventory
    exports: list[Export]
    metadata_sizes: tuple[int, ...]  # index.json, oci-layout, index.json.lock (those present)
    metadata_allocated: tuple[int, ...] = ()  # what the same take on disk (st_blocks x 512)

    @property
    def target(self) -> str:
        """What the JSON documents' `target` says: the directory, or registry://HOST/REPO."""
        return str(self.root)

    @property
    def directory(self) -> str | None:
        """The JSON documents' `directory`: None for a registry."""
        return str(self.root) if self.inventory.kind == "local" else None

    @property
    def warnings(self) -> list[str]:
        return [str(p) for p in self.inventory.problems]


@dataclass(frozen=True)
class ShowResult:
    snapshot: Snapshot
    export: Export
    position: int  # N in ~N
    layers: list[reports.StackLayer]


@dataclass(frozen=True)
class RefResult:
    """The import spec of one export, or why BuildKit would refuse it."""

    export: Export
    position: int  # N in ~N
    src: str
    spec: str | None  # None when refused
    readiness: Readiness

    @property
    def warnings(self) -> list[str]:
        return list(self.readiness.warnings)
