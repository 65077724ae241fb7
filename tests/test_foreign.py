"""Foreign content in a cache directory (issue 10, items 1, 12, 13, 14).

An OCI layout may hold more than BuildKit's cache exports: images (OCI, Docker v2 schema 2),
manifest lists, artifacts, referrers, nested indexes. Only cache manifests are exports; the
rest is foreign content: gc keeps all of it that index.json reaches, check verifies it by digest
and size without calling it broken, blobs names each blob by the descriptor that reaches it,
and a foreign document that cannot be read makes gc refuse rather than guess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clirun import Run, run_inprocess
from foreign_helpers import Store, add_everything, sha, tar_gz
from gc_helpers import FIXTURES, blob_names, copy_fixture

from ocicache import api
from ocicache.base.errors import CorruptError
from ocicache.core.gc_plan import Policy
from ocicache.format import documents as docs
from ocicache.format import mediatypes as mt
from ocicache.format.schema import validate
from ocicache.synth import Builder, compact

DOCKER = mt.DOCKER_MANIFEST
Desc = dict[str, object]
BROKEN = ["truncated", "bad-descriptor", "not-a-manifest", "binary", "unknown-type-bad-json"]


def _rich(tmp_path: Path, fixture: str = "a-history-min") -> tuple[Path, Store]:
    """A real BuildKit fixture (its mtimes restored) plus one of each kind of foreign content."""
    root, newest = copy_fixture(fixture, tmp_path)
    return root, add_everything(root, newest + 1_000_000_000)


def _on_disk(root: Path) -> set[str]:
    return {f"sha256:{n}" for n in blob_names(root)}


def _check(run: object, root: Path, *extra: str) -> tuple[Run, dict[str, object]]:
    r = run("check", "--json", *extra, str(root))  # type: ignore[operator]
    doc = json.loads(r.out)
    assert validate(doc, "check") == []
    return r, doc


# -- item 1: gc keeps everything index.json reaches, whatever its media types ------------------
@pytest.mark.parametrize(
    "fixture", ["a-history-min", "c-docker-mediatypes", "d2-image-manifest-false-oci-index"]
)
def test_gc_deletes_no_foreign_blob(tmp_path: Path, fixture: str) -> None:
    root, s = _rich(tmp_path, fixture)
    older = {e.digest for e in api.history(root).exports if not e.referenced_by_index}
    r = run_inprocess("gc", "--grace", "0", "--keep-last", "0", str(root))
    assert r.code == 0, r.err
    assert s.all <= _on_disk(root), sorted(s.all - _on_disk(root))
    assert not (older & _on_disk(root)), "gc did not run: the older exports are still there"
    assert "unparseable" not in r.err and "warning" not in r.err, r.err
    r, doc = _check(run_inprocess, root)
    assert r.code == 0 and doc["ok"], r.out
    # and again: nothing more to do, nothing foreign touched
    r = run_inprocess("gc", "--grace", "0", "--keep-last", "0", "--json", str(root))
    assert r.code == 0 and json.loads(r.out)["blobs"] == []
    assert s.all <= _on_disk(root)


def test_docker_manifest_list_children_keep_their_configs_and_layers(tmp_path: Path) -> None:
    """The report: a Docker manifest list of v2 manifests; gc kept the children but deleted
    their configs and layers (the image-manifest schema took only the OCI media type)."""
    b = Builder(tmp_path)
    b.export([b.layer("x")])
    s = Store(tmp_path)
    lst = s.docker_list("multi")
    s.tag(lst, "multi")
    children = [d for d, k in s.kinds.items() if k in ("config", "layer")]
    assert len(children) == 4
    api.gc(tmp_path, Policy(grace_ns=0), now_ns=b.clock_ns + 10**12)
    assert s.all <= _on_disk(tmp_path)
    snap = api.read(tmp_path)
    assert set(children) <= snap.inventory.foreign_closure
    assert not snap.inventory.bad_docs


def _broken_child(s: Store, how: str) -> tuple[Desc, str]:
    """An index naming one manifest that cannot be understood; (the index, the bad digest)."""
    image = s.oci_image("ok")
    if how == "truncated":
        bad = s.put(
            compact({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST})[:-9], mt.OCI_MANIFEST, "manifest"
        )
    elif how == "bad-descriptor":
        bad = s.doc(
            {"schemaVersion": 2, "mediaType": DOCKER, "config": {"digest": "nope"}, "layers": [image]},
            DOCKER,
            "manifest",
        )
    elif how == "not-a-manifest":
        bad = s.put(compact({"hello": "world"}), mt.OCI_MANIFEST, "manifest")
    elif how == "binary":
        bad = s.put(tar_gz("x", b"y"), DOCKER, "manifest")
    elif how == "unknown-type-bad-json":
        bad = s.put(b'{"manifests": [', "application/vnd.example.manifest+json", "manifest")
    else:
        raise AssertionError(how)
    return s.index([image, bad]), bad["digest"]


@pytest.mark.parametrize("how", BROKEN)
def test_gc_refuses_when_a_foreign_document_cannot_be_understood(tmp_path: Path, how: str) -> None:
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    index, bad = _broken_child(s, how)
    s.tag(index, "broken")
    before = _on_disk(root)
    for args in (("gc", "--grace", "0", str(root)), ("gc", "--dry-run", "--grace", "0", str(root))):
        r = run_inprocess(*args)
        assert r.code == 6, (how, r.code, r.err)
        assert bad[7:] in r.err and "nothing deleted" in r.err, r.err
    assert _on_disk(root) == before
    r, doc = _check(run_inprocess, root, "--quick")
    assert r.code == 1, (how, r.out)
    errors = [f for f in doc["findings"] if f["severity"] == "error"]  # type: ignore[index]
    assert {f["digest"] for f in errors} == {bad}, errors
    assert all(f["code"] == "invalid-document" for f in errors)
    h = json.loads(run_inprocess("history", "--json", str(root)).out)
    entry = next(f for f in h["foreign"] if f["refName"] == "broken")
    assert not entry["complete"] and bad in entry["problems"][0]
    assert "1 incomplete or unreadable" in run_inprocess("history", str(root)).out
    assert "UNREADABLE" in run_inprocess("history", "--all", str(root)).out


def test_unknown_media_type_that_is_not_json_is_a_leaf(tmp_path: Path) -> None:
    """An index entry of an unknown media type whose bytes are not JSON references nothing we
    could read: kept, not a reason to refuse."""
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    odd = s.put(b"\x89PNG binary", "application/vnd.example.thing", "manifest")
    s.tag(s.index([odd, s.oci_image("fine")]), "odd")
    r = run_inprocess("gc", "--grace", "0", str(root))
    assert r.code == 0, r.err
    assert s.all <= _on_disk(root)
    assert _check(run_inprocess, root)[0].code == 0


# -- item 12: foreign blobs are checked by digest and size, classified by their descriptors ----
def test_check_and_blobs_on_foreign_content(tmp_path: Path) -> None:
    root, s = _rich(tmp_path)
    r, doc = _check(run_inprocess, root)
    assert r.code == 0 and doc["ok"], r.out
    about = [f for f in doc["findings"] if f["digest"] in s.all]  # type: ignore[index]
    assert about == [], about
    for again in ("first", "again"):  # the second run reads the kept blob facts
        rows = json.loads(run_inprocess("blobs", "--json", str(root)).out)
        assert validate(rows, "blobs") == []
        kinds = {b["digest"]: b["kind"] for b in rows["blobs"]}
        assert {d: kinds[d] for d in s.all} == s.kinds, again
        reached = {b["digest"] for b in rows["blobs"] if b["fromIndex"]}
        assert s.all <= reached, (again, s.all - reached)
    r = run_inprocess("gc", "--dry-run", "--grace", "0", str(root))
    assert r.code == 0 and r.err == "", r.err  # no warning per layer
    assert not api.read(root).inventory.bad_docs


def test_foreign_size_mismatch_is_an_error(tmp_path: Path) -> None:
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    layer = s.put(tar_gz("a", b"abc"), "application/vnd.oci.image.layer.v1.tar+gzip", "layer")
    lying = {**layer, "size": layer["size"] + 1}
    image = s.doc(
        {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": s.empty(), "layers": [lying]},
        mt.OCI_MANIFEST,
        "manifest",
    )
    s.tag(image, "img")
    r, doc = _check(run_inprocess, root, "--quick")
    assert r.code == 1
    found = [(f["code"], f["digest"]) for f in doc["findings"] if f["severity"] == "error"]
    assert found == [("size-mismatch", layer["digest"])]


def test_foreign_digest_mismatch_is_an_error(tmp_path: Path) -> None:
    root, s = _rich(tmp_path)
    victim = next(d for d, k in sorted(s.kinds.items()) if k == "layer")
    path = root / "blobs" / "sha256" / victim[7:]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    r, doc = _check(run_inprocess, root)
    assert r.code == 1
    assert [(f["code"], f["digest"]) for f in doc["findings"] if f["severity"] == "error"] == [
        ("digest-mismatch", victim)
    ]


def test_missing_foreign_blob_is_a_warning_and_gc_still_runs(tmp_path: Path) -> None:
    """A layout may hold part of an image (one platform of an index): legal, said, kept."""
    root, s = _rich(tmp_path)
    layer = next(d for d, k in sorted(s.kinds.items()) if k == "layer")
    (root / "blobs" / "sha256" / layer[7:]).unlink()
    r, doc = _check(run_inprocess, root)
    assert r.code == 0, r.out
    assert [(f["severity"], f["code"], f["digest"]) for f in doc["findings"]] == [
        ("warning", "foreign-missing-blob", layer)
    ]
    assert run_inprocess("gc", "--grace", "0", str(root)).code == 0
    assert s.all - {layer} <= _on_disk(root)


# -- item 13: only cache manifests are exports; foreign entries are shown as such ---------------
def test_history_shows_foreign_entries_not_exports(tmp_path: Path) -> None:
    root, s = _rich(tmp_path)
    exports = {e.digest for e in api.history(FIXTURES / "a-history-min").exports}
    r = run_inprocess("history", "--json", str(root))
    assert r.code == 0 and r.err == "", r.err
    doc = json.loads(r.out)
    assert validate(doc, "history") == []
    assert {e["digest"] for e in doc["exports"]} == exports
    assert all(e["complete"] for e in doc["exports"])
    got = {f["refName"]: (f["digest"], f["kind"], f["complete"]) for f in doc["foreign"]}
    want = {
        tag: (d["digest"], "index" if d["mediaType"] in mt.INDEX_TYPES else "manifest", True)
        for tag, d in s.tags.items()
    }
    assert got == want
    table = run_inprocess("history", str(root)).out
    assert "INCOMPLETE" not in table and "7 foreign index.json entries" in table
    full = run_inprocess("history", "--all", str(root)).out
    for tag, d in s.tags.items():
        assert d["digest"][:19] in full and tag in full, tag
    assert "INCOMPLETE" not in full and "UNREADABLE" not in full
    r = run_inprocess("show", str(root), "docker-v2")
    assert r.code == 5  # a tag of a foreign image names no export


def test_docker_v2_image_tag_does_not_block_gc(tmp_path: Path) -> None:
    root, _ = copy_fixture("f-tags", tmp_path)
    s = Store(root)
    s.tag(s.docker_image("tagged"), "dv2")
    r = run_inprocess("gc", "--grace", "0", "--json", str(root))
    assert r.code == 0, r.err
    assert validate(json.loads(r.out), "gc") == []
    assert s.all <= _on_disk(root)
    assert _check(run_inprocess, root)[0].code == 0


@pytest.mark.parametrize("form", ["image-manifest", "artifact-manifest"])
def test_artifact_entry_is_kept_whole(tmp_path: Path, form: str) -> None:
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    art = s.artifact("x") if form == "image-manifest" else s.withdrawn_artifact("x")
    s.tag(art, "art")
    rows = json.loads(run_inprocess("blobs", "--json", str(root)).out)["blobs"]
    unreferenced = {b["digest"] for b in rows if not b["referenced"]}
    assert not (s.all & unreferenced)
    r = run_inprocess("gc", "--grace", "0", "--keep-last", "0", str(root))
    assert r.code == 0, r.err
    assert s.all <= _on_disk(root)
    doc = json.loads(run_inprocess("history", "--json", str(root)).out)
    assert [(f["refName"], f["artifactType"]) for f in doc["foreign"]] == [
        (
            "art",
            "application/vnd.example.sbom" if form == "image-manifest" else "application/vnd.example.data",
        )
    ]


def test_docker_v2_manifest_with_a_cache_config_is_no_export(tmp_path: Path) -> None:
    """Only the three cache shapes are exports: a Docker v2 manifest naming a cache config is
    foreign (kept whole when tagged; not listed, never judged as a broken export)."""
    b = Builder(tmp_path)
    layer = b.layer("l")
    b.export([layer])
    config = b.blob(compact({"layers": [{"blob": layer["digest"], "parent": -1}], "records": []}))
    data = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": config, "size": 52},
            "layers": [layer],
        }
    )
    odd = b.blob(data)
    b.point("odd", odd, len(data), mt.DOCKER_MANIFEST)
    snap = api.history(tmp_path)
    assert odd not in {e.digest for e in snap.exports}
    assert odd in snap.inventory.foreign and config in snap.inventory.foreign_closure
    assert run_inprocess("gc", "--grace", "0", str(tmp_path)).code == 0
    assert {odd, config, layer["digest"]} <= _on_disk(tmp_path)


# -- referrers and nesting -------------------------------------------------------------------
def test_referrer_in_blobs_follows_its_subject(tmp_path: Path) -> None:
    """A referrer stored in blobs/ only (not in index.json) is kept while its subject is kept,
    and deleted before its subject when the subject goes."""
    b = Builder(tmp_path)
    old = b.export([b.layer("a")])
    b.export([b.layer("a"), b.layer("b")])
    s = Store(tmp_path, b.tick())
    old_desc = {
        "mediaType": mt.OCI_MANIFEST,
        "digest": old,
        "size": (tmp_path / "blobs" / "sha256" / old[7:]).stat().st_size,
    }
    sig = s.signature(old_desc)
    far = b.clock_ns + 10**12
    kept = api.gc(tmp_path, Policy(keep_last=1, grace_ns=0), now_ns=far, dry_run=True)
    assert not ({sig["digest"], *s.all} & {d.digest for d in kept.plan.blobs})
    dropped = api.gc(tmp_path, Policy(grace_ns=0), now_ns=far, dry_run=True)
    order = [d.digest for d in dropped.plan.blobs]
    assert order.index(sig["digest"]) < order.index(old)
    api.gc(tmp_path, Policy(grace_ns=0), now_ns=far)
    assert not ({sig["digest"], old} & _on_disk(tmp_path))


def test_referrer_of_an_index_entry_is_reachable(tmp_path: Path) -> None:
    root, s = _rich(tmp_path)
    image = s.tags["app-image"]["digest"]
    snap = api.read(root)
    refs = snap.inventory.referrers[image]
    assert len(refs) == 3  # the SBOM, the withdrawn-form artifact, the signature (blobs/ only)
    assert set(refs) <= snap.inventory.foreign_closure


def test_nested_indexes_thousands_deep(tmp_path: Path) -> None:
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    top = s.chain(s.oci_image("bottom", layers=1), 3000)
    s.tag(top, "deep")
    assert run_inprocess("history", "--all", str(root)).code == 0
    assert _check(run_inprocess, root, "--quick")[0].code == 0
    assert run_inprocess("gc", "--grace", "0", str(root)).code == 0
    assert s.all <= _on_disk(root)
    # unreferenced, the whole chain goes, outermost index first
    index = json.loads((root / "index.json").read_bytes())
    index["manifests"] = [m for m in index["manifests"] if m["digest"] != top["digest"]]
    (root / "index.json").write_bytes(compact(index))
    plan = api.gc(root, Policy(grace_ns=0), now_ns=s.mtime_ns + 10**12, dry_run=True).plan
    order = [d.digest for d in plan.blobs]
    assert order[0] == top["digest"]
    r = run_inprocess("gc", "--grace", "0", str(root))
    assert r.code == 0, r.err
    assert not (s.all & _on_disk(root))


# -- item 14: documents over 16 MiB are read; over the hard limit they are "too big to read" ---
def _big_export(b: Builder, layers: int, pad: int) -> tuple[str, list[str]]:
    """An export whose manifest and cache config are each over `pad` bytes."""
    descs = [b.layer(f"big{i}") for i in range(layers)]
    descs[0]["annotations"]["example.com/padding"] = "x" * pad
    digest = b.export(descs, tag=None)
    return digest, [d["digest"] for d in descs]


def test_manifest_over_16_mib_is_read(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    b.export([b.layer("small")])
    big, layers = _big_export(b, 300, 17 << 20)
    size = (tmp_path / "blobs" / "sha256" / big[7:]).stat().st_size
    assert size > 16 << 20
    b.point("big", big, size)
    snap = api.history(tmp_path)
    export = next(e for e in snap.exports if e.digest == big)
    assert export.complete and len(export.layers) == 300, export.problems
    r, doc = _check(run_inprocess, tmp_path, "--quick")
    assert r.code == 0, r.out
    assert not [f for f in doc["findings"] if f["code"] == "unreferenced-blob"]
    assert {f["code"] for f in doc["findings"]} == {"oversize-document"}
    assert run_inprocess("gc", "--grace", "0", str(tmp_path)).code == 0
    assert set(layers) <= _on_disk(tmp_path)


def test_cache_config_over_16_mib_is_read(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    layer = b.layer("l")
    records = [{"digest": sha(str(i).encode()), "layers": [{"layer": 0}]} for i in range(170_000)]
    cfg = compact({"layers": [{"blob": layer["digest"], "parent": -1}], "records": records})
    assert len(cfg) > 16 << 20
    cdig = b.blob(cfg)
    m = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": cdig, "size": len(cfg)},
            "layers": [layer],
        }
    )
    b.point("latest", b.blob(m), len(m))
    e = api.history(tmp_path).exports[0]
    assert e.complete and e.cache_config is not None and e.cache_config.record_count == 170_000


@pytest.fixture
def tiny_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """A hard read limit small enough to test with (the real one is 256 MiB)."""
    monkeypatch.setattr(docs, "JSON_LIMIT", 4096)
    return 4096


def test_kept_manifest_too_big_to_read(tmp_path: Path, tiny_limit: int) -> None:
    b = Builder(tmp_path)
    b.export([b.layer("a")])
    big, _ = _big_export(b, 3, 5000)
    size = (tmp_path / "blobs" / "sha256" / big[7:]).stat().st_size
    b.point("big", big, size)
    export = next(e for e in api.history(tmp_path).exports if e.digest == big)
    want = f"too big to read ({size} bytes > {tiny_limit} byte limit)"
    assert export.problems == (f"manifest unreadable: {want}",)
    r, doc = _check(run_inprocess, tmp_path, "--quick")
    assert r.code == 1
    assert [(f["code"], f["digest"]) for f in doc["findings"] if f["severity"] == "error"] == [
        ("document-too-big", big)
    ]
    assert want in r.out
    before = _on_disk(tmp_path)
    r = run_inprocess("gc", "--grace", "0", str(tmp_path))
    assert r.code == 6 and want in r.err and big[7:] in r.err, r.err
    assert _on_disk(tmp_path) == before


def test_foreign_document_too_big_to_read(tmp_path: Path, tiny_limit: int) -> None:
    root, _ = copy_fixture("a-history-min", tmp_path)
    s = Store(root)
    ls = [
        s.put(tar_gz(f"f{i}", b"z"), "application/vnd.oci.image.layer.v1.tar+gzip", "layer")
        for i in range(40)
    ]
    image = s.doc(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": s.empty(),
            "layers": ls,
            "annotations": {"pad": "p" * 5000},
        },
        mt.OCI_MANIFEST,
        "manifest",
    )
    s.tag(s.index([image]), "img")
    r, doc = _check(run_inprocess, root, "--quick")
    assert r.code == 1
    errors = [(f["code"], f["digest"]) for f in doc["findings"] if f["severity"] == "error"]
    assert errors == [("document-too-big", image["digest"])]
    before = _on_disk(root)
    r = run_inprocess("gc", "--grace", "0", str(root))
    assert r.code == 6 and "too big to read" in r.err and image["digest"][7:] in r.err, r.err
    assert _on_disk(root) == before


def test_unreferenced_document_too_big_is_kept(tmp_path: Path, tiny_limit: int) -> None:
    b = Builder(tmp_path)
    b.export([b.layer("a")])
    big, _ = _big_export(b, 2, 5000)  # an older export nobody tags, too big to read
    r, doc = _check(run_inprocess, tmp_path, "--quick")
    assert r.code == 0
    assert [(f["severity"], f["code"]) for f in doc["findings"] if f["digest"] == big] == [
        ("warning", "document-too-big")
    ]
    api.gc(tmp_path, Policy(grace_ns=0), now_ns=b.clock_ns + 10**12)
    assert big in _on_disk(tmp_path)


# -- the facts kept between runs --------------------------------------------------------------
def test_kept_facts_give_the_same_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs that reuse what earlier runs learned (the blob cache) say what a run without it
    says, for foreign content too."""
    root, _ = _rich(tmp_path)
    lines = (
        ("history", "--json"),
        ("blobs", "--json"),
        ("du", "--json"),
        ("gc", "--dry-run", "--json", "--grace", "0"),
    )
    with monkeypatch.context() as m:
        m.setenv("OCICACHE_NO_CACHE", "1")
        want = {line: run_inprocess(line[0], str(root), *line[1:]).out for line in lines}
    for attempt in range(2):
        for line in lines:
            got = run_inprocess(line[0], str(root), *line[1:]).out
            assert _no_now(got) == _no_now(want[line]), (attempt, line)


