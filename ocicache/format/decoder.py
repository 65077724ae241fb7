"""The decoder: msgspec Structs for every input schema (`schemas/*.json`), and the one path from a
JSON document to its model value.

Each Struct below is one schema or `$defs` entry, with its constraints: required keys, types,
constant media types and schemaVersion, int64 sizes, index minimums, and the digest pattern
(checked in __post_init__, see _digest). A document is decoded one of two ways, into the same
Structs and through the same builders (_shape_a, _shape_bc, _other, _config, cache_config):

- from bytes (`decode_blob`, every JSON blob the reader opens): msgspec reads the bytes straight
  into twins of the Structs that refuse unknown keys (the `...X` classes), so every value of
  the document is decoded and checked here, as strictly as documents.loads_blob would read it
  (msgspec skips an unknown key's value without checking its UTF-8, the size of its integers or
  its depth). Whatever it does not take (an unknown key, 1.0 for an integer, a lone surrogate
  escape, an invalid document) returns None: the caller then decodes the document as Python
  values (documents.loads_blob) and converts those;
- from decoded Python values (`convert_*`, `check`; index.json, oci-layout, the blobs the
  bytes could not take): msgspec.convert into the Structs themselves, which allow unknown keys
  as the schemas do. A number of integral value where an integer is due (1.0: an integer to
  JSON Schema, not to msgspec or Go) is read as that integer (_integers), and a key msgspec
  cannot encode (a lone surrogate escape, which Python's json reads) is renamed for the
  conversion (_rename_keys).

The Structs accept exactly what the schemas accept (tests/test_decoder_schemas.py holds them
to jsonschema's verdicts; test_decoder.py the two ways to each other). A document the Structs
refuse raises Rejected; documents.py then asks jsonschema (schema.py) for the message, with its
path, that users see: jsonschema explains, it no longer decides.

Keep in step with `schemas/*.json`: a change there must be mirrored here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType, field

from ocicache.base.timefmt import parse_rfc3339_ns
from ocicache.format import mediatypes as mt
from ocicache.format.model import (
    CacheConfig,
    CacheManifest,
    ConfigLayer,
    Descriptor,
    Index,
    IndexEntry,
    OtherManifest,
    new_config_layer,
    new_descriptor,
)

_INT64_MAX = 9223372036854775807
_Size = Annotated[int, Meta(ge=0, le=_INT64_MAX)]  # descriptor.json#/$defs/size
_Index = Annotated[int, Meta(ge=0)]  # cacheconfig.json#/$defs/index: no upper bound
_Parent = Annotated[int, Meta(ge=-1)]

# descriptor.json#/$defs/digest: the grammar, and the registered algorithms' exact forms. Not a
# msgspec pattern: that costs ~1.3 us per digest (0.16 s for 120k digests of which only 30k
# differ); _digest remembers the valid ones, and hands out one str object per digest.
_REGISTERED = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_valid_digests: dict[str, str] = {}
_VALID_MAX = 1 << 20


def _digest(text: str) -> str:
    """`text` (the first equal str seen) when it matches descriptor.json's digest; ValueError
    (a msgspec ValidationError where the Struct is) otherwise."""
    known = _valid_digests.get(text)
    if known is not None:
        return known
    if _REGISTERED.fullmatch(text) is None and (
        text.startswith(("sha256:", "sha512:")) or _GRAMMAR.fullmatch(text) is None
    ):
        raise ValueError(f"{text!r} is not a valid digest")
    if len(_valid_digests) < _VALID_MAX:
        _valid_digests[text] = text
    return text


# -- the schemas --------------------------------------------------------------------------------
class _Platform(Struct, gc=False):
    """descriptor.json#/$defs/platform."""

    architecture: str
    os: str
    os_version: str | UnsetType = field(name="os.version", default=UNSET)
    os_features: Sequence[str] | UnsetType = field(name="os.features", default=UNSET)
    variant: str | UnsetType = UNSET
    features: Sequence[str] | UnsetType = UNSET


class _Descriptor(Struct, gc=False):
    """descriptor.json (format uri and contentEncoding are annotations: any string)."""

    mediaType: str
    digest: str
    size: _Size
    urls: Sequence[str] | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET
    platform: _Platform | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    data: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        # (_digest inlined for the common case: a read checks ~120k descriptors)
        known = _valid_digests.get(self.digest)
        self.digest = known if known is not None else _digest(self.digest)


