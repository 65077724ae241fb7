"""A sound fast path for the JSON blobs BuildKit writes: cache manifests and cache configs decoded,
validated and parsed in one typed msgspec pass.

The slow path (documents.loads_blob -> classify -> validate -> parse_*) spends ~1.2 ms per
200-layer document in Python; msgspec decodes the same bytes straight into the Structs below,
checking the schemas' constraints as it goes. `decode_blob` returns exactly the (kind, value)
the slow path returns for the document, or None when it is not sure: the caller then takes the
slow path, which gives the verdict and the messages. So a value where the slow path would
raise or parse differently is the only possible bug (tests/test_fastdecode.py compares them).

Why it is sound:
- every Struct forbids unknown keys, so every value in the document is decoded and checked
  here (msgspec skips an unknown value without checking its UTF-8 or the size of its integers,
  both of which the slow path rejects); unusual but valid keys (`urls`, `platform`, a config
  layer's `annotations`, a record's `chains`) are unknown here on purpose;
- each constraint is as strict as the schema's or stricter: the registered digest forms only
  (as fastvalid; checked in Python, see _digest), integers that are JSON integers within int64
  (never 1.0, true or 10**30), strings that are strings;
- classify's rules hold by construction: a cache config has `layers` and `records` (both
  required) and no `config` (unknown); a shape-A manifest has `config` and `layers` and its
  config's mediaType is the cache config's; a shape-B/C list names a cache config;
- a repeated key keeps its last value in msgspec as in documents.loads_blob (and Go);
- lone surrogates and invalid UTF-8 make msgspec fail, and the Python loop below only builds
  model values through the same helpers as documents (cache_config, descriptor rules).

Keep in step with `schemas/*.json` and documents.py: a change there must be mirrored here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from ocicache.format import documents as docs
from ocicache.format import mediatypes as mt
from ocicache.format.model import CacheConfig, CacheManifest, Descriptor, new_config_layer, new_descriptor

_INT64_MAX = 9223372036854775807
# descriptor.json#/$defs/digest for the two registered algorithms (fastvalid._DIGEST). Not a
# msgspec pattern: that costs ~1.3 us per digest, 0.16 s for 120k digests of which only 30k
# differ; _digest remembers the ones it has seen valid.
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_valid_digests: set[str] = set()
_VALID_MAX = 1 << 20
_Size = Annotated[int, Meta(ge=0, le=_INT64_MAX)]
# Schema indexes have no upper bound; past int64 the slow path decides (and says out of range).
_Index = Annotated[int, Meta(ge=0, le=_INT64_MAX)]
_Parent = Annotated[int, Meta(ge=-1, le=_INT64_MAX)]


class _Descriptor(Struct, forbid_unknown_fields=True, gc=False):
    """descriptor.json without urls and platform (rare, and their checks are not simple)."""

    mediaType: str
    digest: str  # checked by _digest
    size: _Size
    annotations: dict[str, str] | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    data: str | UnsetType = UNSET  # contentEncoding is an annotation: any string is valid


class _ImageManifest(Struct, forbid_unknown_fields=True, gc=False):
    """image-manifest.json: a shape-A cache manifest when config.mediaType is the cache config's."""

    schemaVersion: Literal[2]
    config: _Descriptor
    layers: list[_Descriptor]
    mediaType: Literal["application/vnd.oci.image.manifest.v1+json"] | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    subject: _Descriptor | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


class _DescriptorList(Struct, forbid_unknown_fields=True, gc=False):
    """image-index.json (shape B, mediaType optional) or docker-manifest-list.json (shape C,
    mediaType required); the Docker schema says nothing of the last three keys, so holding
    them to the OCI rules is stricter than it, never looser."""

    schemaVersion: Literal[2]
    manifests: list[_Descriptor]
    mediaType: Literal["application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json"
                       ] | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    subject: _Descriptor | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


class _ConfigLayer(Struct, forbid_unknown_fields=True, gc=False):
    """cacheconfig.json layer without annotations (only inline caches write them)."""

    blob: str  # checked by _digest
    parent: _Parent = 0  # BuildKit omits a parent of 0


class _Result(Struct, forbid_unknown_fields=True, gc=False):
    layer: _Index
    createdAt: str | UnsetType = UNSET  # format date-time is an annotation: any string


class _Link(Struct, forbid_unknown_fields=True, gc=False):
    link: _Index
    selector: str | UnsetType = UNSET


class _Record(Struct, forbid_unknown_fields=True, gc=False):
    """cacheconfig.json record without chains (only inline caches write them)."""

    digest: str
    layers: list[_Result] = []
    inputs: list[list[_Link]] = []