def _no_now(text: str) -> str:
    return "\n".join(x for x in text.splitlines() if '"now"' not in x)


# -- the foreign-manifest schema ---------------------------------------------------------------
D = {"mediaType": "application/x", "digest": "sha256:" + "ab" * 32, "size": 1}


@pytest.mark.parametrize(
    ("doc", "bad"),
    [
        ({"schemaVersion": 2, "mediaType": DOCKER, "config": D, "layers": [D]}, None),
        ({"schemaVersion": 2, "mediaType": DOCKER, "config": D}, "layers"),
        ({"schemaVersion": 1, "mediaType": DOCKER, "config": D, "layers": []}, "schemaVersion"),
        (
            {"schemaVersion": 2, "mediaType": mt.DOCKER_LIST, "manifests": [{**D, "size": -1}]},
            "manifests[0].size",
        ),
        ({"mediaType": mt.OCI_ARTIFACT_MANIFEST, "blobs": [D], "subject": D}, None),
        ({"mediaType": mt.OCI_ARTIFACT_MANIFEST, "blobs": [{**D, "digest": "../x"}]}, "blobs[0].digest"),
        (
            {"schemaVersion": 2, "config": D, "layers": [], "subject": {"digest": D["digest"]}},
            "subject.mediaType",
        ),
        ({"schemaVersion": 2, "mediaType": "application/vnd.example+json", "manifests": [D]}, None),
        ({"mediaType": 7, "manifests": []}, "mediaType"),
    ],
)
def test_foreign_manifest_schema(doc: dict[str, object], bad: str | None) -> None:
    found = validate(doc, docs.FOREIGN_SCHEMA)
    assert [v.path for v in found][:1] == ([] if bad is None else [bad]), found
    if bad is None:
        other = docs.parse_other_manifest(doc, sha(b"x"), "f")
        assert len(other.children) == len(other.keys) > 0
    else:
        with pytest.raises(CorruptError):
            docs.parse_other_manifest(doc, sha(b"x"), "f")


