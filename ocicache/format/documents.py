"""Strict JSON decoding and parsing of index.json, cache manifests and cache configs into model values.

Errors say where: `CorruptError(file=..., where="manifests[2].digest", ...)`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ocicache.base.errors import CorruptError
from ocicache.base.timefmt import parse_rfc3339_ns
from ocicache.format import mediatypes as mt
from ocicache.format.fastvalid import certainly_valid
from ocicache.format.model import (
    CacheConfig,
    CacheManifest,
    ConfigLayer,
    Descriptor,
    Index,
    IndexEntry,
    OtherManifest,
)

# Largest JSON document we will decode. BuildKit itself refuses to import a manifest or config
# over 1 MiB; bigger ones exist on disk (large mode=max configs, manifests of 100k layers are
# ~25 MB), so the limit is far past any real document; it only keeps a hostile (sparse,
# multi-GB) file out of memory. A document over it is reported as exactly that (too_big).
JSON_LIMIT = 256 << 20
IMPORT_LIMIT = 1 << 20  # BuildKit's own limit on manifests and configs it imports
TOO_BIG = "too big to read"  # the start of too_big()'s message

KIND_CACHE_MANIFEST = "cache-manifest"
KIND_CACHE_CONFIG = "cache-config"
KIND_MANIFEST = "manifest"  # an image manifest / index that is not a cache manifest
KIND_UNKNOWN_JSON = "unknown-json"


class _DuplicateKey(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # called for every object of every document: the loop only on a duplicate
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def loads_strict(data: bytes, file: str) -> Any:
    """Decode JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting.

    For the files BuildKit reads with its own rules (index.json, oci-layout): a duplicate key
    there is a sign of a torn or hand-edited file."""
    return _loads(data, file, _pairs)


def loads_blob(data: bytes, file: str) -> Any:
    """Decode a JSON blob as BuildKit does: like loads_strict, but a repeated key keeps its last
    value (Go's encoding/json, which BuildKit imports blobs with; msgspec, see fastdecode, reads
    them the same way). `check` reports such keys (duplicate_keys)."""
    return _loads(data, file, None)


def _loads(data: bytes, file: str,
           pairs: Callable[[list[tuple[str, Any]]], dict[str, Any]] | None) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptError(f"not UTF-8 (byte {e.start})", file=file) from None
    if not text.strip():
        raise CorruptError("empty file", file=file)
    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=_no_constants)
    except _DuplicateKey as e:
        raise CorruptError(f"duplicate key {str(e)!r}", file=file) from None
    except json.JSONDecodeError as e:
        # A torn write (BuildKit rewrites index.json in place) leaves a valid prefix: the
        # decoder then fails at the very end, or inside a string it never saw closed.
        torn = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")
        what = "truncated JSON" if torn else "malformed JSON"
        raise CorruptError(f"{what} ({e.msg.removesuffix(' starting at')} at line {e.lineno} "
                           f"column {e.colno}; {len(data)} bytes)", file=file) from None
    except RecursionError:
        raise CorruptError("JSON nested too deeply", file=file) from None
    except ValueError as e:
        raise CorruptError(str(e), file=file) from None


def duplicate_keys(data: bytes) -> list[tuple[str, str]]:
    """Every key a JSON document repeats within one object, as (path of that object, key),
    in document order; [] when there is none or the bytes do not decode."""
    held: list[tuple[dict[str, Any], list[str]]] = []  # holding the dicts keeps their ids unique

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) != len(items):
            counts = Counter(key for key, _ in items)
            held.append((out, [key for key in out if counts[key] > 1]))
        return out

    try:
        doc = _loads(data, "", pairs)
    except CorruptError:
        return []
    if not held:
        return []
    paths = _object_paths(doc, {id(obj) for obj, _ in held})
    # An object that a later duplicate replaced is in no path of the document: where = "".
    return [(paths.get(id(obj), ""), key) for obj, keys in held for key in keys]


def _object_paths(doc: object, wanted: set[int]) -> dict[int, str]:
    """The path ("layers[3].annotations", "(root)") of each wanted object of `doc`, by id."""
    from ocicache.format.schema import format_path

    found: dict[int, str] = {}
    stack: list[tuple[object, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            if id(node) in wanted:
                found[id(node)] = format_path(path) or "(root)"
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))
    return found


def too_big(size: int, file: str) -> CorruptError:
    """The error of a document over JSON_LIMIT: it is not read, so what it says is unknown."""
    return CorruptError(f"{TOO_BIG} ({size} bytes > {JSON_LIMIT} byte limit)", file=file)


def looks_like_json(head: bytes) -> bool:
    """True when the first bytes can start a JSON object (layers are gzip/zstd/tar)."""
    return head.lstrip(b" \t\r\n")[:1] == b"{"


def validate(doc: object, schema: str, file: str) -> None:
    """Validate against one of our schemas; raise CorruptError naming the first violation."""
    # jsonschema costs ~0.1 s per 200-layer manifest: a fast conservative check accepts the
    # documents that are certainly valid, jsonschema judges (and explains) the rest.
    if certainly_valid(doc, schema):
        return
    from ocicache.format.schema import validate as schema_validate

    violations = schema_validate(doc, schema)
    if violations:
        v = violations[0]
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        raise CorruptError(f"{v.message}{more}", file=file, where=v.path or "(root)")


# The top-level mediaType a cache manifest of each shape may have (absent is allowed: clients
# older than v0.14 write none). Anything else holding a cache config is not one of the three
# shapes BuildKit writes (FORMAT.md): foreign content.
_SHAPE_A_TYPES = (None, mt.OCI_MANIFEST)
_SHAPE_BC_TYPES = (None, mt.OCI_INDEX, mt.DOCKER_LIST)


def classify(doc: object) -> str:
    """What a decoded JSON blob is, from its shape and media types.

    A cache manifest is one of the three shapes with a cache config; any other manifest, index
    or artifact manifest (OCI, Docker v2 schema 2, of any media type) is KIND_MANIFEST."""
    if not isinstance(doc, dict):
        return KIND_UNKNOWN_JSON
    if "layers" in doc and "records" in doc and "config" not in doc:
        return KIND_CACHE_CONFIG
    media_type = doc.get("mediaType")
    if "config" in doc and "layers" in doc:
        config = doc.get("config")
        if (isinstance(config, dict) and config.get("mediaType") == mt.CACHE_CONFIG
                and media_type in _SHAPE_A_TYPES):
            return KIND_CACHE_MANIFEST
        return KIND_MANIFEST
    manifests = doc.get("manifests")
    if isinstance(manifests, list):
        if media_type in _SHAPE_BC_TYPES and any(
                isinstance(m, dict) and m.get("mediaType") == mt.CACHE_CONFIG for m in manifests):
            return KIND_CACHE_MANIFEST
        return KIND_MANIFEST
    if isinstance(media_type, str) and media_type in mt.DOCUMENT_TYPES:
        return KIND_MANIFEST  # says it is one (an artifact manifest, or an invalid manifest)
    return KIND_UNKNOWN_JSON


def descriptor(obj: Mapping[str, Any]) -> Descriptor:
    """A Descriptor from an already-validated descriptor object."""
    ann = obj.get("annotations") or {}
    return Descriptor(obj["mediaType"], obj["digest"], obj["size"], ann)


def parse_index(doc: object, file: str = "index.json") -> Index:
    """index.json: an OCI image index whose entries are the tags' cache manifests."""
    validate(doc, "image-index", file)
    assert isinstance(doc, dict)
    entries = tuple(IndexEntry(i, descriptor(m)) for i, m in enumerate(doc["manifests"]))
    media_type = doc.get("mediaType")
    return Index(entries, media_type if isinstance(media_type, str) else None, doc)