class _ImageManifest(Struct, gc=False):
    """image-manifest.json (shape A)."""

    schemaVersion: Literal[2]
    config: _Descriptor
    layers: Sequence[_Descriptor]
    mediaType: Literal["application/vnd.oci.image.manifest.v1+json"] | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    subject: _Descriptor | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


class _ImageIndex(Struct, gc=False):
    """image-index.json (index.json, shape B)."""

    schemaVersion: Literal[2]
    manifests: Sequence[_Descriptor]
    mediaType: Literal["application/vnd.oci.image.index.v1+json"] | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    subject: _Descriptor | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


class _DockerList(Struct, gc=False):
    """docker-manifest-list.json (shape C): any other key is unknown to it."""

    schemaVersion: Literal[2]
    mediaType: Literal["application/vnd.docker.distribution.manifest.list.v2+json"]
    manifests: Sequence[_Descriptor]


class _ForeignManifest(Struct, gc=False):
    """foreign-manifest.json without its allOf (see _foreign_rules)."""

    schemaVersion: int | UnsetType = UNSET
    mediaType: str | UnsetType = UNSET
    artifactType: str | UnsetType = UNSET
    config: _Descriptor | UnsetType = UNSET
    layers: Sequence[_Descriptor] | UnsetType = UNSET
    manifests: Sequence[_Descriptor] | UnsetType = UNSET
    blobs: Sequence[_Descriptor] | UnsetType = UNSET
    subject: _Descriptor | UnsetType = UNSET
    annotations: dict[str, str] | UnsetType = UNSET


class _LayerAnnotations(Struct, gc=False):
    """cacheconfig.json: a layer's annotations (inline caches; format date-time is an
    annotation: any string)."""

    mediaType: str | UnsetType = UNSET
    diffID: str | UnsetType = UNSET
    size: _Size | UnsetType = UNSET
    createdAt: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.diffID is not UNSET:
            self.diffID = _digest(self.diffID)


class _ConfigLayer(Struct, gc=False):
    """cacheconfig.json#/$defs/layer: BuildKit omits a parent of 0."""

    blob: str
    parent: _Parent = 0
    annotations: _LayerAnnotations | UnsetType = UNSET

    def __post_init__(self) -> None:
        known = _valid_digests.get(self.blob)
        self.blob = known if known is not None else _digest(self.blob)


class _Result(Struct, gc=False):
    layer: _Index
    createdAt: str | UnsetType = UNSET


class _Chain(Struct, gc=False):
    layers: Sequence[_Index] | UnsetType = UNSET
    createdAt: str | UnsetType = UNSET


class _Link(Struct, gc=False):
    link: _Index
    selector: str | UnsetType = UNSET


class _Record(Struct, gc=False):
    """cacheconfig.json#/$defs/record (the digest is an opaque cache key)."""

    digest: str
    layers: Sequence[_Result] | UnsetType = UNSET
    chains: Sequence[_Chain] | UnsetType = UNSET
    inputs: Sequence[Sequence[_Link]] | UnsetType = UNSET


class _CacheConfigDoc(Struct, gc=False):
    """cacheconfig.json: BuildKit omits an empty layers or records."""

    layers: Sequence[_ConfigLayer] | UnsetType = UNSET
    records: Sequence[_Record] | UnsetType = UNSET


class _OciLayout(Struct, gc=False):
    """oci-layout.json."""

    imageLayoutVersion: str


# -- twins for bytes: the same, refusing unknown keys ------------------------------------------
class _PlatformX(_Platform, forbid_unknown_fields=True, gc=False):
    pass


class _DescriptorX(_Descriptor, forbid_unknown_fields=True, gc=False):
    platform: _PlatformX | UnsetType = UNSET


class _ManifestX(_ForeignManifest, forbid_unknown_fields=True, gc=False):
    """Any manifest or index: the keys of foreign-manifest.json, which hold those of the
    image-manifest, image-index and docker-manifest-list schemas (typed as strictly or more)."""

    config: _DescriptorX | UnsetType = UNSET
    layers: Sequence[_DescriptorX] | UnsetType = UNSET
    manifests: Sequence[_DescriptorX] | UnsetType = UNSET
    blobs: Sequence[_DescriptorX] | UnsetType = UNSET
    subject: _DescriptorX | UnsetType = UNSET