def test_classify_only_the_three_shapes_are_cache_manifests() -> None:
    cache = {"mediaType": mt.CACHE_CONFIG, "digest": D["digest"], "size": 1}
    a = {"schemaVersion": 2, "config": cache, "layers": []}
    assert docs.classify(a) == docs.KIND_CACHE_MANIFEST
    assert docs.classify({**a, "mediaType": mt.OCI_MANIFEST}) == docs.KIND_CACHE_MANIFEST
    assert docs.classify({**a, "mediaType": DOCKER}) == docs.KIND_MANIFEST
    bc = {"schemaVersion": 2, "manifests": [D, cache]}
    for media_type in (None, mt.OCI_INDEX, mt.DOCKER_LIST):
        doc = bc if media_type is None else {**bc, "mediaType": media_type}
        assert docs.classify(doc) == docs.KIND_CACHE_MANIFEST
    assert docs.classify({**bc, "mediaType": "application/x"}) == docs.KIND_MANIFEST
    assert docs.classify({"mediaType": mt.OCI_ARTIFACT_MANIFEST, "blobs": []}) == docs.KIND_MANIFEST
    # an image config has a `config` key but no layers: not a manifest
    assert docs.classify({"architecture": "amd64", "config": {}}) == docs.KIND_UNKNOWN_JSON


