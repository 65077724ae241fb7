"""What one read of a cache store found: the values the rest of ocicache works on.

ocicache.ops.read builds an Inventory; everything in ocicache.core reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ocicache.base.errors import (
    OcicacheError,
)
from ocicache.format import documents as docs
from ocicache.format.model import CacheConfig, CacheManifest, Index, IndexEntry, OtherManifest
from ocicache.format.names import INDEX_JSON, QUARANTINE
from ocicache.store.base import BlobFile, IngestEntry, QuarantineScan, Stray

HELD_NOTE = f"held in gc's quarantine, {QUARANTINE}/: the next `ocicache gc`, `pin` or `repair` puts it back"


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong or odd in the directory, said about one file (and where in it)."""

    severity: str  # "error" | "warning" | "note"
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.message) if p)


@dataclass(frozen=True, slots=True)
class ForeignRef:
    """One reference the walk of foreign content followed: which document names which blob,
    where in it, and as what (`role`, mediatypes.ROLE_*)."""

    parent: str  # digest of the naming document; "index.json" for an entry
    where: str  # "manifests[2]", "config", "layers[0]", "subject", "referrer" (parent = subject)
    digest: str
    size: int | None  # the descriptor's size; None when the reference carries none
    media_type: str | None
    role: str


@dataclass
class Inventory:
    """Everything ocicache knows about a directory after one read."""

    root: Path | str  # a directory; a registry target (registry://HOST/REPO)
    index: Index | None
    index_error: OcicacheError | None
    oci_layout: object | None
    blobs: dict[str, BlobFile]
    strays: tuple[Stray, ...]
    ingest: tuple[IngestEntry, ...]
    manifests: dict[str, CacheManifest] = field(default_factory=dict)
    configs: dict[str, CacheConfig] = field(default_factory=dict)
    foreign: dict[str, OtherManifest] = field(default_factory=dict)
    # Everything reachable from index.json's foreign entries (and referrers of what is).
    foreign_closure: set[str] = field(default_factory=set)
    foreign_refs: dict[str, list[ForeignRef]] = field(default_factory=dict)  # by parent
    foreign_roles: dict[str, str] = field(default_factory=dict)  # digest -> ROLE_* reached as
    foreign_unknown: dict[str, str] = field(default_factory=dict)  # document -> why unreadable
    referrers: dict[str, list[str]] = field(default_factory=dict)  # subject -> foreign documents
    kinds: dict[str, str] = field(default_factory=dict)  # digest -> documents.KIND_* for JSON
    bad_docs: dict[str, OcicacheError] = field(default_factory=dict)  # JSON that failed to parse
    problems: list[Problem] = field(default_factory=list)
    index_raw: bytes | None = None  # index.json's bytes as read (None: absent or unreadable)
    quarantine: QuarantineScan = field(default_factory=lambda: QuarantineScan((), ()))
    # "local" (a directory) or "registry" (store/registry: the index is the tags, presented in
    # the order they were pushed when known); `untimed`: blobs whose mtime_ns is not a time.
    kind: str = "local"
    untimed: frozenset[str] = frozenset()
    superseded: dict[str, int] = field(
        default_factory=dict
    )  # a registry: digest -> when its tag moved off it

    def held(self, digest: str) -> bool:
        """True when gc moved this (missing) blob into its quarantine: it can be put back."""
        return digest not in self.blobs and any(q.digest == digest for q in self.quarantine.blobs)

    def missing_note(self, digest: str) -> str:
        """' (held in gc's quarantine: ...)' for a missing blob gc can put back, else ''."""
        return f" ({HELD_NOTE})" if self.held(digest) else ""

    def require_index(self) -> Index:
        """The parsed index.json, or raise the error that made it unreadable."""
        if self.index_error is not None:
            raise self.index_error
        assert self.index is not None
        return self.index

    def names_nothing_present(self) -> bool:
        """index.json parsed, but no entry names a blob on disk (no entries at all, or only
        entries whose manifest is gone): it protects nothing, and a gc (or BuildKit's
        reset=true) on its word would delete every blob."""
        return self.index is not None and not any(
            e.descriptor.digest in self.blobs for e in self.index.entries
        )

    def warn(self, file: str, where: str, message: str, severity: str = "warning") -> None:
        self.problems.append(Problem(severity, file, where, message))

    def reached_from(self, digest: str) -> str:
        """How the walk of foreign content first reached `digest` in the role it has, for
        messages: "index.json manifests[3] (tag x)", "layers[0] of sha256:...", "" if never."""
        names = {e.position: e.ref_name for e in self.index.entries} if self.index else {}
        role = self.foreign_roles.get(digest)
        for parent, refs in self.foreign_refs.items():
            for ref in refs:
                if ref.digest != digest or ref.role != role:
                    continue
                if parent != INDEX_JSON:
                    return f"{ref.where} of {parent}"
                tag = names.get(int(ref.where[len("manifests[") : -1]))
                return f"{INDEX_JSON} {ref.where}" + (f" (tag {tag})" if tag else "")
        return ""

    def foreign_entries(self) -> list[IndexEntry]:
        """The index.json entries that name foreign content on disk (images, artifacts)."""
        if self.index is None:
            return []
        return [
            e
            for e in self.index.entries
            if e.descriptor.digest in self.blobs and self.is_foreign(e.descriptor.digest)
        ]

    def is_foreign(self, digest: str) -> bool:
        """True for a manifest that is not a cache manifest (parsed, or that failed its schema)."""
        return digest in self.foreign or self.kinds.get(digest) == docs.KIND_MANIFEST
