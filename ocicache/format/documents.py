"""JSON documents as text: strict loading, what a blob is (classify), and the messages.

The reading rules of JSON itself live here (loads_strict, loads_blob: UTF-8, no NaN/Infinity,
bounded nesting and integers, repeated keys); decoder.py is the one decoder from a document
to its model value, and jsonschema (schema.py) explains what it refuses: errors say where,
`CorruptError(file=..., where="manifests[2].digest", ...)`, in jsonschema's words.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from ocicache.base.errors import CorruptError
from ocicache.format import decoder
from ocicache.format import mediatypes as mt
from ocicache.format.decoder import FOREIGN_SCHEMA, Rejected
from ocicache.format.model import CacheConfig, CacheManifest, Index, OtherManifest

# Largest JSON document we will decode. BuildKit itself refuses to import a manifest or config
# over 1 MiB; bigger ones exist on disk (large mode=max configs, manifests of 100k layers are
# ~25 MB), so the limit is far past any real document; it only keeps a hostile (sparse,
# multi-GB) file out of memory. A document over it is reported as exactly that (too_big).
JSON_LIMIT = 256 << 20
IMPORT_LIMIT = 1 << 20  # BuildKit's own limit on manifests and configs it imports
TOO_BIG = "too big to read"  # the start of too_big()'s message

KIND_CACHE_MANIFEST = mt.KIND_CACHE_MANIFEST
KIND_CACHE_CONFIG = mt.KIND_CACHE_CONFIG
KIND_MANIFEST = mt.KIND_MANIFEST
KIND_UNKNOWN_JSON = mt.KIND_UNKNOWN_JSON


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
    value (Go's encoding/json, which BuildKit imports blobs with; msgspec, see decoder.py, reads
    them the same way). `check` reports such keys (duplicate_keys)."""
    return _loads(data, file, None)


def _loads(data: bytes, file: str, pairs: Callable[[list[tuple[str, Any]]], dict[str, Any]] | None) -> Any:
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
        raise CorruptError(
            f"{what} ({e.msg.removesuffix(' starting at')} at line {e.lineno} "
            f"column {e.colno}; {len(data)} bytes)",
            file=file,
        ) from None
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
    """Check `doc` against one of our input schemas; CorruptError naming the first violation."""
    try:
        decoder.check(doc, schema)
    except Rejected as e:
        raise explain(doc, schema, file, e) from None


def explain(doc: object, schema: str, file: str, rejected: Rejected | None = None) -> CorruptError:
    """The error of a document the decoder refused: jsonschema's first violation of `schema`
    (the one users see), with how many more there are."""
    from ocicache.format.schema import validate as schema_validate

    violations = schema_validate(doc, schema)
    if violations:
        v = violations[0]
        more = f" (+{len(violations) - 1} more)" if len(violations) > 1 else ""
        return CorruptError(f"{v.message}{more}", file=file, where=v.path or "(root)")
    # The decoder and the schema disagree (tests/test_decoder_schemas.py says they never do):
    # the decoder's own words, rather than a document taken for valid.
    where, message = (rejected.where, rejected.message) if rejected else ("", "invalid")
    return CorruptError(message, file=file, where=where or "(root)")


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
        if (
            isinstance(config, dict)
            and config.get("mediaType") == mt.CACHE_CONFIG
            and media_type in _SHAPE_A_TYPES
        ):
            return KIND_CACHE_MANIFEST
        return KIND_MANIFEST
    manifests = doc.get("manifests")
    if isinstance(manifests, list):
        if media_type in _SHAPE_BC_TYPES and any(
            isinstance(m, dict) and m.get("mediaType") == mt.CACHE_CONFIG for m in manifests
        ):
            return KIND_CACHE_MANIFEST
        return KIND_MANIFEST
    if isinstance(media_type, str) and media_type in mt.DOCUMENT_TYPES:
        return KIND_MANIFEST  # says it is one (an artifact manifest, or an invalid manifest)
    return KIND_UNKNOWN_JSON


def parse_index(doc: object, file: str = "index.json") -> Index:
    """index.json: an OCI image index whose entries are the tags' cache manifests."""
    try:
        return decoder.convert_index(doc)
    except Rejected as e:
        raise explain(doc, "image-index", file, e) from None


def parse_cache_manifest(doc: object, digest: str, file: str) -> CacheManifest:
    """A cache manifest of shape A (image manifest), B (OCI index) or C (Docker list)."""
    doc = _object(doc, file)
    schema = "image-manifest" if "config" in doc else _list_schema(doc)
    try:
        return decoder.convert_cache_manifest(doc, schema, digest)
    except Rejected as e:
        raise explain(doc, schema, file, e) from None


def parse_other_manifest(doc: object, digest: str, file: str) -> OtherManifest:
    """A foreign manifest, index or artifact manifest (of any media type: OCI, Docker v2 schema
    2, ...): every descriptor it holds under config, layers, manifests, blobs and subject, in
    that order. CorruptError when one of them is not a valid descriptor (what the document
    references is then unknown)."""
    doc = _object(doc, file)
    try:
        return decoder.convert_other_manifest(doc, digest)
    except Rejected as e:
        raise explain(doc, FOREIGN_SCHEMA, file, e) from None


def parse_cache_config(doc: object, digest: str, file: str) -> CacheConfig:
    """The cache config: layer parent links (missing parent = 0, -1 = root) and record times."""
    try:
        return decoder.convert_cache_config(doc, digest)
    except Rejected as e:
        raise explain(doc, "cacheconfig", file, e) from None


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


Parsed = tuple[str | None, object | None, CorruptError | None]  # kind, model value, error


def read_document(data: bytes, digest: str, file: str) -> Parsed:
    """Kind, model value and error of a JSON blob's bytes. The decoder reads the bytes itself
    when it can (decoder.decode_blob: every document BuildKit writes); otherwise they are
    decoded here as Python values (the rules of loads_blob, and its messages), classified, and
    converted by the same decoder, jsonschema explaining what it refuses."""
    fast = decoder.decode_blob(data, digest, file)
    if fast is not None:
        return fast[0], fast[1], None
    kind: str | None = None
    try:
        doc = loads_blob(data, file)
        kind = classify(doc)  # kept even when parsing fails below
        if kind == KIND_CACHE_MANIFEST:
            return kind, parse_cache_manifest(doc, digest, file), None
        if kind == KIND_CACHE_CONFIG:
            return kind, parse_cache_config(doc, digest, file), None
        if kind == KIND_MANIFEST:
            return kind, parse_other_manifest(doc, digest, file), None
        return kind, None, None
    except CorruptError as e:
        return kind, None, e
