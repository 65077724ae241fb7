"""The decoder's two ways into its Structs agree: decoder.decode_blob (msgspec reads the bytes)
never answers where converting the decoded document would refuse or answer differently.

The document way (loads_blob -> classify -> parse_*: msgspec.convert of what Python's json
decoded) is the reference: it keeps loads_blob's rules and messages. On every real and
synthetic document the bytes way must answer, and answer the same, field by field and type by
type; on mutated documents it may decline (None), but whatever it answers the document way must
accept and answer identically. (That the Structs accept what the schemas accept is
test_decoder_schemas.py.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docpaths import json_paths
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import mutate

from ocicache.base.errors import CorruptError
from ocicache.format import documents as docs
from ocicache.format import mediatypes as mt
from ocicache.format.decoder import decode_blob
from ocicache.format.model import CacheConfig, CacheManifest, OtherManifest
from ocicache.synth import Builder, compact, history_dir

REPO = Path(__file__).parent.parent
FIXTURES = REPO / "fixtures" / "buildkit-v0.32.2"
DIGEST = "sha256:" + "ab" * 32


def slow(data: bytes, digest: str = DIGEST) -> tuple[str, object | None]:
    """The reference: the document way with these bytes (CorruptError if bad)."""
    doc = docs.loads_blob(data, "f")
    kind = docs.classify(doc)
    if kind == docs.KIND_CACHE_MANIFEST:
        return kind, docs.parse_cache_manifest(doc, digest, "f")
    if kind == docs.KIND_CACHE_CONFIG:
        return kind, docs.parse_cache_config(doc, digest, "f")
    if kind == docs.KIND_MANIFEST:
        return kind, docs.parse_other_manifest(doc, digest, "f")
    return kind, None


def typed(value: object) -> object:
    """`value` as nested tuples that carry each leaf's type: 1, 1.0 and True differ."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__, *(typed(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, dict):
        return ("dict", tuple(sorted((typed(k), typed(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(typed(v) for v in value))
    return (type(value).__name__, value)


def assert_sound(data: bytes, digest: str = DIGEST) -> bool:
    """Whenever the bytes way answers, the document way accepts and answers the same, and
    documents.read_document gives that answer; True when the bytes way answered."""
    fast = decode_blob(data, digest, "f")
    if fast is None:
        try:
            reference = slow(data, digest)
        except CorruptError as e:
            _, value, error = docs.read_document(data, digest, "f")
            assert value is None and error is not None and str(error) == str(e)
        else:
            assert typed(docs.read_document(data, digest, "f")[:2]) == typed(reference)
        return False
    try:
        reference = slow(data, digest)
    except CorruptError as e:
        raise AssertionError(f"the bytes way accepted what the document way refuses: {e}\n{data!r}") from None
    assert typed(fast) == typed(reference), data
    return True


# -- real and synthetic documents: the bytes way answers, and answers the same --------------
def _blobs(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted((root / "blobs" / "sha256").iterdir()):
        data = path.read_bytes()
        if docs.looks_like_json(data[:64]):
            yield "sha256:" + path.name, data


def _assert_fast_equals_slow(root: Path) -> set[str]:
    """Every JSON document in `root` takes the bytes way with the document way's answer; the
    shapes seen (and "config", "foreign")."""
    shapes: set[str] = set()
    for digest, data in _blobs(root):
        try:
            reference = slow(data, digest)
        except CorruptError:
            assert decode_blob(data, digest, "f") is None
            continue
        fast = decode_blob(data, digest, "f")
        assert fast is not None, f"{root.name}: {digest} ({reference[0]}) missed the bytes way"
        assert typed(fast) == typed(reference), digest
        value = fast[1]
        shapes.add(
            value.shape
            if isinstance(value, CacheManifest)
            else "config"
            if isinstance(value, CacheConfig)
            else "foreign"
            if isinstance(value, OtherManifest)
            else str(value)
        )
    return shapes


def test_every_fixture_document() -> None:
    shapes: set[str] = set()
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        shapes |= _assert_fast_equals_slow(case)
    assert shapes == {mt.SHAPE_A, mt.SHAPE_B, mt.SHAPE_C, "config"}


def test_synthetic_documents(tmp_path: Path) -> None:
    history_dir(tmp_path / "h", exports=3, layers=4, tags=("latest", "beta"), shared=2)
    b = Builder(tmp_path / "s")
    layers = [b.layer(f"l{i}") for i in range(4)]
    for shape in (mt.SHAPE_A, mt.SHAPE_B, mt.SHAPE_C):
        b.export(layers, tag=shape, shape=shape, parents=[-1, 0, 0, 2])
    b.export(layers[:2], tag="loop", parents=[1, 0])  # a parent loop: same problems both ways
    assert _assert_fast_equals_slow(tmp_path / "h") == {mt.SHAPE_A, "config"}
    assert _assert_fast_equals_slow(tmp_path / "s") == {mt.SHAPE_A, mt.SHAPE_B, mt.SHAPE_C, "config"}


def test_benchmark_generator_documents(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gen
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    gen.generate(tmp_path / "g", gen.Shape(exports=3, layers=5, new=2, orphans=2))
    assert _assert_fast_equals_slow(tmp_path / "g") == {mt.SHAPE_A, "config"}


# -- mutated documents: whatever the bytes way answers, the document way answers too --------
L0, L1 = "sha256:" + "01" * 32, "sha256:" + "02" * 32
TIME = "2026-09-21T10:11:12.123456789Z"
SEEDS: list[Any] = [
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.CACHE_CONFIG, "digest": DIGEST, "size": 300},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": L0,
                "size": 10,
                "annotations": {"buildkit/createdat": TIME},
            },
            {"mediaType": mt.OCI_MANIFEST, "digest": L1, "size": 5},
        ],
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": L0, "size": 10},
            {"mediaType": mt.CACHE_CONFIG, "digest": DIGEST, "size": 300},
        ],
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_LIST,
        "manifests": [
            {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": L0, "size": 10},
            {"mediaType": mt.CACHE_CONFIG, "digest": DIGEST, "size": 300},
        ],
    },
    {
        "layers": [{"blob": L0, "parent": -1}, {"blob": L1}],
        "records": [
            {
                "digest": "k0",
                "layers": [{"layer": 1, "createdAt": TIME}],
                "inputs": [[{"link": 0, "selector": "s"}]],
            },
            {"digest": "k1", "layers": [{"layer": 0}, {"layer": 1, "createdAt": ""}]},
        ],
    },
]
SEEDS += [
    {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": L1, "size": 7},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": L0,
                "size": 10,
                "urls": ["https://x"],
            }
        ],
    },
    {
        "mediaType": mt.OCI_ARTIFACT_MANIFEST,
        "artifactType": "x/y",
        "blobs": [{"mediaType": "application/x", "digest": L0, "size": 1, "data": "AA=="}],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": L1, "size": 5},
    },
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "annotations": {"a": "b"},
        "manifests": [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": L0,
                "size": 10,
                "platform": {"architecture": "amd64", "os": "linux", "os.features": ["f"]},
            }
        ],
    },
    {
        "records": [{"digest": "k", "chains": [{"layers": [0], "createdAt": TIME}]}],
        "layers": [
            {"blob": L0, "annotations": {"diffID": L1, "size": 3, "createdAt": TIME, "mediaType": "x"}}
        ],
    },
]
# Real documents too, the small ones (mutating a 200-layer document teaches nothing more).
SEEDS += [
    json.loads(data)
    for case in sorted(FIXTURES.iterdir())
    if case.is_dir()
    for _, data in _blobs(case)
    if len(data) < 2500
]

