"""The decoder's Structs and the JSON schemas accept the same documents.

For every input schema in schemas/: real documents, generated valid documents, and mutations of
them (wrong types, missing required keys, bad digests, big and fractional numbers, extra keys
known and unknown): decoder.accepts(doc) == (jsonschema finds no violation), and a document
both accept converts to a model value. The decoder decides, jsonschema explains: a document
one accepts and the other refuses would be read wrong or explained with no message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from docpaths import json_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import mutate

from ocicache.format import decoder
from ocicache.format import mediatypes as mt
from ocicache.format.schema import validate

FIXTURES = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
INPUT_SCHEMAS = (
    "descriptor",
    "image-manifest",
    "image-index",
    "docker-manifest-list",
    "cacheconfig",
    "foreign-manifest",
    "oci-layout",
)
SHA256 = "sha256:" + "ab" * 32


def agree(doc: Any, schema: str) -> bool:
    """Both verdicts, asserted equal; the verdict. A valid blob document converts."""
    ours = decoder.accepts(doc, schema)
    violations = validate(doc, schema)
    assert ours == (not violations), (schema, violations[:1], doc)
    if ours:
        if schema in ("image-manifest", "image-index", "docker-manifest-list"):
            decoder.convert_cache_manifest(doc, schema, SHA256)
        elif schema == "cacheconfig":
            decoder.convert_cache_config(doc, SHA256)
        elif schema == "foreign-manifest":
            decoder.convert_other_manifest(doc, SHA256)
    return ours


# -- real documents ---------------------------------------------------------------------------
def _schema_of(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    if "config" in doc and "layers" in doc:
        return "image-manifest"
    if "manifests" in doc:
        return "docker-manifest-list" if doc.get("mediaType") == mt.DOCKER_LIST else "image-index"
    if "layers" in doc and "records" in doc:
        return "cacheconfig"
    return None


def _fixture_documents() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for blob in sorted(FIXTURES.glob("*/blobs/sha256/*")):
        try:
            doc = json.loads(blob.read_bytes())
        except (UnicodeDecodeError, ValueError):
            continue
        name = _schema_of(doc)
        if name is not None:
            out.append((name, doc))
            if name != "cacheconfig":
                out.append(("foreign-manifest", doc))
                descriptors = doc.get("manifests") or [doc["config"], *doc["layers"]]
                out.extend(("descriptor", d) for d in descriptors[:3])
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        out.append(("image-index", json.loads((case / "index.json").read_bytes())))
        if (case / "oci-layout").exists():
            out.append(("oci-layout", json.loads((case / "oci-layout").read_bytes())))
    return out


REAL = _fixture_documents()


def test_real_documents() -> None:
    assert {name for name, _ in REAL} == set(INPUT_SCHEMAS)
    for name, doc in REAL:
        assert agree(doc, name), name


# -- generated documents ----------------------------------------------------------------------
DIGESTS = [
    SHA256,
    "sha256:" + "0" * 64,
    "sha512:" + "f" * 128,
    "sha384:" + "0" * 96,
    "blake3:" + "c" * 64,
    "a+b.c_d-e:AZaz09=_-",
    "x:y",
    "sha256+x:000",
]
BAD_DIGESTS = [
    "sha256:" + "A" * 64,
    "sha256:abc",
    SHA256 + "\n",
    " " + SHA256,
    "SHA256:" + "0" * 64,
    "sha512:" + "f" * 64,
    "sha256:" + "0" * 64 + "/x",
    "sha256",
    ":abc",
    "",
    "a:",
    "a__b:c",
    "é:x",
    "sha256:" + "0" * 64 + "\u0660",
]
MEDIA = [
    mt.OCI_MANIFEST,
    mt.OCI_INDEX,
    mt.DOCKER_MANIFEST,
    mt.DOCKER_LIST,
    mt.CACHE_CONFIG,
    mt.OCI_ARTIFACT_MANIFEST,
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "",
    "x/y",
]
INT64 = 2**63 - 1

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
texts = st.text(max_size=10)
media = st.sampled_from(MEDIA) | texts
digests = st.sampled_from(DIGESTS)
sizes = st.integers(min_value=0, max_value=INT64) | st.sampled_from([0, 1, INT64])
indexes = st.integers(min_value=0, max_value=2**70)


def _open(required: dict[str, Any], optional: dict[str, Any]) -> Any:
    """An object with the required keys, any of the optional ones, and maybe an unknown key."""
    optional = {k: v for k, v in optional.items() if k not in required}
    known = set(required) | set(optional)
    extra = st.dictionaries(st.text(max_size=6).filter(lambda k: k not in known), json_values, max_size=1)
    return st.tuples(st.fixed_dictionaries(required, optional=optional), extra).map(
        lambda pair: {**pair[0], **pair[1]}
    )


annotations = st.dictionaries(texts, texts, max_size=3)
platform = _open(
    {"architecture": texts, "os": texts},
    {
        "os.version": texts,
        "os.features": st.lists(texts, max_size=2),
        "variant": texts,
        "features": st.lists(texts, max_size=2),
    },
)
descriptor = _open(
    {"mediaType": media, "digest": digests, "size": sizes},
    {
        "urls": st.lists(texts, max_size=2),
        "annotations": annotations,
        "platform": platform,
        "artifactType": media,
        "data": texts,
    },
)
descriptors = st.lists(descriptor, max_size=3)
cache_config_descriptor = _open(
    {"mediaType": st.just(mt.CACHE_CONFIG), "digest": digests, "size": sizes}, {"annotations": annotations}
)
manifest_keys = {"artifactType": media, "subject": descriptor, "annotations": annotations}
image_manifest = _open(
    {"schemaVersion": st.just(2), "config": descriptor | cache_config_descriptor, "layers": descriptors},
    {"mediaType": st.just(mt.OCI_MANIFEST), **manifest_keys},
)
image_index = _open(
    {"schemaVersion": st.just(2), "manifests": descriptors},
    {"mediaType": st.just(mt.OCI_INDEX), **manifest_keys},
)
docker_list = _open(
    {"schemaVersion": st.just(2), "mediaType": st.just(mt.DOCKER_LIST), "manifests": descriptors}, {}
)
foreign_keys = {
    "schemaVersion": st.just(2) | st.integers(),
    "mediaType": media,
    "config": descriptor,
    "layers": descriptors,
    "manifests": descriptors,
    "blobs": descriptors,
    **manifest_keys,
}
two = {"schemaVersion": st.just(2)}
untyped = {k: v for k, v in foreign_keys.items() if k != "mediaType"}
foreign = st.one_of(
    _open(
        {
            **two,
            "mediaType": st.sampled_from([mt.OCI_MANIFEST, mt.DOCKER_MANIFEST]),
            "config": descriptor,
            "layers": descriptors,
        },
        foreign_keys,
    ),
    _open(
        {**two, "mediaType": st.sampled_from([mt.OCI_INDEX, mt.DOCKER_LIST]), "manifests": descriptors},
        foreign_keys,
    ),
    _open({**two, "config": descriptor, "layers": descriptors}, untyped),
    _open({**two, "manifests": descriptors}, untyped),
    _open({"mediaType": st.just(mt.OCI_ARTIFACT_MANIFEST)}, foreign_keys),
    _open({}, foreign_keys),  # anything: the allOf decides
)
layer_annotations = _open({}, {"mediaType": media, "diffID": digests, "size": sizes, "createdAt": texts})
config_layer = _open(
    {"blob": digests},
    {"parent": st.integers(min_value=-1, max_value=2**70), "annotations": layer_annotations},
)
record = _open(
    {"digest": texts},
    {
        "layers": st.lists(_open({"layer": indexes}, {"createdAt": texts}), max_size=2),
        "chains": st.lists(
            _open({}, {"layers": st.lists(indexes, max_size=2), "createdAt": texts}), max_size=2
        ),
        "inputs": st.lists(st.lists(_open({"link": indexes}, {"selector": texts}), max_size=2), max_size=2),
    },
)
cacheconfig = _open(
    {}, {"layers": st.lists(config_layer, max_size=3), "records": st.lists(record, max_size=3)}
)
oci_layout = _open({"imageLayoutVersion": texts}, {})

VALID = {
    "descriptor": descriptor,
    "image-manifest": image_manifest,
    "image-index": image_index,
    "docker-manifest-list": docker_list,
    "foreign-manifest": foreign,
    "cacheconfig": cacheconfig,
    "oci-layout": oci_layout,
}

# Values that break (or only look like they break) a schema somewhere.
ODD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -2,
    1,
    2,
    3,
    1.0,
    2.0,
    -1.0,
    -0.0,
    2.5,
    1e300,
    float("inf"),
    float(2**63),
    float(2**63 - 1024),
    INT64,
    2**63,
    2**64,
    10**30,
    -(2**63),
    -(2**63) - 1,
    "",
    "x",
    "2",
    [],
    {},
    [1],
    ["x"],
    [[]],
    [{}],
    {"a": 1},
    {"a": "b"},
    *DIGESTS[:3],
    *BAD_DIGESTS,
    *MEDIA,
    {"mediaType": "x", "digest": SHA256, "size": 1},
    {"mediaType": "x", "digest": BAD_DIGESTS[0], "size": 1},
    {"architecture": "a", "os": "o"},
    [{"mediaType": "x", "digest": SHA256, "size": 1}],
    [{"blob": SHA256}],
    [{"layer": 0}],
    [[{"link": 0}]],
    "\ud800",
]
# What each key is likely to be set to wrongly (or almost rightly), besides anything in ODD.
_INTS: list[Any] = [
    0,
    1,
    -1,
    -2,
    2,
    1.0,
    -1.0,
    0.5,
    True,
    "1",
    INT64,
    2**63,
    float(2**63),
    10**30,
    -(10**30),
    None,
]
NEAR: dict[str, list[Any]] = {
    "digest": DIGESTS + BAD_DIGESTS,
    "blob": DIGESTS + BAD_DIGESTS,
    "diffID": DIGESTS + BAD_DIGESTS,
    "size": _INTS,
    "parent": _INTS,
    "layer": _INTS,
    "link": _INTS,
    "schemaVersion": [2, 2.0, 1, 3, True, "2", 10**30, 2.5, None],
    "mediaType": [*MEDIA, None, 1, ["x"]],
    "artifactType": [*MEDIA, None, 1],
    "annotations": [{}, {"a": "b"}, {"a": 1}, {"a": None}, ["a"], "a", None],
    "layers": [[], [{}], [1], None, {}],
    "manifests": [[], [{}], None, {}],
    "records": [[], [{}], [{"digest": 1}], None],
    "urls": [[], ["x"], [1], "x"],
    "platform": [
        {"architecture": "a", "os": "o"},
        {"architecture": "a"},
        {"os": "o"},
        {"architecture": "a", "os": "o", "os.features": "x"},
        "x",
    ],
}
KEYS = [
    "mediaType",
    "digest",
    "size",
    "urls",
    "annotations",
    "platform",
    "artifactType",
    "data",
    "schemaVersion",
    "config",
    "layers",
    "manifests",
    "blobs",
    "subject",
    "records",
    "blob",
    "parent",
    "diffID",
    "createdAt",
    "layer",
    "link",
    "selector",
    "chains",
    "inputs",
    "architecture",
    "os",
    "os.version",
    "os.features",
    "variant",
    "features",
    "imageLayoutVersion",
    "unknown",
]


@pytest.mark.parametrize("schema", INPUT_SCHEMAS)
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_and_mutated_documents(schema: str, data: st.DataObject) -> None:
    doc = data.draw(VALID[schema], label="valid")
    agree(doc, schema)  # valid but for a foreign document's allOf, which mutations also find
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="mutations")):
        path = data.draw(st.sampled_from(json_paths(doc)), label="path")
        action = data.draw(st.sampled_from(["set", "set", "delete", "add"]), label="action")
        key = data.draw(st.sampled_from(KEYS), label="key")
        target = key if action == "add" else (path[-1] if path else "")
        near = NEAR.get(target) if isinstance(target, str) else None
        values = st.sampled_from(ODD) | json_values
        value = data.draw(st.sampled_from(near) | values if near else values, label="value")
        doc = mutate(doc, path, action, key, value)
        agree(doc, schema)


@pytest.mark.parametrize("schema", INPUT_SCHEMAS)
def test_generated_documents_are_mostly_valid(schema: str) -> None:
    """The generators make valid documents (what the mutations start from), not noise."""
    verdicts: list[bool] = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(VALID[schema])
    def judge(doc: Any) -> None:
        verdicts.append(agree(doc, schema))

    judge()
    assert sum(verdicts) >= (0.5 if schema == "foreign-manifest" else 0.9) * len(verdicts)


@pytest.mark.parametrize(
    ("schema", "doc", "valid"),
    [
        # JSON Schema's integers are numbers of integral value; the decoder reads them as ints
        ("descriptor", {"mediaType": "x", "digest": SHA256, "size": 1.0}, True),
        ("descriptor", {"mediaType": "x", "digest": SHA256, "size": -0.0}, True),
        ("descriptor", {"mediaType": "x", "digest": SHA256, "size": float(2**63)}, False),
        ("descriptor", {"mediaType": "x", "digest": SHA256, "size": True}, False),
        ("image-index", {"schemaVersion": 2.0, "manifests": []}, True),
        ("image-index", {"schemaVersion": True, "manifests": []}, False),
        ("cacheconfig", {"layers": [{"blob": SHA256, "parent": 10**30}]}, True),
        ("cacheconfig", {"records": [{"digest": "k", "layers": [{"layer": 1e300}]}]}, True),
        ("cacheconfig", {"records": [{"digest": "k", "layers": [{"layer": float("inf")}]}]}, False),
        # digests: the grammar for any algorithm, the exact forms for sha256 and sha512
        ("descriptor", {"mediaType": "x", "digest": "sha384:" + "0" * 3, "size": 1}, True),
        ("descriptor", {"mediaType": "x", "digest": "sha256:" + "0" * 63, "size": 1}, False),
        ("cacheconfig", {"layers": [{"blob": SHA256, "annotations": {"diffID": "x"}}]}, False),
        # the foreign schema's allOf
        ("foreign-manifest", {}, False),
        ("foreign-manifest", {"mediaType": "x/y"}, True),
        (
            "foreign-manifest",
            {
                "mediaType": mt.DOCKER_MANIFEST,
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": SHA256, "size": 1},
            },
            False,
        ),
        ("foreign-manifest", {"schemaVersion": 2, "manifests": []}, True),
        ("foreign-manifest", {"schemaVersion": 3, "manifests": []}, False),
        ("foreign-manifest", {"mediaType": "x/y", "schemaVersion": 3}, True),
        (
            "docker-manifest-list",
            {"schemaVersion": 2, "mediaType": mt.DOCKER_LIST, "manifests": [], "subject": 5},
            True,
        ),
    ],
)
def test_edges(schema: str, doc: Any, valid: bool) -> None:
    assert agree(doc, schema) == valid


def test_integral_floats_become_ints_in_a_copy() -> None:
    doc = {"schemaVersion": 2, "manifests": [{"mediaType": "x", "digest": SHA256, "size": 7.0}]}
    index = decoder.convert_index(doc)
    assert type(index.entries[0].descriptor.size) is int
    assert index.raw is doc and doc["manifests"][0]["size"] == 7.0  # type: ignore[index]


@pytest.mark.parametrize("digest", DIGESTS + BAD_DIGESTS)
def test_digests(digest: str) -> None:
    """descriptor.json#/$defs/digest wherever it is used."""
    valid = digest in DIGESTS
    assert agree({"mediaType": "x", "digest": digest, "size": 1}, "descriptor") == valid
    assert agree({"layers": [{"blob": digest}]}, "cacheconfig") == valid
    assert agree({"layers": [{"blob": SHA256, "annotations": {"diffID": digest}}]}, "cacheconfig") == valid
    subject = {"mediaType": "x", "digest": digest, "size": 1}
    assert agree({"schemaVersion": 2, "manifests": [], "subject": subject}, "image-index") == valid