def parse_cache_manifest(doc: object, digest: str, file: str) -> CacheManifest:
    """A cache manifest of shape A (image manifest), B (OCI index) or C (Docker list)."""
    doc = _object(doc, file)
    if "config" in doc:
        validate(doc, "image-manifest", file)
        media_type = doc.get("mediaType") or mt.OCI_MANIFEST
        config = descriptor(doc["config"])
        layers, others = _split(doc["layers"])
        return CacheManifest(digest, mt.SHAPE_A, media_type, config, layers, others)
    media_type = doc.get("mediaType") or mt.OCI_INDEX
    schema = _list_schema(doc)
    validate(doc, schema, file)
    shape = mt.SHAPE_C if schema == "docker-manifest-list" else mt.SHAPE_B
    configs = [descriptor(m) for m in doc["manifests"] if m["mediaType"] == mt.CACHE_CONFIG]
    rest = [m for m in doc["manifests"] if m["mediaType"] != mt.CACHE_CONFIG]
    layers, others = _split(rest)
    # BuildKit writes exactly one cache config (last); extra ones are reported by `check`.
    cache_config = configs[-1] if configs else None
    return CacheManifest(digest, shape, media_type, cache_config, layers,
                         others + tuple(configs[:-1]))


def schema_for(doc: object) -> str | None:
    """The schema a JSON blob of this shape is read against (what parse_* apply), or None."""
    kind = classify(doc)
    if kind == KIND_CACHE_CONFIG:
        return "cacheconfig"
    if kind == KIND_MANIFEST:
        return FOREIGN_SCHEMA
    if kind == KIND_CACHE_MANIFEST:
        assert isinstance(doc, dict)
        return "image-manifest" if "config" in doc else _list_schema(doc)
    return None