class _CacheConfig(Struct, forbid_unknown_fields=True, gc=False):
    layers: list[_ConfigLayer]  # required here: classify needs both keys present
    records: list[_Record]


_MANIFEST = msgspec.json.Decoder(_ImageManifest)
_LIST = msgspec.json.Decoder(_DescriptorList)
_CONFIG = msgspec.json.Decoder(_CacheConfig)
# Where to look for the keys that tell the shapes apart: Go writes schemaVersion and mediaType
# first, then config or manifests; a cache config starts with its layers. A guess only: the
# wrong decoder fails (unknown key) and the slow path decides.
_HEAD = 256


class _Unsure(Exception):
    """Raised inside the fast path for anything it does not accept: the slow path decides."""


def _digest(text: str) -> str:
    """`text` when it is a digest of a registered form; _Unsure otherwise."""
    if text not in _valid_digests:
        if _DIGEST.fullmatch(text) is None:
            raise _Unsure(text)
        if len(_valid_digests) < _VALID_MAX:
            _valid_digests.add(text)
    return text


def decode_blob(data: bytes, digest: str, file: str) -> tuple[str, object] | None:
    """(KIND_CACHE_MANIFEST, CacheManifest) or (KIND_CACHE_CONFIG, CacheConfig), exactly as the
    slow path would return them for `data`; None for anything else or anything unsure."""
    if not data.isascii():
        try:  # msgspec checks the UTF-8 of what it decodes; this also covers the rest
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        if data.find(b'"config"', 0, _HEAD) >= 0:
            return _manifest(_MANIFEST.decode(data), digest)
        if data.find(b'"manifests"', 0, _HEAD) >= 0:
            return _list(_LIST.decode(data), digest)
        if data.find(b'"layers"', 0, _HEAD) >= 0:
            return docs.KIND_CACHE_CONFIG, _config(_CONFIG.decode(data), digest)
    except (msgspec.DecodeError, _Unsure):
        return None
    return None


def _descriptor(d: _Descriptor) -> Descriptor:
    """documents.descriptor: annotations absent or empty -> {}."""
    ann = d.annotations
    return new_descriptor(d.mediaType, _digest(d.digest), d.size, ann if ann else {})


def _split(items: list[_Descriptor]) -> tuple[tuple[Descriptor, ...], tuple[Descriptor, ...]]:
    """documents._split: manifest media types are others, everything else a layer."""
    layers: list[Descriptor] = []
    others: list[Descriptor] = []
    manifest_types = mt.MANIFEST_TYPES
    for item in items:
        (others if item.mediaType in manifest_types else layers).append(_descriptor(item))
    return tuple(layers), tuple(others)


def _manifest(m: _ImageManifest, digest: str) -> tuple[str, CacheManifest] | None:
    if m.config.mediaType != mt.CACHE_CONFIG:
        return None  # a foreign image manifest: classify says KIND_MANIFEST
    media_type = m.mediaType if m.mediaType is not UNSET else mt.OCI_MANIFEST
    if m.subject is not UNSET:
        _digest(m.subject.digest)
    layers, others = _split(m.layers)
    return docs.KIND_CACHE_MANIFEST, CacheManifest(
        digest, mt.SHAPE_A, media_type, _descriptor(m.config), layers, others)


def _list(m: _DescriptorList, digest: str) -> tuple[str, CacheManifest] | None:
    configs = [d for d in m.manifests if d.mediaType == mt.CACHE_CONFIG]
    if not configs:
        return None  # a foreign index or list: classify says KIND_MANIFEST
    media_type = m.mediaType if m.mediaType is not UNSET else mt.OCI_INDEX
    if m.subject is not UNSET:
        _digest(m.subject.digest)
    shape = mt.SHAPE_C if media_type == mt.DOCKER_LIST else mt.SHAPE_B
    layers, others = _split([d for d in m.manifests if d.mediaType != mt.CACHE_CONFIG])
    # documents.parse_cache_manifest: the last cache config counts, earlier ones are others.
    extra = tuple(_descriptor(d) for d in configs[:-1])
    return docs.KIND_CACHE_MANIFEST, CacheManifest(
        digest, shape, media_type, _descriptor(configs[-1]), layers, others + extra)


def _config(c: _CacheConfig, digest: str) -> CacheConfig:
    layers = tuple([new_config_layer(_digest(x.blob), x.parent) for x in c.layers])
    results = ((r, j, ref.layer, ref.createdAt if ref.createdAt is not UNSET else None)
               for r, record in enumerate(c.records) for j, ref in enumerate(record.layers))
    return docs.cache_config(digest, layers, len(c.records), results)
