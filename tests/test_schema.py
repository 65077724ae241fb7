"""ocicache.format.schema: the shipped input schemas against real BuildKit output and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicache.format.schema import Violation, load_schema, schema_names, validate

FIXTURES = Path(__file__).parent.parent / "fixtures"
INPUT_SCHEMAS = {
    "descriptor",
    "oci-layout",
    "image-index",
    "image-manifest",
    "docker-manifest-list",
    "cacheconfig",
}
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER_DIGEST = "sha256:" + "fedcba9876543210" * 4


def _shape(document: object) -> str | None:
    """The schema a JSON blob found in blobs/ should satisfy, judged by its shape."""
    if not isinstance(document, dict):
        return None
    if "config" in document and "layers" in document:
        return "image-manifest"
    if "manifests" in document:
        return "docker-manifest-list" if document.get("mediaType") == DOCKER_LIST else "image-index"
    if "layers" in document and "records" in document:
        return "cacheconfig"
    return None


def _fixture_documents() -> list[tuple[str, Any, str | None]]:
    found: list[tuple[str, Any, str | None]] = []
    for cache_dir in sorted(p for p in FIXTURES.glob("buildkit-v0.32.2/*") if p.is_dir()):
        for fixed, name in (("index.json", "image-index"), ("oci-layout", "oci-layout")):
            path = cache_dir / fixed
            if path.exists():
                found.append((str(path.relative_to(FIXTURES)), json.loads(path.read_bytes()), name))
        for blob in sorted((cache_dir / "blobs" / "sha256").iterdir()):
            try:
                document = json.loads(blob.read_bytes())
            except (UnicodeDecodeError, ValueError):
                continue  # a layer
            found.append((str(blob.relative_to(FIXTURES)), document, _shape(document)))
    return found


FIXTURE_DOCUMENTS = _fixture_documents()


def test_fixtures_cover_every_input_document_kind() -> None:
    kinds = {name for _, _, name in FIXTURE_DOCUMENTS}
    assert kinds >= INPUT_SCHEMAS - {"descriptor"}


@pytest.mark.parametrize(
    ("document", "name"),
    [pytest.param(doc, name, id=rel) for rel, doc, name in FIXTURE_DOCUMENTS],
)
def test_real_documents_are_valid(document: object, name: str | None) -> None:
    assert name is not None, "JSON blob of no known shape"
    assert validate(document, name) == []


def test_every_fixture_descriptor_is_valid() -> None:
    count = 0
    for _, document, name in FIXTURE_DOCUMENTS:
        assert isinstance(document, dict)
        descriptors = list(document.get("manifests", [])) if name != "cacheconfig" else []
        if name == "image-manifest":
            descriptors = [document["config"], *document["layers"]]
        for descriptor in descriptors:
            assert validate(descriptor, "descriptor") == []
            count += 1
    assert count > 50


# --- negative cases ------------------------------------------------------------------------


def _descriptor(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"mediaType": "application/octet-stream", "digest": DIGEST, "size": 3}
    base.update(changes)
    return base


def _index(*manifests: object) -> dict[str, object]:
    return {"schemaVersion": 2, "manifests": list(manifests)}


def _paths(violations: list[Violation]) -> list[str]:
    return [v.path for v in violations]


@pytest.mark.parametrize(
    ("size", "words"),
    [
        (-5, "-5 is less than the minimum of 0"),
        (1.5, "not of type 'integer'"),
        (2**63, "greater than the maximum"),
        ("3", "not of type 'integer'"),
        (True, "not of type 'integer'"),
    ],
)
def test_bad_size(size: object, words: str) -> None:
    violations = validate(_index(_descriptor(), _descriptor(size=size)), "image-index")
    assert _paths(violations) == ["manifests[1].size"]
    assert words in violations[0].message


def test_largest_size_is_valid() -> None:
    assert validate(_descriptor(size=2**63 - 1), "descriptor") == []
    assert validate(_descriptor(size=0), "descriptor") == []


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:../../etc",
        "SHA256:" + "0" * 64,
        "sha256:" + "A" * 64,  # matches the grammar, but sha256 is lower-case hex
        "sha256:abc",
        DIGEST + "\n",
        "sha256",
        "",
        ":abc",
        "sha256:" + "0" * 64 + "/x",
    ],
)
def test_bad_digest(digest: str) -> None:
    violations = validate(_descriptor(digest=digest), "descriptor")
    assert _paths(violations) == ["digest"]
    assert "digest" in violations[0].message


@pytest.mark.parametrize(
    "digest",
    [
        DIGEST,
        "sha512:" + "ab" * 64,
        "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    ],
)
def test_good_digest(digest: str) -> None:
    assert validate(_descriptor(digest=digest), "descriptor") == []


def test_descriptor_without_media_type() -> None:
    bad = _descriptor()
    del bad["mediaType"]
    assert _paths(validate(bad, "descriptor")) == ["mediaType"]
    manifest = {"schemaVersion": 2, "config": bad, "layers": [_descriptor()]}
    violations = validate(manifest, "image-manifest")
    assert violations == [Violation("config.mediaType", "'mediaType' is a required property")]


def test_descriptor_extra_keys_allowed() -> None:
    assert validate(_descriptor(**{"x-future": [1, {"a": None}]}), "descriptor") == []


def test_missing_manifests() -> None:
    assert _paths(validate({"schemaVersion": 2}, "image-index")) == ["manifests"]
    docker = {"schemaVersion": 2, "mediaType": DOCKER_LIST}
    assert _paths(validate(docker, "docker-manifest-list")) == ["manifests"]


def test_schema_version_1() -> None:
    for name, document in [
        ("image-index", _index()),
        ("image-manifest", {"schemaVersion": 2, "config": _descriptor(), "layers": []}),
        ("docker-manifest-list", {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []}),
    ]:
        assert validate(document, name) == []
        violations = validate({**document, "schemaVersion": 1}, name)
        assert _paths(violations) == ["schemaVersion"], name


def test_wrong_media_type_for_shape() -> None:
    index = {**_index(), "mediaType": DOCKER_LIST}
    assert _paths(validate(index, "image-index")) == ["mediaType"]


def test_annotation_path_quotes_dotted_keys() -> None:
    bad = _descriptor(annotations={"org.opencontainers.image.ref.name": 7})
    violations = validate(_index(bad), "image-index")
    assert _paths(violations) == ['manifests[0].annotations["org.opencontainers.image.ref.name"]']


def _config(layers: list[dict[str, object]]) -> dict[str, object]:
    return {"layers": layers, "records": [{"digest": "sha256:key", "layers": [{"layer": 0}]}]}


def test_cacheconfig_parent_minus_2() -> None:
    config = _config([{"blob": DIGEST, "parent": -1}, {"blob": OTHER_DIGEST, "parent": -2}])
    violations = validate(config, "cacheconfig")
    assert _paths(violations) == ["layers[1].parent"]
    assert violations[0].message == "-2 is less than the minimum of -1"


def test_cacheconfig_missing_blob() -> None:
    config = _config([{"blob": DIGEST, "parent": -1}, {"parent": 0}])
    assert validate(config, "cacheconfig") == [Violation("layers[1].blob", "'blob' is a required property")]


def test_cacheconfig_missing_parent_is_fine_and_extra_keys_allowed() -> None:
    config = _config([{"blob": DIGEST, "parent": -1, "future": 1}, {"blob": OTHER_DIGEST}])
    config["future"] = {"anything": True}
    assert validate(config, "cacheconfig") == []


def test_cacheconfig_out_of_range_indexes_are_not_the_schemas_job() -> None:
    config = {
        "layers": [{"blob": DIGEST, "parent": 99}],
        "records": [{"digest": "k", "layers": [{"layer": 42}], "inputs": [[{"link": 7}]]}],
    }
    assert validate(config, "cacheconfig") == []


def test_cacheconfig_record_errors() -> None:
    config = {
        "records": [
            {"digest": "a"},
            {
                "layers": [{"layer": -1}, {"createdAt": 5}],
                "inputs": [[{"link": 0, "selector": 1}], [{}]],
            },
        ]
    }
    assert validate(config, "cacheconfig") == [
        Violation("records[1].digest", "'digest' is a required property"),
        Violation("records[1].inputs[0][0].selector", "1 is not of type 'string'"),
        Violation("records[1].inputs[1][0].link", "'link' is a required property"),
        Violation("records[1].layers[0].layer", "-1 is less than the minimum of 0"),
        Violation("records[1].layers[1].createdAt", "5 is not of type 'string'"),
        Violation("records[1].layers[1].layer", "'layer' is a required property"),
    ]


def test_oci_layout() -> None:
    assert validate({"imageLayoutVersion": "1.0.0"}, "oci-layout") == []
    assert _paths(validate({}, "oci-layout")) == ["imageLayoutVersion"]
    assert _paths(validate({"imageLayoutVersion": 1}, "oci-layout")) == ["imageLayoutVersion"]


def test_root_type_error_has_empty_path_and_short_message() -> None:
    violations = validate(["x" * 10_000], "image-index")
    assert _paths(violations) == [""]
    assert len(violations[0].message) < 120


def test_huge_bad_value_is_not_dumped() -> None:
    violations = validate(_descriptor(mediaType="m" * 100_000), "descriptor")
    assert violations == []
    violations = validate(_descriptor(size="9" * 100_000), "descriptor")
    assert _paths(violations) == ["size"]
    assert len(violations[0].message) < 120


def test_violations_sorted_by_path_then_message() -> None:
    bad = {"schemaVersion": 3, "manifests": [{"size": -1}, {"digest": "x", "size": 1}]}
    violations = validate(bad, "image-index")
    assert violations == sorted(violations, key=lambda v: (v.path, v.message))
    assert _paths(violations) == [
        "manifests[0].digest",
        "manifests[0].mediaType",
        "manifests[0].size",
        "manifests[1].digest",
        "manifests[1].mediaType",
        "schemaVersion",
    ]


# --- names and loading ---------------------------------------------------------------------


def test_schema_names() -> None:
    names = schema_names()
    assert names == sorted(names)
    assert set(names) >= INPUT_SCHEMAS


def test_load_schema() -> None:
    schema = load_schema("descriptor")
    assert schema["$id"] == "https://ocicache.invalid/schemas/descriptor.json"
    schema["mutated"] = True
    assert "mutated" not in load_schema("descriptor")


@pytest.mark.parametrize("name", ["nope", "descriptor.json", "../pyproject", ""])
def test_unknown_schema(name: str) -> None:
    with pytest.raises(KeyError):
        load_schema(name)
    with pytest.raises(KeyError):
        validate({}, name)


@pytest.mark.parametrize("name", schema_names())
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    if name in INPUT_SCHEMAS:
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"https://ocicache.invalid/schemas/{name}.json"


# --- robustness ----------------------------------------------------------------------------

_KEYS = st.sampled_from(
    [
        "schemaVersion",
        "mediaType",
        "manifests",
        "config",
        "layers",
        "records",
        "digest",
        "size",
        "annotations",
        "blob",
        "parent",
        "inputs",
        "link",
        "layer",
        "platform",
        "urls",
        "chains",
    ]
) | st.text(max_size=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([DIGEST, "sha256:../../etc", "sha512:ab", "1.0.0", ""])
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=5),
    max_leaves=25,
)


# 50 documents a schema: the 19 schemas share their $ref'd parts (descriptor, digest, ...), which
# so meet ~950 of them (150 a schema took 19 s).
@pytest.mark.parametrize("name", schema_names())
@settings(max_examples=50, deadline=None)
@given(document=JSON_VALUES)
def test_validate_never_raises(name: str, document: object) -> None:
    violations = validate(document, name)
    assert violations == sorted(violations, key=lambda v: (v.path, v.message))
    for violation in violations:
        assert isinstance(violation.path, str)
        assert 0 < len(violation.message) <= 200


def test_import_does_not_load_jsonschema() -> None:
    import subprocess
    import sys

    code = "import sys, ocicache.format.schema; assert 'jsonschema' not in sys.modules, 'eager import'"
    root = Path(__file__).parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