ODD: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -2,
    1.0,
    2.0,
    2.5,
    1e400,
    float("nan"),
    float("-inf"),
    "",
    "x",
    2,
    3,
    2**63 - 1,
    2**63,
    2**64,
    10**30,
    -(2**63),
    -(2**63) - 1,
    [],
    {},
    [1],
    {"a": 1},
    {"a": "b"},
    DIGEST,
    DIGEST.upper(),
    DIGEST + "\n",
    " " + DIGEST,
    "sha256:abc",
    "sha512:" + "0" * 128,
    "sha384:" + "0" * 96,
    "md5:0",
    mt.OCI_MANIFEST,
    mt.OCI_INDEX,
    mt.DOCKER_LIST,
    mt.CACHE_CONFIG,
    mt.DOCKER_MANIFEST,
    "0001-01-01T00:00:00Z",
    TIME,
    "\ud800",
    "\x00",
    "é",
    [[{"link": 0}]],
    [{"layer": 0}],
    {"architecture": "a", "os": "o"},
    ["https://x"],
    [{"blob": L0}],
    [{"digest": "d"}],
]
EXTRA_KEYS = [
    "urls",
    "platform",
    "chains",
    "annotations",
    "artifactType",
    "data",
    "subject",
    "config",
    "layers",
    "records",
    "manifests",
    "mediaType",
    "schemaVersion",
    "parent",
    "createdAt",
    "selector",
    "unknown",
    "size",
    "digest",
    "blob",
    "link",
    "layer",
]


