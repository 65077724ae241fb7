"""Fuzz the JSON readers and the REF/digest parsers: only the documented exceptions ever escape."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocicache import api
from ocicache.base.errors import CorruptError, NotFoundError, UsageError
from ocicache.core.refs import resolve
from ocicache.core.repair import salvage_entries
from ocicache.format import documents as docs
from ocicache.format.digest import parse_digest
from ocicache.synth import history_dir

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
DIGEST = "sha256:" + "ab" * 32
KEYS = [
    "schemaVersion",
    "mediaType",
    "manifests",
    "config",
    "layers",
    "records",
    "digest",
    "size",
    "blob",
    "parent",
    "layer",
    "createdAt",
    "annotations",
    "inputs",
]
MEDIA = [
    "application/vnd.buildkit.cacheconfig.v0",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.layer.v1.tar+gzip",
]
# JSON shaped like our documents: the known keys, media types and digests, in any combination.
doc_values = st.recursive(
    json_scalars | st.sampled_from([DIGEST, *MEDIA, -1, 0, 1, 2, 2**63, -(2**63)]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=30,
)


def _parse_all(doc: object) -> None:
    for fn in (
        lambda d: docs.parse_index(d),
        lambda d: docs.parse_cache_manifest(d, DIGEST, "m"),
        lambda d: docs.parse_cache_config(d, DIGEST, "c"),
        lambda d: docs.parse_other_manifest(d, DIGEST, "o"),
    ):
        with contextlib.suppress(CorruptError):
            fn(doc)


@FAST
@given(st.binary(max_size=300))
def test_loads_strict_bytes(data: bytes) -> None:
    try:
        doc = docs.loads_strict(data, "f")
    except CorruptError:
        return
    _parse_all(doc)


@FAST
@given(json_values)
def test_parsers_arbitrary_json(doc: Any) -> None:
    data = json.dumps(doc).encode()
    _parse_all(docs.loads_strict(data, "f"))


@FAST
@given(doc_values)
def test_parsers_document_shaped_json(doc: Any) -> None:
    _parse_all(doc)
    docs.classify(doc)


@FAST
@given(st.binary(max_size=400))
def test_salvage_never_raises(data: bytes) -> None:
    for entry in salvage_entries(b'{"schemaVersion":2,"manifests":[' + data):
        parse_digest(entry["digest"])


@FAST
@given(st.text(max_size=300) | st.from_regex(r"[a-z0-9+._-]{1,10}:[a-zA-Z0-9=_-]{0,140}"))
def test_parse_digest(text: str) -> None:
    try:
        d = parse_digest(text)
    except UsageError:
        return
    assert "/" not in d.encoded and ".." not in d.encoded
    assert str(d) == text


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    root = tmp_path_factory.mktemp("fuzz") / "cache"
    history_dir(root, exports=4, layers=2, tags=("latest", "beta"))
    return api.read(root).exports


@FAST
@given(st.text(max_size=80) | st.from_regex(r"(~[0-9]{1,12}|(sha256:)?[0-9a-f]{1,70})"))
def test_resolve(exports: list[Any], ref: str) -> None:
    with contextlib.suppress(NotFoundError, UsageError):
        resolve(exports, ref)


@pytest.mark.slow
def test_fixture_documents_survive_mutation() -> None:
    """Every real document with one key dropped or one value replaced: CorruptError or a value."""
    fixtures = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
    small = [b for b in sorted(fixtures.glob("[acd]*/blobs/sha256/*")) if b.stat().st_size < 3000]
    for blob in small[:8]:
        try:
            doc = json.loads(blob.read_bytes())
        except (UnicodeDecodeError, ValueError):
            continue
        _mutate_walk(doc, lambda d: _parse_all(d))


def _mutate_walk(doc: Any, check: Any) -> None:
    root = doc
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        items = (
            list(node.items())
            if isinstance(node, dict)
            else list(enumerate(node))
            if isinstance(node, list)
            else []
        )
        for key, value in items:
            for replacement in (None, -1, 2**64, "x", {}):
                node[key] = replacement
                check(root)
            node[key] = value
            stack.append(value)


@settings(max_examples=40, deadline=None)
@given(index=doc_values, blobs=st.lists(doc_values, max_size=3))
def test_whole_directory(index: Any, blobs: list[Any]) -> None:
    """Any JSON as index.json and as blobs: read and check report, never crash."""
    import hashlib
    import tempfile

    from ocicache.base.errors import OcicacheError
    from ocicache.core.check import check

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "index.json").write_text(json.dumps(index))
        digests = []
        for doc in blobs:
            data = json.dumps(doc).encode()
            hexpart = hashlib.sha256(data).hexdigest()
            (root / "blobs" / "sha256" / hexpart).write_bytes(data)
            digests.append("sha256:" + hexpart)
        # Point the index (and the documents) at each other now and then.
        if isinstance(index, dict) and digests:
            index["manifests"] = [{"mediaType": MEDIA[1], "digest": d, "size": 1} for d in digests]
            (root / "index.json").write_text(json.dumps(index))
        try:
            snap = api.read(root)
            check(snap)
            api.check(root, quick=False, workers=1)
        except OcicacheError:
            pass


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else []
    for k, v in items:
        out.extend(_nodes(v, (*path, k)))
    return out


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return doc


@settings(max_examples=60, deadline=None)
@given(
    which=st.sampled_from(["config", "manifest"]),
    pick=st.integers(min_value=0),
    value=doc_values | st.sampled_from([-1, 0, 1, 5, 2**63, "sha256:" + "0" * 64]),
)
def test_mutated_export(which: str, pick: int, value: Any) -> None:
    """A real-shaped export with one node of its config or manifest replaced (digests kept
    right): history, show and check report it, never crash."""
    import tempfile

    from ocicache.base.errors import OcicacheError
    from ocicache.core.check import check
    from ocicache.synth import Builder, compact

    with tempfile.TemporaryDirectory() as tmp:
        b = Builder(Path(tmp))
        layers = [b.layer(f"l{i}") for i in range(3)]
        good = b.export(layers)
        manifest = json.loads((Path(tmp) / "blobs/sha256" / good[7:]).read_bytes())
        if which == "config":
            cdig = manifest["config"]["digest"]
            config = json.loads((Path(tmp) / "blobs/sha256" / cdig[7:]).read_bytes())
            paths = _nodes(config)
            config = _replace(config, paths[pick % len(paths)], value)
            data = compact(config)
            manifest["config"] = {**manifest["config"], "digest": b.blob(data), "size": len(data)}
        else:
            paths = _nodes(manifest)
            manifest = _replace(manifest, paths[pick % len(paths)], value)
        mdata = compact(manifest)
        b.point("latest", b.blob(mdata), len(mdata))
        try:
            snap = api.read(tmp)
            check(snap)
            for e in snap.exports:
                api.show(tmp, e.digest)
        except OcicacheError:
            pass