def test_facts_kept_by_the_previous_cache_format_are_not_used(tmp_path: Path) -> None:
    """Format 2 read a Docker v2 manifest as a broken OCI one (an error, no value); a run with
    that fact would list the tag as an INCOMPLETE export and refuse to gc. The facts are
    stamped with the code that made them: this one must be ignored (and, stamped as current, it would
    be used: the stamp is what protects)."""
    import marshal
    import zlib

    from ocicache.store import cache as cache_mod

    root, _ = copy_fixture("a-history-min", tmp_path / "d")
    s = Store(root)
    dv2 = s.docker_image("x")
    s.tag(dv2, "dv2")
    api.history(root, use_cache=True)  # learn the facts
    (path,) = (Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / cache_mod.READS_DIR).iterdir()
    head, _, rest = path.read_bytes().partition(b"\n")
    key, payload = marshal.loads(rest[4:])
    facts = [
        (
            d,
            size,
            docs.KIND_MANIFEST,
            None,
            ("C", "mediaType: expected the OCI manifest type", "f", "mediaType", None, None, None),
        )
        if d == dv2["digest"]
        else (d, size, kind, tag, err)
        for d, size, kind, tag, err in payload[13]
    ]
    assert facts != payload[13]
    # Another key (a miss: the facts are what the reader goes by), the forged fact for dv2.
    body = marshal.dumps((b"x" + key[1:], (*payload[:13], facts, payload[14])))

    def write(stamp: bytes) -> None:
        path.write_bytes(stamp + b"\n" + zlib.crc32(body).to_bytes(4, "big") + body)

    write(head.rsplit(b"/", 1)[0] + b"/" + b"0" * 64)
    snap = api.history(root, use_cache=True)
    assert dv2["digest"] in snap.inventory.foreign and not snap.inventory.bad_docs
    write(head)
    assert dv2["digest"] in api.history(root, use_cache=True).inventory.bad_docs