class _LayerAnnotationsX(_LayerAnnotations, forbid_unknown_fields=True, gc=False):
    pass


class _ConfigLayerX(_ConfigLayer, forbid_unknown_fields=True, gc=False):
    annotations: _LayerAnnotationsX | UnsetType = UNSET


class _ResultX(_Result, forbid_unknown_fields=True, gc=False):
    pass


class _ChainX(_Chain, forbid_unknown_fields=True, gc=False):
    pass


class _LinkX(_Link, forbid_unknown_fields=True, gc=False):
    pass


class _RecordX(_Record, forbid_unknown_fields=True, gc=False):
    layers: Sequence[_ResultX] | UnsetType = UNSET
    chains: Sequence[_ChainX] | UnsetType = UNSET
    inputs: Sequence[Sequence[_LinkX]] | UnsetType = UNSET


class _CacheConfigX(_CacheConfigDoc, forbid_unknown_fields=True, gc=False):
    layers: Sequence[_ConfigLayerX] | UnsetType = UNSET
    records: Sequence[_RecordX] | UnsetType = UNSET


_MANIFEST_BYTES = msgspec.json.Decoder(_ManifestX)
_CONFIG_BYTES = msgspec.json.Decoder(_CacheConfigX)
# Which of the two to try: Go writes a cache config's layers (with their "blob") or records
# first, a manifest's schemaVersion and mediaType. A guess only: the other Struct refuses the
# first key it does not know, and the caller converts the document instead.
_HEAD = 256

# The schemas a decoded document can be converted against (documents.validate, repair).
_SCHEMAS: dict[str, type[Struct]] = {
    "descriptor": _Descriptor,
    "image-manifest": _ImageManifest,
    "image-index": _ImageIndex,
    "docker-manifest-list": _DockerList,
    "foreign-manifest": _ForeignManifest,
    "cacheconfig": _CacheConfigDoc,
    "oci-layout": _OciLayout,
}
FOREIGN_SCHEMA = "foreign-manifest"