def _list_schema(doc: Mapping[str, Any]) -> str:
    """A list of descriptors: a Docker manifest list (shape C) or an OCI index (shape B)."""
    return "docker-manifest-list" if doc.get("mediaType") == mt.DOCKER_LIST else "image-index"


def _object(doc: object, file: str) -> dict[str, Any]:
    """`doc` as a JSON object; CorruptError (not an assertion) for any other JSON value."""
    if not isinstance(doc, dict):
        raise CorruptError(f"expected a JSON object, got {type(doc).__name__}", file=file)
    return doc


def _split(items: list[Mapping[str, Any]]) -> tuple[tuple[Descriptor, ...], tuple[Descriptor, ...]]:
    layers: list[Descriptor] = []
    others: list[Descriptor] = []
    for item in items:
        d = descriptor(item)
        (others if d.media_type in mt.MANIFEST_TYPES else layers).append(d)
    return tuple(layers), tuple(others)


FOREIGN_SCHEMA = "foreign-manifest"


def parse_other_manifest(doc: object, digest: str, file: str) -> OtherManifest:
    """A foreign manifest, index or artifact manifest (of any media type: OCI, Docker v2 schema
    2, ...): every descriptor it holds under config, layers, manifests, blobs and subject, in
    that order. CorruptError when one of them is not a valid descriptor (what the document
    references is then unknown)."""
    doc = _object(doc, file)
    validate(doc, FOREIGN_SCHEMA, file)
    children: list[Descriptor] = []
    keys: list[str] = []
    for key in mt.DESCRIPTOR_KEYS:
        value = doc.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        children.extend(descriptor(x) for x in items)
        keys.extend([key] * len(items))
    media_type = doc.get("mediaType") or (mt.OCI_MANIFEST if "config" in doc else mt.OCI_INDEX)
    artifact = doc.get("artifactType")
    return OtherManifest(digest, media_type, tuple(children), tuple(keys),
                         artifact if isinstance(artifact, str) else None)


def parse_cache_config(doc: object, digest: str, file: str) -> CacheConfig:
    """The cache config: layer parent links (missing parent = 0, -1 = root) and record times."""
    validate(doc, "cacheconfig", file)
    assert isinstance(doc, dict)
    layers = tuple(ConfigLayer(x["blob"], x.get("parent", 0)) for x in doc.get("layers") or [])
    records = doc.get("records") or []
    results = ((r, j, ref["layer"], ref.get("createdAt"))
               for r, record in enumerate(records)
               for j, ref in enumerate(record.get("layers") or []))
    return cache_config(digest, layers, len(records), results)


def cache_config(digest: str, layers: tuple[ConfigLayer, ...], record_count: int,
                 results: Iterable[tuple[int, int, int, object]]) -> CacheConfig:
    """The CacheConfig of a valid cache config, from its layers and every result of its records
    as (record index, result index, layer index, createdAt or None): the one place (shared with
    fastdecode) that finds range and loop problems and each layer's newest createdAt."""
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
