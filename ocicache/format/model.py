"""Frozen values parsed from the JSON documents of a cache directory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from ocicache.base.timefmt import parse_rfc3339_ns

# Annotation keys BuildKit writes on layer descriptors (FORMAT.md).
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_UNCOMPRESSED = "containerd.io/uncompressed"
ANN_CREATED = "buildkit/createdat"
ANN_SOURCE_PREFIX = "containerd.io/distribution.source."
# Our own mark on index.json entries that `ocicache pin` added (so unpin knows what it owns).
ANN_PINNED = "dev.ocicache.pinned"
_NO_ANNOTATIONS: Mapping[str, str] = {}  # shared: annotations are never mutated


class Descriptor(NamedTuple):
    """An OCI descriptor: media type, digest, size and annotations (a tuple: a read makes ~30k,
    and a kept read rebuilds them from marshalled tuples at C speed; never mutated)."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = _NO_ANNOTATIONS

    @property
    def created_ns(self) -> int | None:
        return parse_rfc3339_ns(self.annotations.get(ANN_CREATED))

    @property
    def diff_id(self) -> str | None:
        return self.annotations.get(ANN_UNCOMPRESSED)

    @property
    def origins(self) -> tuple[str, ...]:
        """Base-image origins, `registry/repository`, from distribution.source annotations."""
        out = []
        for key, value in sorted(self.annotations.items()):
            if key.startswith(ANN_SOURCE_PREFIX):
                out.append(f"{key[len(ANN_SOURCE_PREFIX) :]}/{value}")
        return tuple(out)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One entry of index.json, with its position (BuildKit appends each export at the end)."""

    position: int
    descriptor: Descriptor

    @property
    def ref_name(self) -> str | None:
        return self.descriptor.annotations.get(ANN_REF_NAME)

    @property
    def pinned(self) -> bool:
        return ANN_PINNED in self.descriptor.annotations


@dataclass(frozen=True, slots=True)
class Index:
    """index.json: its entries in file order, and whether it had a top-level mediaType."""

    entries: tuple[IndexEntry, ...]
    media_type: str | None
    raw: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class CacheManifest:
    """A cache manifest of any shape, normalised: the cache-config descriptor and layer descriptors."""

    digest: str
    shape: str  # mediatypes.SHAPE_A / B / C
    media_type: str
    config: Descriptor | None  # None when the manifest names no cache config
    layers: tuple[Descriptor, ...]  # in manifest order (not stack order), duplicates kept
    others: tuple[Descriptor, ...]  # descriptors that are neither layer nor cache config


class ConfigLayer(NamedTuple):
    """`layers[i]` of a cache config; `parent` is -1 for a root (a missing parent means 0).
    A tuple, as Descriptor."""

    blob: str
    parent: int


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """A BuildKit cache config (application/vnd.buildkit.cacheconfig.v0)."""

    digest: str
    layers: tuple[ConfigLayer, ...]
    record_count: int
    layer_created: Mapping[int, int]  # layer index -> newest createdAt (ns) in records
    problems: tuple[str, ...]  # parent loops, out-of-range indexes

    def chain(self, i: int) -> list[int]:
        """Layer i and its ancestors, root first; stops at a loop or a bad index."""
        chain: list[int] = []
        seen: set[int] = set()
        while 0 <= i < len(self.layers) and i not in seen:
            chain.append(i)
            seen.add(i)
            i = self.layers[i].parent
        return list(reversed(chain))


@dataclass(frozen=True, slots=True)
class OtherManifest:
    """A manifest or index that is not a cache manifest (foreign content: an image, a Docker v2
    manifest or list, an artifact, a referrer): every descriptor it holds, and where."""

    digest: str
    media_type: str
    children: tuple[Descriptor, ...]
    keys: tuple[str, ...] = ()  # per child, the key it sits in: config, layers, manifests, ...
    artifact_type: str | None = None

    @property
    def subject(self) -> Descriptor | None:
        """The manifest this one is a referrer of (OCI `subject`), if any."""
        for i, child in enumerate(self.children):
            if self.key(i) == "subject":
                return child
        return None

    def key(self, i: int) -> str:
        """The key child i sits in: config, layers, manifests, blobs or subject."""
        return self.keys[i] if i < len(self.keys) else "manifests"

    def where(self, i: int) -> str:
        """Where child i sits in the document: "layers[2]", "config", "subject"."""
        key = self.key(i)
        if key in ("config", "subject"):
            return key
        return f"{key}[{sum(1 for k in self.keys[:i] if k == key)}]"


_new_tuple = tuple.__new__


def new_descriptor(media_type: str, digest: str, size: int, annotations: Mapping[str, str]) -> Descriptor:
    """Descriptor(...) without NamedTuple's per-call argument handling (a read makes ~30k)."""
    return _new_tuple(Descriptor, (media_type, digest, size, annotations))


def new_config_layer(blob: str, parent: int) -> ConfigLayer:
    """ConfigLayer(...) without NamedTuple's per-call argument handling (a read makes ~60k)."""
    return _new_tuple(ConfigLayer, (blob, parent))