class Rejected(ValueError):
    """A document the Structs refuse: where (`layers[3].digest`, "" for the root) and msgspec's
    words; documents.explain turns it into jsonschema's message."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _rejected(e: msgspec.ValidationError) -> Rejected:
    text = str(e)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return Rejected("", text)
    return Rejected(where.rstrip("`").removeprefix("$").removeprefix("."), message)


# -- from bytes ---------------------------------------------------------------------------------
def decode_blob(data: bytes, digest: str, file: str = "") -> tuple[str, object | None] | None:
    """(kind, value) of a JSON blob's bytes: a CacheManifest, CacheConfig or OtherManifest, or
    (KIND_UNKNOWN_JSON, None); None when the bytes need the slower way (documents.read_document:
    decoded as Python values, converted, explained). `file` is not used (the caller's name for
    the blob, kept for symmetry with documents.read_document)."""
    if not data.isascii():
        try:  # msgspec checks the UTF-8 of what it decodes; this also covers the rest
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        if data.find(b'"blob"', 0, _HEAD) >= 0 or data.find(b'"records"', 0, _HEAD) >= 0:
            c = _CONFIG_BYTES.decode(data)
            if c.layers is UNSET or c.records is UNSET:
                return mt.KIND_UNKNOWN_JSON, None  # documents.classify: both keys, or neither
            return mt.KIND_CACHE_CONFIG, _config(digest, c)
        return _manifest(_MANIFEST_BYTES.decode(data), digest)
    except (msgspec.DecodeError, Rejected, RecursionError):  # (ValidationError is a DecodeError)
        return None


def _kind(m: _ForeignManifest) -> str:
    """documents.classify, for a document that decoded as a _ManifestX (no `records`)."""
    if m.config is not UNSET and m.layers is not UNSET:
        if m.config.mediaType == mt.CACHE_CONFIG and m.mediaType in (UNSET, mt.OCI_MANIFEST):
            return mt.KIND_CACHE_MANIFEST
        return mt.KIND_MANIFEST
    if m.manifests is not UNSET:
        if m.mediaType in (UNSET, mt.OCI_INDEX, mt.DOCKER_LIST) and any(
            d.mediaType == mt.CACHE_CONFIG for d in m.manifests
        ):
            return mt.KIND_CACHE_MANIFEST
        return mt.KIND_MANIFEST
    if m.mediaType is not UNSET and m.mediaType in mt.DOCUMENT_TYPES:
        return mt.KIND_MANIFEST
    return mt.KIND_UNKNOWN_JSON


def _manifest(m: _ManifestX, digest: str) -> tuple[str, object | None]:
    """What documents.read_document makes of a document that decoded as a _ManifestX; Rejected
    where the schema of its kind refuses it (or might: the caller then converts it)."""
    kind = _kind(m)
    if kind == mt.KIND_MANIFEST:
        _foreign_rules(m)
        return kind, _other(digest, m)
    if kind != mt.KIND_CACHE_MANIFEST:
        return kind, None
    if m.schemaVersion != 2:
        raise Rejected("schemaVersion", "expected 2")
    if m.config is not UNSET:  # image-manifest.json (documents.parse_cache_manifest)
        if m.layers is UNSET:
            raise Rejected("", "layers is required")
        return kind, _shape_a(digest, m.mediaType or mt.OCI_MANIFEST, m.config, m.layers)
    assert m.manifests is not UNSET  # _kind
    if m.mediaType == mt.DOCKER_LIST:
        return kind, _shape_bc(digest, mt.SHAPE_C, mt.DOCKER_LIST, m.manifests)
    return kind, _shape_bc(digest, mt.SHAPE_B, m.mediaType or mt.OCI_INDEX, m.manifests)


# -- from decoded Python values -----------------------------------------------------------------
_T = TypeVar("_T", bound=Struct)


def _convert(doc: object, kind: type[_T]) -> _T:
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as e:
        whole = _integers(doc)
        if whole is doc:
            raise _rejected(e) from None
        doc = whole  # maybe an integer written 1.0: once more with integers
    except UnicodeEncodeError:
        doc = _integers(doc)
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as e:
        raise _rejected(e) from None
    except UnicodeEncodeError:
        pass
    # A lone surrogate (the escape "\ud800", which loads_blob reads as JSON does) where msgspec
    # encodes it: in a key, which the schemas allow (an unknown key, an annotation's name), or
    # in a value where no string is due (invalid). Keys are renamed for the conversion and
    # annotations get theirs back.
    names: dict[str, str] = {}
    safe = _rename_keys(doc, names)
    try:
        value = msgspec.convert(safe, kind)
    except msgspec.ValidationError as e:
        raise _rejected(e) from None
    except UnicodeEncodeError:
        raise Rejected("", "a lone surrogate where no string is due") from None
    _restore_keys(value, names)
    return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _rename_keys(doc: object, names: dict[str, str]) -> object:
    """A copy of `doc` whose keys that are not UTF-8 are placeholders (in `names`: placeholder
    -> key) that no schema knows and no key of `doc` is."""
    taken: set[str] = set()
    stack = [doc]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            taken.update(node)
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    root: list[Any] = [doc]
    todo: list[tuple[Any, Any]] = [(root, 0)]
    while todo:
        parent, key = todo.pop()
        node = parent[key]
        if type(node) is dict:
            renamed: dict[str, object] = {}
            for k, v in node.items():
                if not _encodable(k):
                    placeholder = f"\x00{len(names)}"
                    while placeholder in taken:
                        placeholder += "\x00"
                    taken.add(placeholder)
                    names[placeholder] = k
                    k = placeholder
                renamed[k] = v
            parent[key] = renamed
            todo.extend((renamed, k) for k in renamed)
        elif type(node) is list:
            parent[key] = node = list(node)
            todo.extend((node, i) for i in range(len(node)))
    return root[0]


def _restore_keys(value: Struct, names: dict[str, str]) -> None:
    """The keys _rename_keys renamed, back in every string map (annotations) of `value`."""
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, Struct):
            for name in node.__struct_fields__:
                item = getattr(node, name)
                if type(item) is dict and not names.keys().isdisjoint(item):
                    setattr(node, name, {names.get(k, k): v for k, v in item.items()})
                elif isinstance(item, (Struct, list)):
                    stack.append(item)
        elif type(node) is list:
            stack.extend(node)


def _integers(doc: object) -> object:
    """`doc`, with every float of integral value an int (in a copy): JSON Schema reads 1.0 as
    the integer 1, msgspec (like Go) would refuse it where an integer is due."""
    stack = [doc]
    while stack:  # most documents have no float at all: look before copying
        node = stack.pop()
        if type(node) is float:
            if node.is_integer():
                break
        elif type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    else:
        return doc
    root: list[Any] = [doc]
    todo: list[tuple[Any, Any]] = [(root, 0)]  # (container, key) of each value to look at
    while todo:
        parent, key = todo.pop()
        node = parent[key]
        if type(node) is float and node.is_integer():
            parent[key] = int(node)
        elif type(node) is dict:
            parent[key] = node = dict(node)
            todo.extend((node, k) for k in node)
        elif type(node) is list:
            parent[key] = node = list(node)
            todo.extend((node, i) for i in range(len(node)))
    return root[0]


def check(doc: object, schema: str) -> None:
    """Rejected unless `doc` (decoded JSON) is valid against input schema `schema`."""
    value = _convert(doc, _SCHEMAS[schema])
    if isinstance(value, _ForeignManifest):
        _foreign_rules(value)


def accepts(doc: object, schema: str) -> bool:
    """True when `doc` (decoded JSON) is valid against input schema `schema`."""
    try:
        check(doc, schema)
    except Rejected:
        return False
    return True


def convert_index(doc: object) -> Index:
    """index.json (image-index.json); `raw` is `doc` itself. Rejected when invalid."""
    m = _convert(doc, _ImageIndex)
    assert isinstance(doc, dict)
    entries = tuple(IndexEntry(i, _model(d)) for i, d in enumerate(m.manifests))
    return Index(entries, m.mediaType if m.mediaType is not UNSET else None, doc)


def convert_cache_manifest(doc: object, schema: str, digest: str) -> CacheManifest:
    """A cache manifest against `schema`: image-manifest (shape A), image-index (B) or
    docker-manifest-list (C). Rejected when invalid."""
    if schema == "image-manifest":
        a = _convert(doc, _ImageManifest)
        return _shape_a(digest, a.mediaType or mt.OCI_MANIFEST, a.config, a.layers)
    if schema == "docker-manifest-list":
        c = _convert(doc, _DockerList)
        return _shape_bc(digest, mt.SHAPE_C, c.mediaType, c.manifests)
    b = _convert(doc, _ImageIndex)
    return _shape_bc(digest, mt.SHAPE_B, b.mediaType or mt.OCI_INDEX, b.manifests)


def convert_other_manifest(doc: object, digest: str) -> OtherManifest:
    """A foreign manifest, index or artifact manifest (foreign-manifest.json). Rejected when
    invalid."""
    m = _convert(doc, _ForeignManifest)
    _foreign_rules(m)
    return _other(digest, m)


def convert_cache_config(doc: object, digest: str) -> CacheConfig:
    """A cache config (cacheconfig.json). Rejected when invalid."""
    return _config(digest, _convert(doc, _CacheConfigDoc))


# -- one way to model values --------------------------------------------------------------------
_IMAGE_TYPES = (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST)


def _foreign_rules(m: _ForeignManifest) -> None:
    """foreign-manifest.json's allOf: the keys the four image media types (or none) require."""
    media_type = m.mediaType
    if media_type in _IMAGE_TYPES:
        complete = m.config is not UNSET and m.layers is not UNSET
    elif media_type in mt.INDEX_TYPES:
        complete = m.manifests is not UNSET
    elif media_type is UNSET:
        complete = (m.config is not UNSET and m.layers is not UNSET) or m.manifests is not UNSET
    else:
        return
    if not complete or m.schemaVersion != 2:
        raise Rejected("", "the keys its media type requires")


