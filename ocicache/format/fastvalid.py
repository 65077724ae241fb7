"""A fast, conservative check that a document certainly satisfies one of our input schemas.

jsonschema walks a 200-layer manifest in ~0.1 s; a cache of 300 exports would spend a minute
there. `certainly_valid` answers True only when the document is valid against the schema in
`schemas/` (same verdict as jsonschema); whenever it is unsure (an unusual but possibly valid
form, or an invalid document) it answers False and the caller asks jsonschema, which gives the
verdict and the message with its path. So a wrong True is the only possible bug; the tests
compare it against jsonschema on valid and mutated documents.

Keep in step with `schemas/*.json`: a change there must be mirrored here (or return False).
"""

from __future__ import annotations

import re
from typing import Any

# descriptor.json#/$defs/digest for the two registered algorithms: the shape that passes both
# the generic grammar and the algorithm-specific pattern. Anything else is left to jsonschema.
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_MAX_SIZE = 9223372036854775807

# Descriptor properties whose check is simple; any other known one (urls) sends the document
# to jsonschema. Unknown properties are allowed by the schema.
_DESCRIPTOR_SCHEMA_KEYS = frozenset(
    {"mediaType", "digest", "size", "urls", "annotations", "platform", "artifactType", "data"})
_HARD_DESCRIPTOR_KEYS = frozenset({"urls"})

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is not an integer for JSON Schema; 1.0 is left to jsonschema


def _annotations(value: object) -> bool:
    return type(value) is dict and all(type(v) is str for v in value.values())


def _descriptor(d: object) -> bool:
    if type(d) is not dict:
        return False
    media_type = d.get("mediaType")
    digest = d.get("digest")
    size = d.get("size")
    if (type(media_type) is not str or type(digest) is not str or type(size) is not int
            or not 0 <= size <= _MAX_SIZE or _DIGEST.fullmatch(digest) is None):
        return False
    if len(d) == 3:
        return True
    if len(d) == 4 and "annotations" in d:
        return _annotations(d["annotations"])
    if not _HARD_DESCRIPTOR_KEYS.isdisjoint(d):
        return False
    if "platform" in d and not _platform(d["platform"]):
        return False
    if "annotations" in d and not _annotations(d["annotations"]):
        return False
    if "artifactType" in d and type(d["artifactType"]) is not str:
        return False
    return not ("data" in d and type(d["data"]) is not str)


def _strings(value: object) -> bool:
    return type(value) is list and all(type(x) is str for x in value)


def _platform(p: object) -> bool:
    """descriptor.json#/$defs/platform (a manifest list's entries all have one)."""
    if type(p) is not dict or type(p.get("architecture")) is not str \
            or type(p.get("os")) is not str:
        return False
    for key in ("os.version", "variant"):
        if key in p and type(p[key]) is not str:
            return False
    return all(_strings(p[key]) for key in ("os.features", "features") if key in p)


def _descriptors(items: object) -> bool:
    return type(items) is list and all(_descriptor(d) for d in items)


def _schema_version(doc: dict[str, Any]) -> bool:
    v = doc.get("schemaVersion")
    return type(v) is int and v == 2


def _common(doc: dict[str, Any]) -> bool:
    """subject, annotations, artifactType of a manifest or index."""
    if "subject" in doc and not _descriptor(doc["subject"]):
        return False
    if "annotations" in doc and not _annotations(doc["annotations"]):
        return False
    return not ("artifactType" in doc and type(doc["artifactType"]) is not str)


def _image_manifest(doc: dict[str, Any]) -> bool:
    if "mediaType" in doc and doc["mediaType"] != OCI_MANIFEST:
        return False
    return (_schema_version(doc) and _descriptor(doc.get("config"))
            and _descriptors(doc.get("layers")) and _common(doc))


def _image_index(doc: dict[str, Any]) -> bool:
    if "mediaType" in doc and doc["mediaType"] != OCI_INDEX:
        return False
    return _schema_version(doc) and _descriptors(doc.get("manifests")) and _common(doc)


def _docker_list(doc: dict[str, Any]) -> bool:
    return (doc.get("mediaType") == DOCKER_LIST and _schema_version(doc)
            and _descriptors(doc.get("manifests")))


DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_FOREIGN_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
_FOREIGN_INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)


def _foreign_manifest(doc: dict[str, Any]) -> bool:
    """foreign-manifest.json: descriptors under the five keys, the image types' required keys."""
    has_type = "mediaType" in doc
    media_type = doc.get("mediaType")
    if has_type and type(media_type) is not str:
        return False
    if "schemaVersion" in doc and type(doc["schemaVersion"]) is not int:
        return False
    if has_type and media_type in _FOREIGN_MANIFEST_TYPES:
        if not ("config" in doc and "layers" in doc and _schema_version(doc)):
            return False
    elif has_type and media_type in _FOREIGN_INDEX_TYPES:
        if not ("manifests" in doc and _schema_version(doc)):
            return False
    elif not has_type and not (_schema_version(doc) and (
            ("config" in doc and "layers" in doc) or "manifests" in doc)):
        return False
    if "config" in doc and not _descriptor(doc["config"]):
        return False
    for key in ("layers", "manifests", "blobs"):
        if key in doc and not _descriptors(doc[key]):
            return False
    return _common(doc)


def _index(value: object) -> bool:
    return type(value) is int and value >= 0


def _time(value: object) -> bool:
    return type(value) is str  # format is an annotation only (no format checker is used)


def _config_layer(x: object) -> bool:
    if type(x) is not dict:
        return False
    blob = x.get("blob")
    if type(blob) is not str or _DIGEST.fullmatch(blob) is None:
        return False
    if "parent" in x:
        p = x["parent"]
        if type(p) is not int or p < -1:
            return False
    return "annotations" not in x  # rare: left to jsonschema


def _record(r: object) -> bool:
    if type(r) is not dict or type(r.get("digest")) is not str:
        return False
    if "layers" in r:
        refs = r["layers"]
        if type(refs) is not list:
            return False
        for ref in refs:
            if type(ref) is not dict or not _index(ref.get("layer")):
                return False
            if "createdAt" in ref and not _time(ref["createdAt"]):
                return False
    if "inputs" in r:
        inputs = r["inputs"]
        if type(inputs) is not list:
            return False
        for group in inputs:
            if type(group) is not list:
                return False
            for link in group:
                if type(link) is not dict or not _index(link.get("link")):
                    return False
                if "selector" in link and type(link["selector"]) is not str:
                    return False
    return "chains" not in r  # inline caches only: left to jsonschema


def _cacheconfig(doc: dict[str, Any]) -> bool:
    layers = doc.get("layers", [])
    records = doc.get("records", [])
    return (type(layers) is list and type(records) is list
            and all(_config_layer(x) for x in layers) and all(_record(r) for r in records))


def _oci_layout(doc: dict[str, Any]) -> bool:
    return type(doc.get("imageLayoutVersion")) is str


_CHECKS = {
    "image-manifest": _image_manifest,
    "image-index": _image_index,
    "docker-manifest-list": _docker_list,
    "cacheconfig": _cacheconfig,
    "oci-layout": _oci_layout,
    "descriptor": _descriptor,
    "foreign-manifest": _foreign_manifest,
}


def certainly_valid(doc: object, schema: str) -> bool:
    """True only when `doc` is valid against schema `schema`; False means "ask jsonschema"."""
    check = _CHECKS.get(schema)
    if check is None or type(doc) is not dict:
        return False
    try:
        return bool(check(doc))
    except (TypeError, ValueError, RecursionError):
        return False