def _dumps(doc: Any, dup: tuple[Any, ...] | None, dup_value: Any, first: bool) -> str:
    """Compact JSON, with the object at path `dup` (if any) repeating its first key: the odd
    value first or last. json.dumps writes NaN/Infinity and lone surrogates as escapes."""
    if dup is not None and dup == () and isinstance(doc, dict) and doc:
        key = next(iter(doc))
        items = [(k, _dumps(v, None, None, first)) for k, v in doc.items()]
        extra = (key, json.dumps(dup_value))
        items = [extra, *items] if first else [*items, extra]
        return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in items) + "}"
    if isinstance(doc, dict):
        return (
            "{"
            + ",".join(f"{json.dumps(k)}:{_dumps(v, _sub(dup, k), dup_value, first)}" for k, v in doc.items())
            + "}"
        )
    if isinstance(doc, list):
        return "[" + ",".join(_dumps(v, _sub(dup, i), dup_value, first) for i, v in enumerate(doc)) + "]"
    return json.dumps(doc)


def _sub(path: tuple[Any, ...] | None, part: Any) -> tuple[Any, ...] | None:
    return path[1:] if path and path[0] == part else None


def _bytes_edit(data: bytes, edit: str, at: int) -> bytes:
    """Byte-level damage the tree cannot express."""
    i = at % (len(data) + 1)
    if edit == "latin1":  # not UTF-8
        return data[:i] + b"\xe9" + data[i:]
    if edit == "utf8":  # valid UTF-8, inside a string or not
        return data[:i] + "é".encode() + data[i:]
    if edit == "surrogate":  # UTF-8-encoded surrogate: not UTF-8 for Python
        return data[:i] + b"\xed\xa0\x80" + data[i:]
    if edit == "escape":  # a lone surrogate escape (valid JSON for Python, not for msgspec)
        return data.replace(b'"k0"', b'"\\ud800"').replace(b'"s"', b'"\\udc00x"')
    if edit == "escaped":  # every c as \u0063, in keys and values alike (JSON has no c outside)
        return data.replace(b"c", b"\\u0063")
    if edit == "truncate":
        return data[:i]
    if edit == "space":
        return data[:i] + b" \n\t" + data[i:]
    if edit == "garbage":
        return data + b" x"
    if edit == "bom":
        return b"\xef\xbb\xbf" + data
    if edit == "hugeint":  # over Python's 4300-digit int limit: the document way refuses it
        return data.replace(b'"size":10', b'"size":' + b"9" * 5000, 1).replace(
            b'"layer":1', b'"layer":1' + b"0" * 5000, 1
        )
    if edit == "deep":
        return data[:-1] + b',"unknown":' + b"[" * 5000 + b"]" * 5000 + b"}"
    return data


EDITS = [
    "none",
    "none",
    "none",
    "latin1",
    "utf8",
    "surrogate",
    "escape",
    "escaped",
    "truncate",
    "space",
    "garbage",
    "bom",
    "hugeint",
    "deep",
]


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_fast_answer_is_the_slow_answer(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(SEEDS))
    for _ in range(data.draw(st.integers(min_value=0, max_value=2))):
        path = data.draw(st.sampled_from(json_paths(doc)))
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        key = data.draw(st.sampled_from(EXTRA_KEYS))
        doc = mutate(doc, path, action, key, data.draw(st.sampled_from(ODD)))
    dup = data.draw(st.none() | st.sampled_from(json_paths(doc)))
    text = _dumps(doc, dup, data.draw(st.sampled_from(ODD)), data.draw(st.booleans()))
    raw = _bytes_edit(
        text.encode("utf-8", "surrogatepass"),
        data.draw(st.sampled_from(EDITS)),
        data.draw(st.integers(min_value=0)),
    )
    assert_sound(raw)


@pytest.mark.parametrize("seed", range(8))
def test_every_single_mutation_of_the_seeds(seed: int) -> None:
    """Each node of each hand-written seed set to each odd value, deleted, and given each
    extra key: sound every time, and the bytes way still answers for some (it is not just
    saying None)."""
    doc = SEEDS[seed]
    answered = refused = 0
    for path in json_paths(doc):
        variants = [mutate(doc, path, "delete", "", None)] if path else []
        variants += [mutate(doc, path, "set", "", v) for v in ODD]
        variants += [mutate(doc, path, "add", k, v) for k in EXTRA_KEYS for v in ODD[:12]]
        for variant in variants:
            raw = _dumps(variant, None, None, True).encode("utf-8", "surrogatepass")
            if assert_sound(raw):
                answered += 1
            else:
                refused += 1
    assert answered > 20 and refused > 100, (answered, refused)