# -- a REF, pin NAME or unpin NAME that names foreign content says so ---------------------------
def test_a_ref_naming_an_image_says_it_is_foreign(tmp_path: Path) -> None:
    """Found with real BuildKit images in the layout: `show DIR img` said "no export with this
    tag or digest (tags: latest)", as if the tag did not exist."""
    root, s = _rich(tmp_path)
    run = run_inprocess
    image = s.tags["docker-list"]["digest"]
    for args in (
        ("show", str(root), "docker-list"),
        ("show", str(root), image),
        ("show", str(root), image[:19]),
        ("ref", str(root), "app-image"),
        ("diff", str(root), "nested", "latest"),
        ("gc", "--dry-run", "--keep", "artifact", str(root)),
    ):
        r = run(*args)
        assert r.code == 5, (args, r.code, r.err)
        assert "names foreign content, not a cache export" in r.err, (args, r.err)
        assert "history --all" in r.err, r.err
    r = run("show", str(root), "no-such-tag")
    assert r.code == 5 and "no export with this tag or digest" in r.err, r.err


def test_pin_and_unpin_say_when_a_name_is_an_image(tmp_path: Path) -> None:
    root, s = _rich(tmp_path)
    before = (root / "index.json").read_bytes()
    r = run_inprocess("pin", str(root), "~1", "app-image")
    assert r.code == 6 and "names an image or artifact" in r.err, r.err
    assert "gc then deletes what only that image reaches" in r.err, r.err
    r = run_inprocess("unpin", str(root), "docker-v2")
    assert r.code == 6 and "names an image or artifact" in r.err, r.err
    assert s.tags["docker-v2"]["digest"] in r.err, r.err
    assert (root / "index.json").read_bytes() == before
    # A cache export's tag keeps its own message.
    r = run_inprocess("unpin", str(root), "latest")
    assert r.code == 6 and "is a tag BuildKit wrote" in r.err, r.err
    r = run_inprocess("pin", str(root), "~1", "latest")
    assert r.code == 6 and "is a tag BuildKit wrote" in r.err, r.err
    assert (root / "index.json").read_bytes() == before