def _model(d: _Descriptor) -> Descriptor:
    ann = d.annotations
    return new_descriptor(d.mediaType, d.digest, d.size, ann if ann else {})


def _split(items: Iterable[_Descriptor]) -> tuple[tuple[Descriptor, ...], tuple[Descriptor, ...]]:
    """Manifest media types are others, everything else a layer."""
    layers: list[Descriptor] = []
    others: list[Descriptor] = []
    manifest_types = mt.MANIFEST_TYPES
    for item in items:
        (others if item.mediaType in manifest_types else layers).append(_model(item))
    return tuple(layers), tuple(others)


def _shape_a(
    digest: str, media_type: str, config: _Descriptor, layers: Sequence[_Descriptor]
) -> CacheManifest:
    found, others = _split(layers)
    return CacheManifest(digest, mt.SHAPE_A, media_type, _model(config), found, others)


def _shape_bc(digest: str, shape: str, media_type: str, manifests: Sequence[_Descriptor]) -> CacheManifest:
    """BuildKit writes exactly one cache config (last): the last counts, earlier ones are
    others (`check` reports them)."""
    configs = [_model(d) for d in manifests if d.mediaType == mt.CACHE_CONFIG]
    layers, others = _split(d for d in manifests if d.mediaType != mt.CACHE_CONFIG)
    return CacheManifest(
        digest, shape, media_type, configs[-1] if configs else None, layers, others + tuple(configs[:-1])
    )