@pytest.mark.parametrize(
    ("raw", "fast"),
    [
        (b'{"layers":[{"blob":"%s","parent":7,"parent":-1}],"records":[]}' % L0.encode(), True),
        (b'{"layers":[],"records":[{"digest":"a"}],"records":[]}', True),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"x","mediaType":"%s","digest":"%s","size":1},'
            b'"layers":[]}' % (mt.CACHE_CONFIG.encode(), DIGEST.encode()),
            True,
        ),
        (
            b'{"schemaVersion":2,"config":{"mediaType":"%s","digest":"%s","size":1,'
            b'"annotations":{"a":"1","a":"2"}},"layers":[]}' % (mt.CACHE_CONFIG.encode(), DIGEST.encode()),
            True,
        ),
        # a repeated key spelled with an escape is the same key in both paths
        (b'{"layers":[{"blob":"%s","parent":5,"par\\u0065nt":-1}],"records":[]}' % L0.encode(), True),
        # msgspec checks every occurrence: an invalid first value sends it the document way
        (
            b'{"schemaVersion":"1","schemaVersion":2,"config":{"mediaType":"%s","digest":"%s",'
            b'"size":1},"layers":[]}' % (mt.CACHE_CONFIG.encode(), DIGEST.encode()),
            False,
        ),
    ],
)
def test_repeated_keys_keep_the_last_value(raw: bytes, fast: bool) -> None:
    """Both paths read a repeated key as Go does: its last value counts."""
    slow(raw)  # accepted
    assert assert_sound(raw) == fast


def test_the_forms_each_way_takes() -> None:
    """Every key the schemas name is read from the bytes; an unknown key, an integral float
    where an integer is due and a lone surrogate escape are left to the document way, which
    reads them as it always has (the float as an integer)."""
    config = {"mediaType": mt.CACHE_CONFIG, "digest": DIGEST, "size": 1}
    manifest = {"schemaVersion": 2, "config": config, "layers": []}
    for usual in (
        manifest,
        {**manifest, "config": {**config, "urls": []}},
        {**manifest, "config": {**config, "platform": {"architecture": "a", "os": "o", "os.version": "1"}}},
        {**manifest, "config": {**config, "mediaType": mt.OCI_MANIFEST}},  # foreign
        {"layers": [{"blob": L0, "annotations": {}}], "records": []},
        {"layers": [], "records": [{"digest": "d", "chains": []}]},
        {"layers": []},
        {"records": []},
        {},
    ):  # (the last three: unknown-json)
        assert decode_blob(compact(usual), DIGEST, "f") is not None, usual
        assert assert_sound(compact(usual))
    for odd in (
        {**manifest, "unknown": 1},
        {**manifest, "config": {**config, "size": 1.0}},
        {**manifest, "schemaVersion": 2.0},
        {**manifest, "annotations": {"\ud800": "\udc00"}},
        {"\ud800": 1},
    ):
        data = json.dumps(odd).encode()
        assert decode_blob(data, DIGEST, "f") is None, odd
        assert not assert_sound(data)
        assert docs.read_document(data, DIGEST, "f")[2] is None
    _, value, _ = docs.read_document(compact({**manifest, "config": {**config, "size": 1.0}}), DIGEST, "f")
    assert isinstance(value, CacheManifest) and value.config is not None
    assert type(value.config.size) is int
    _, value, _ = docs.read_document(
        json.dumps(
            {**manifest, "layers": [{**config, "mediaType": "x", "annotations": {"\ud800": "\udc00"}}]}
        ).encode(),
        DIGEST,
        "f",
    )
    assert isinstance(value, CacheManifest)
    assert value.layers[0].annotations == {"\ud800": "\udc00"}


def test_digests_remembered_only_when_valid() -> None:
    """The memo of valid digests never lets an invalid one through afterwards."""
    from ocicache.format import decoder

    bad = "sha256:" + "A" * 64
    good = "sha256:" + hashlib.sha256(b"memo").hexdigest()
    for digest in (good, bad, good, bad):
        doc = compact({"layers": [{"blob": digest}], "records": []})
        assert (decode_blob(doc, DIGEST, "f") is not None) == (digest == good)
    assert good in decoder._valid_digests and bad not in decoder._valid_digests
