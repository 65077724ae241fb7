"""fastvalid.certainly_valid never says "valid" where jsonschema finds a violation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from docpaths import json_paths
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicache.format.fastvalid import certainly_valid
from ocicache.format.schema import validate

FIXTURES = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
DIGEST = "sha256:" + "ab" * 32


def _schema_of(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    if "config" in doc and "layers" in doc:
        return "image-manifest"
    if "manifests" in doc:
        return ("docker-manifest-list" if "docker" in str(doc.get("mediaType"))
                else "image-index")
    if "layers" in doc and "records" in doc:
        return "cacheconfig"
    return None


def _documents() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for blob in sorted(FIXTURES.glob("*/blobs/sha256/*")):
        try:
            doc = json.loads(blob.read_bytes())
        except (UnicodeDecodeError, ValueError):
            continue
        name = _schema_of(doc)
        if name is not None:
            out.append((name, doc))
    for index in sorted(FIXTURES.glob("*/index.json")):
        out.append(("image-index", json.loads(index.read_bytes())))
    # foreign content (images, lists, artifacts, referrers), and cache manifests read as such
    out.extend(("foreign-manifest", doc) for doc in FOREIGN)
    out.extend(("foreign-manifest", doc) for name, doc in list(out)
               if name in ("image-manifest", "image-index", "docker-manifest-list"))
    return out


def _d(media_type: str, n: int = 1, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": "sha256:" + f"{n:02x}" * 32, "size": 10 + n,
            **extra}


FOREIGN: list[dict[str, Any]] = [
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": _d("application/vnd.oci.image.config.v1+json"),
     "layers": [_d("application/vnd.oci.image.layer.v1.tar+gzip", 2)]},
    {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
     "config": _d("application/vnd.docker.container.image.v1+json"),
     "layers": [_d("application/vnd.docker.image.rootfs.diff.tar.gzip", 3)]},
    {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
     "manifests": [_d("application/vnd.docker.distribution.manifest.v2+json", 4,
                      platform={"architecture": "arm64", "os": "linux"})]},
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.example", "config": _d("application/vnd.oci.empty.v1+json"),
     "layers": [_d("application/x", 5)], "subject": _d("application/vnd.oci.image.manifest.v1+json",
                                                        6),
     "annotations": {"a": "b"}},
    {"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "artifactType": "x/y",
     "blobs": [_d("application/x", 7)], "subject": _d("application/x", 8)},
    {"schemaVersion": 2, "manifests": [_d("application/vnd.oci.image.index.v1+json", 9)]},
]


DOCUMENTS = _documents()


def test_real_documents_take_the_fast_path() -> None:
    assert DOCUMENTS
    for name, doc in DOCUMENTS:
        assert certainly_valid(doc, name), name
        assert validate(doc, name) == []


# Values that break (or only look like they break) a schema somewhere.
ODD_VALUES: list[Any] = [None, True, False, 0, -1, -2, 1.0, 2.5, "", "x", DIGEST, DIGEST.upper(),
                         "sha256:abc", "sha512:" + "0" * 128, 2, [], {}, [1], {"a": 1},
                         {"a": "b"}, 2**63, "application/vnd.oci.image.manifest.v1+json"]


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    if not path:
        return value if action == "set" else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "set":
        parent[last] = value
    elif action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last]["platform" if value is None else "extra"] = value
    return doc


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_a_fast_yes_is_a_jsonschema_yes(data: st.DataObject) -> None:
    name, doc = data.draw(st.sampled_from(DOCUMENTS))
    path = data.draw(st.sampled_from(json_paths(doc)))
    action = data.draw(st.sampled_from(["set", "delete", "add"]))
    value = data.draw(st.sampled_from(ODD_VALUES))
    mutated = _mutate(doc, path, action, value)
    if certainly_valid(mutated, name):
        assert validate(mutated, name) == [], (path, action, value)


@pytest.mark.parametrize("value", ODD_VALUES)
def test_descriptor_fields(value: Any) -> None:
    base = {"mediaType": "application/x", "digest": DIGEST, "size": 1}
    for key in ("mediaType", "digest", "size", "annotations", "urls", "platform", "data",
                "artifactType"):
        doc = {**base, key: value}
        if certainly_valid(doc, "descriptor"):
            assert validate(doc, "descriptor") == [], (key, value)