def _other(digest: str, m: _ForeignManifest) -> OtherManifest:
    """Every descriptor under config, layers, manifests, blobs and subject, in that order."""
    children: list[Descriptor] = []
    keys: list[str] = []
    for key, value in (
        ("config", m.config),
        ("layers", m.layers),
        ("manifests", m.manifests),
        ("blobs", m.blobs),
        ("subject", m.subject),
    ):
        if value is UNSET:
            continue
        items = value if isinstance(value, Sequence) else [value]
        children.extend(_model(x) for x in items)
        keys.extend([key] * len(items))
    media_type = m.mediaType or (mt.OCI_MANIFEST if m.config is not UNSET else mt.OCI_INDEX)
    artifact = m.artifactType if m.artifactType is not UNSET else None
    return OtherManifest(digest, media_type, tuple(children), tuple(keys), artifact)


def _config(digest: str, c: _CacheConfigDoc) -> CacheConfig:
    """Layer parent links (missing parent = 0, -1 = root) and record times."""
    layers = tuple([new_config_layer(x.blob, x.parent) for x in c.layers or ()])
    records = c.records or []
    results = (
        (r, j, ref.layer, ref.createdAt if ref.createdAt is not UNSET else None)
        for r, record in enumerate(records)
        for j, ref in enumerate(record.layers or ())
    )
    return cache_config(digest, layers, len(records), results)


def cache_config(
    digest: str,
    layers: tuple[ConfigLayer, ...],
    record_count: int,
    results: Iterable[tuple[int, int, int, object]],
) -> CacheConfig:
    """The CacheConfig of a valid cache config, from its layers and every result of its records
    as (record index, result index, layer index, createdAt or None): where range and loop
    problems are found, and each layer's newest createdAt."""
    n = len(layers)
    problems: list[str] = []
    for i, layer in enumerate(layers):
        if layer.parent != -1 and not 0 <= layer.parent < n:
            problems.append(f"layers[{i}].parent: {layer.parent} is out of range (0..{n - 1})")
        elif layer.parent == i:
            problems.append(f"layers[{i}].parent: a layer cannot be its own parent")
    if not problems:
        problems.extend(_loops(layers))
    created: dict[int, int] = {}
    for r, j, idx, created_at in results:
        if not 0 <= idx < n:
            problems.append(f"records[{r}].layers[{j}].layer: {idx} is out of range")
            continue
        ns = parse_rfc3339_ns(created_at)
        if ns is not None and ns > created.get(idx, -1):
            created[idx] = ns
    return CacheConfig(digest, layers, record_count, created, tuple(problems))


def _loops(layers: tuple[ConfigLayer, ...]) -> list[str]:
    """Every layer whose parent chain comes back to itself (FORMAT.md: loops are invalid)."""
    state = [0] * len(layers)  # 0 new, 1 on the current path, 2 known to reach a root
    problems: list[str] = []
    for start in range(len(layers)):
        path: list[int] = []
        i = start
        while i != -1 and state[i] == 0:
            state[i] = 1
            path.append(i)
            i = layers[i].parent
        if i != -1 and state[i] == 1:
            problems.append(f"layers[{i}].parent: parent links form a loop")
        for j in path:
            state[j] = 2
    return problems
