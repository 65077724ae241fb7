"""Real images next to a real cache: foreign content written by BuildKit itself.

One BuildKit v0.32.2 daemon (../shared/buildkit; skipped when absent or not root) exports a
cache into DIR four times (two builds on tag `latest`, `mode=max`, shape A; then shape B, an
OCI index, on tag `index` and shape C, a Docker manifest list, on tag `docker`) and writes
images of the same builds: an OCI image and a Docker v2 image (`--output type=oci`,
`oci-mediatypes=false`), a two-platform OCI index with provenance attestations (attestation
manifests with `subject`, the empty config, an in-toto layer), a two-platform Docker manifest
list, and one image BuildKit writes straight into DIR (`type=oci,dest=DIR,tar=false,name=...`).
Each tar's blobs are unpacked into DIR with GNU tar (mtimes of 1970, shared layers replaced by
the same bytes) and its index.json entry appended under its own ref name, as a user storing
images in the same OCI layout would. The images share most layers with the cache exports.

What the commands must say: history lists only the cache exports (the images are `foreign`),
blobs calls every blob by the descriptor that reaches it, check finds nothing wrong, gc drops
the older export and not one image blob (each image in DIR stays byte for byte what BuildKit
wrote), a fresh daemon still imports every step from DIR, and `ref --explain` is right that an
import of an image tag imports nothing. Then images landing while gc runs: re-tagged whole, a
new manifest over moved layers, and real BuildKit writing an image into DIR during gc's settle
wait (it rewrites the layers gc moved: gc once held those copies in its quarantine for ever).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from buildkit_helpers import STEPS, Daemon, cached_steps, context, daemon, needs_buildkit
from clirun import run_inprocess

from ocicache import api
from ocicache.core.gc_plan import Policy
from ocicache.format import mediatypes as mt
from ocicache.format.schema import validate
from ocicache.ops import gc_apply
from ocicache.store.lock import index_lock

pytestmark = [needs_buildkit, pytest.mark.slow]  # real BuildKit: seconds a test
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class Image:
    """One image as BuildKit wrote it: its root descriptor and every blob it reaches (digest ->
    what `ocicache blobs` must call it, and the bytes BuildKit wrote)."""

    tag: str
    root: dict[str, Any]
    kinds: dict[str, str] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)


@dataclass
class World:
    dir: Path  # the cache directory with the images in it, as built (copy before changing it)
    bk: Daemon  # the daemon that wrote it, still running (its build cache holds every step)
    ctx: dict[str, Path]
    exports: dict[str, str]  # name -> manifest digest, in the order exported
    images: dict[str, Image]


def _ok(r: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _read_index(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "index.json").read_bytes())
    return doc


def _last_entry(root: Path, tag: str) -> dict[str, Any]:
    return [e for e in _read_index(root)["manifests"] if e.get("annotations", {}).get(REF_NAME) == tag][-1]


def _walk(
    blobs: dict[str, bytes], root: dict[str, Any], referrers: dict[str, list[dict[str, Any]]] | None = None
) -> dict[str, str]:
    """Every blob an image reaches from its root descriptor, with the kind its descriptor gives
    it (iterative). `subject` names a manifest the index already lists; with `referrers`
    (subject digest -> descriptors of the manifests naming it), those are reached too, as gc
    keeps them (an attestation of an image it keeps)."""
    kinds: dict[str, str] = {}
    stack = [root]
    while stack:
        d = stack.pop()
        digest, media_type = d["digest"], d["mediaType"]
        if kinds.get(digest) in ("index", "manifest"):
            continue
        if media_type in mt.INDEX_TYPES:
            kinds[digest] = "index"
            stack.extend(json.loads(blobs[digest])["manifests"])
        elif media_type in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST):
            kinds[digest] = "manifest"
            doc = json.loads(blobs[digest])
            kinds.setdefault(doc["config"]["digest"], "config")
            for layer in doc["layers"]:
                kinds[layer["digest"]] = "layer"
        else:
            raise AssertionError(f"unexpected media type {media_type} in a BuildKit image")
        stack.extend((referrers or {}).get(digest, ()))
    return kinds


def _referrers(images: dict[str, Image]) -> dict[str, list[dict[str, Any]]]:
    """subject digest -> descriptors of the image manifests (attestations) naming it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for image in images.values():
        for digest, kind in image.kinds.items():
            if kind == "manifest":
                doc = json.loads(image.data[digest])
                if "subject" in doc:
                    out.setdefault(doc["subject"]["digest"], []).append(
                        {"mediaType": doc["mediaType"], "digest": digest}
                    )
    return out


def _store_tar(tar: Path, root: Path, tag: str) -> Image:
    """Unpack the tar's blobs into DIR with GNU tar (existing files replaced with the same
    bytes, mtimes as in the tar) and append its index.json entry under `tag`."""
    with tarfile.open(tar) as t:
        members = {m.name: t.extractfile(m) for m in t.getmembers() if m.isfile()}
        files = {name: f.read() for name, f in members.items() if f is not None}
    blobs = {
        "sha256:" + name.rsplit("/", 1)[1]: data
        for name, data in files.items()
        if name.startswith("blobs/sha256/")
    }
    entry = json.loads(files["index.json"])["manifests"]
    assert len(entry) == 1, entry
    desc = entry[0]
    _ok(subprocess.run(["tar", "-xf", str(tar), "-C", str(root), "blobs"], capture_output=True, text=True))
    index = _read_index(root)
    desc = {**desc, "annotations": {**desc.get("annotations", {}), REF_NAME: tag}}
    index["manifests"].append(desc)
    (root / "index.json").write_bytes(json.dumps(index, separators=(",", ":")).encode())
    kinds = _walk(blobs, desc)
    assert set(kinds) == set(blobs), "the tar holds exactly what its index reaches"
    return Image(tag, desc, kinds, blobs)


def _stored_in_dir(root: Path, tag: str) -> Image:
    """An image BuildKit wrote into DIR itself (tar=false): read back from DIR."""
    desc = _last_entry(root, tag)
    blobs: dict[str, bytes] = {}
    stack = [desc]
    while stack:  # read the documents the walk needs, then the leaves
        d = stack.pop()
        data = (root / "blobs" / "sha256" / d["digest"][7:]).read_bytes()
        blobs[d["digest"]] = data
        if d["mediaType"] in mt.INDEX_TYPES:
            stack.extend(json.loads(data)["manifests"])
        elif d["mediaType"] in (mt.OCI_MANIFEST, mt.DOCKER_MANIFEST):
            doc = json.loads(data)
            stack.extend([doc["config"], *doc["layers"]])
    kinds = _walk(blobs, desc)
    return Image(tag, desc, kinds, {d: blobs[d] for d in kinds})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("realforeign")
    cache = tmp / "cache"
    ctx = {v: context(tmp, v) for v in ("one", "two")}
    exports: dict[str, str] = {}
    images: dict[str, Image] = {}
    with daemon(tmp / "bk") as bk:
        for v in ("one", "two"):
            _ok(bk.build(ctx[v], "--export-cache", f"type=local,dest={cache},mode=max"))
            exports[v] = _last_entry(cache, "latest")["digest"]
        # the other two shapes: an OCI index (B) and a Docker manifest list (C), like images
        for tag, opts in (("index", "image-manifest=false"), ("docker", "oci-mediatypes=false")):
            _ok(bk.build(ctx["two"], "--export-cache", f"type=local,dest={cache},mode=max,{opts},tag={tag}"))
            exports[tag] = _last_entry(cache, tag)["digest"]
        # BuildKit writes an image into DIR itself, tagged with the name's tag, next to the cache
        _ok(bk.build(ctx["one"], "--output", f"type=oci,dest={cache},tar=false,name=example.com/app:in-dir"))
        images["in-dir"] = _stored_in_dir(cache, "in-dir")
        tars = {
            "oci": (ctx["two"], "type=oci", ()),
            "docker": (ctx["two"], "type=oci,oci-mediatypes=false", ()),
            "multi": (
                ctx["one"],
                "type=oci",
                ("--opt", "platform=linux/amd64,linux/386", "--opt", "attest:provenance=mode=max"),
            ),
            "list": (
                ctx["two"],
                "type=oci,oci-mediatypes=false",
                ("--opt", "platform=linux/amd64,linux/386"),
            ),
        }
        for name, (c, output, extra) in tars.items():
            tar = tmp / f"{name}.tar"
            _ok(bk.build(c, "--output", f"{output},dest={tar}", *extra))
            images[name] = _store_tar(tar, cache, f"img-{name}")
        yield World(cache, bk, ctx, exports, images)


def _copy(world: World, dest: Path) -> Path:
    return Path(shutil.copytree(world.dir, dest, symlinks=True))


def _json(run: Any, *args: str) -> dict[str, Any]:
    r = run(*args)
    assert r.code == 0, (args, r.code, r.err)
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def test_buildkit_wrote_what_the_test_is_about(world: World) -> None:
    """The images are what they are meant to be (else the rest proves less than it says)."""
    media = {n: i.root["mediaType"] for n, i in world.images.items()}
    assert media == {
        "in-dir": mt.OCI_MANIFEST,
        "oci": mt.OCI_MANIFEST,
        "docker": mt.DOCKER_MANIFEST,
        "multi": mt.OCI_INDEX,
        "list": mt.DOCKER_LIST,
    }
    multi = world.images["multi"]
    children = json.loads(multi.data[multi.root["digest"]])["manifests"]
    refs = [
        c
        for c in children
        if c.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest"
    ]
    assert len(children) == 4 and len(refs) == 2, children
    att = json.loads(multi.data[refs[0]["digest"]])
    assert att["config"]["mediaType"] == mt.OCI_EMPTY and "subject" in att
    # The images share layers with the cache exports: gc must keep those for the images' sake.
    cache_blobs = {p.name for p in (world.dir / "blobs" / "sha256").iterdir()}
    shared = {d for i in world.images.values() for d, k in i.kinds.items() if k == "layer"}
    assert shared & {"sha256:" + n for n in cache_blobs}


def test_history_lists_only_the_cache_exports(world: World) -> None:
    doc = _json(run_inprocess, "history", "--json", str(world.dir))
    assert validate(doc, "history") == []
    assert {e["digest"] for e in doc["exports"]} == set(world.exports.values())
    index = _read_index(world.dir)["manifests"]
    foreign = [e for e in index if e["digest"] not in world.exports.values()]
    assert [(f["digest"], f["refName"]) for f in doc["foreign"]] == [
        (e["digest"], e["annotations"][REF_NAME]) for e in foreign
    ]
    by_digest = {i.root["digest"]: i for i in world.images.values()}
    data = {d: b for i in world.images.values() for d, b in i.data.items()}
    referrers = _referrers(world.images)
    for f in doc["foreign"]:
        image = by_digest[f["digest"]]
        kept = _walk(data, image.root, referrers)  # the image and the attestations naming it
        assert f["complete"] and not f["missing"] and not f["problems"], f
        assert f["blobs"] == len(kept), (image.tag, f, len(image.kinds))
        assert f["size"] == sum(len(data[d]) for d in kept), (image.tag, f)
    assert not doc["warnings"], doc["warnings"]
    r = run_inprocess("history", str(world.dir))
    assert r.code == 0 and f"+ {len(foreign)} foreign index.json entries" in r.out, r.out
    r = run_inprocess("history", "--all", str(world.dir))
    assert r.code == 0, r.err
    for image in world.images.values():
        assert image.tag in r.out and image.root["digest"][:19] in r.out, (image.tag, r.out)
    r = run_inprocess("ref", str(world.dir))  # the newest export of `latest`, never an image
    assert r.code == 0 and r.out.strip().endswith(f"digest={world.exports['two']}"), r


def test_blobs_classifies_every_image_blob(world: World) -> None:
    doc = _json(run_inprocess, "blobs", "--json", str(world.dir))
    assert validate(doc, "blobs") == []
    got = {b["digest"]: b for b in doc["blobs"]}
    want: dict[str, str] = {}
    for image in world.images.values():
        for digest, kind in image.kinds.items():
            assert want.setdefault(digest, kind) == kind, (digest, kind)
    for digest in want:  # every image blob: index.json reaches it
        assert got[digest]["referenced"] and got[digest]["fromIndex"], got[digest]
    for name, digest in world.exports.items():  # shapes B and C are index-shaped: manifests
        assert got[digest]["kind"] == "manifest", (name, got[digest])
        doc_ = json.loads((world.dir / "blobs" / "sha256" / digest[7:]).read_bytes())
        for d in [doc_.get("config"), *doc_.get("layers", ()), *doc_.get("manifests", ())]:
            if d is not None:
                kind = "cache-config" if d["mediaType"] == mt.CACHE_CONFIG else "layer"
                assert want.setdefault(d["digest"], kind) == kind, (name, d, want[d["digest"]])
    for digest, kind in want.items():
        assert got[digest]["kind"] == kind, (digest, kind, got[digest])
    assert all(b["referenced"] for b in doc["blobs"]), [b for b in doc["blobs"] if not b["referenced"]]
    assert not doc["warnings"], doc["warnings"]


def test_check_finds_nothing_wrong(world: World) -> None:
    r = run_inprocess("check", "--json", str(world.dir), timeout=60)
    doc = json.loads(r.out)
    assert validate(doc, "check") == []
    assert r.code == 0 and doc["ok"], r.out
    assert not [f for f in doc["findings"] if f["severity"] in ("error", "warning")], doc
    assert doc["hashed"] and doc["counts"]["hashedBlobs"] == doc["counts"]["blobs"]


def _not_intact(root: Path, image: Image) -> list[str]:
    """The image's blobs that are not in DIR byte for byte as BuildKit wrote them."""
    bad = []
    for digest, data in image.data.items():
        path = root / "blobs" / "sha256" / digest[7:]
        on_disk = path.read_bytes() if path.exists() else None
        if on_disk != data or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            bad.append(digest)
    return bad


def test_gc_keeps_every_image_blob_and_the_cache_still_imports(world: World, tmp_path: Path) -> None:
    root = _copy(world, tmp_path / "cache")
    older = world.exports["one"]
    before = {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}
    plan = _json(run_inprocess, "gc", "--dry-run", "--json", "--grace", "0", "--keep-last", "0", str(root))
    r = run_inprocess("gc", "--grace", "0", "--keep-last", "0", str(root))
    assert r.code == 0, r.err
    assert "warning" not in r.err, r.err
    after = {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}
    removed = before - after
    assert older in removed, "gc did not drop the older export"
    assert {b["digest"] for b in plan["blobs"]} == removed, (plan, removed)
    for image in world.images.values():
        assert not _not_intact(root, image), (image.tag, _not_intact(root, image))
    doc = _json(run_inprocess, "history", "--json", str(root))
    assert {e["digest"] for e in doc["exports"]} == {world.exports[t] for t in ("two", "index", "docker")}
    assert all(f["complete"] for f in doc["foreign"]) and len(doc["foreign"]) == len(world.images)
    r = run_inprocess("check", str(root), timeout=60)
    assert r.code == 0, r.out + r.err
    assert not (root / ".ocicache").exists()
    # An import from DIR on daemons that never built anything: every step comes from DIR, in
    # each of the three shapes.
    for tag in ("latest", "index", "docker"):
        with daemon(tmp_path / f"fresh-{tag}") as fresh:
            r = _ok(fresh.build(world.ctx["two"], "--import-cache", f"type=local,src={root},tag={tag}"))
            assert cached_steps(r.stderr) == STEPS, (tag, r.stderr[-3000:])


def test_ref_explain_agrees_with_buildkit_on_an_image_tag(world: World, tmp_path: Path) -> None:
    """`ref --explain` says BuildKit skips an import whose tag names an image and builds
    without it; a fresh daemon does exactly that (the build succeeds, nothing is CACHED)."""
    for tag in ("img-oci", "img-multi", "img-list"):
        r = run_inprocess("ref", "--explain", f"type=local,src={world.dir},tag={tag}")
        assert r.code == 1 and "not a cache manifest" in r.out and "skipped" in r.out, r.out
    with daemon(tmp_path / "fresh") as fresh:
        r = _ok(
            fresh.build(
                world.ctx["two"],
                "--import-cache",
                f"type=local,src={world.dir},tag=img-oci",
                "--import-cache",
                f"type=local,src={world.dir},tag=img-list",
            )
        )
        assert cached_steps(r.stderr) == 0, r.stderr[-3000:]


def test_refs_and_names_of_images_say_they_are_images(world: World) -> None:
    root = str(world.dir)
    before = (world.dir / "index.json").read_bytes()
    for image in world.images.values():
        for ref in (image.tag, image.root["digest"], image.root["digest"][:19]):
            r = run_inprocess("show", root, ref)
            assert r.code == 5 and "names foreign content, not a cache export" in r.err, r.err
    r = run_inprocess("unpin", root, "img-docker")
    assert r.code == 6 and "names an image or artifact" in r.err, r.err
    r = run_inprocess("pin", root, "~3", "in-dir")
    assert r.code == 6 and "names an image or artifact" in r.err, r.err
    assert (world.dir / "index.json").read_bytes() == before


# -- images landing while gc runs --------------------------------------------------------------
def _without(world: World, dest: Path, *tags: str) -> tuple[Path, list[dict[str, Any]]]:
    """A copy of DIR whose index.json no longer names the images `tags` (their blobs stay, now
    unreferenced: gc drops them, and with them the layers only the older export "one" and
    those images had); (the copy, the entries taken out)."""
    root = _copy(world, dest)
    index = _read_index(root)
    out = [e for e in index["manifests"] if e.get("annotations", {}).get(REF_NAME) in tags]
    index["manifests"] = [e for e in index["manifests"] if e not in out]
    (root / "index.json").write_bytes(json.dumps(index, separators=(",", ":")).encode())
    return root, out


def _append(root: Path, entry: dict[str, Any]) -> None:
    """BuildKit's index update (appends the entry, under index.json.lock like BuildKit)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with index_lock(fd, timeout=10):
            index = _read_index(root)
            index["manifests"].append(entry)
            (root / "index.json").write_bytes(json.dumps(index, separators=(",", ":")).encode())
    finally:
        os.close(fd)


def _at_settle(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[int]:
    """Run `action` at gc's settle wait: after it moved blobs, before its final re-read."""
    calls: list[int] = []
    original = gc_apply._wait

    def wait(seconds: float) -> None:
        calls.append(1)
        action()
        original(seconds)

    monkeypatch.setattr(gc_apply, "_wait", wait)
    return calls


def _gc0(root: Path) -> None:
    r = api.gc(root, Policy(grace_ns=0))
    assert r.deleted, "gc moved nothing: the test proves nothing"
    assert not r.warnings, r.warnings


def test_image_retagged_while_gc_runs_comes_back_whole(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BuildKit writing an image it already wrote finds every blob present and only appends
    the index.json entry; gc had moved the whole image (it was untagged): its final re-read
    puts the index, its manifests, configs, layers and attestations back."""
    root, out = _without(world, tmp_path / "a", "img-multi", "in-dir")
    entry = next(e for e in out if e["annotations"][REF_NAME] == "img-multi")
    calls = _at_settle(monkeypatch, lambda: _append(root, entry))
    _gc0(root)
    assert calls
    assert not _not_intact(root, world.images["multi"]), _not_intact(root, world.images["multi"])
    assert api.check(root).ok and not (root / ".ocicache").exists()


def test_image_reusing_moved_layers_gets_them_back(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BuildKit found the layers present (before gc moved them) and wrote only the image's
    manifest and config, then the entry: gc's re-read puts the layers back."""
    image = world.images["in-dir"]
    root, out = _without(world, tmp_path / "c", "in-dir", "img-multi")
    entry = next(e for e in out if e["annotations"][REF_NAME] == "in-dir")
    manifest = json.loads(image.data[entry["digest"]])
    written = (entry["digest"], manifest["config"]["digest"])

    def land() -> None:
        for d in written:
            path = root / "blobs" / "sha256" / d[7:]
            assert not path.exists(), "gc was to move it"
            path.write_bytes(image.data[d])
        _append(root, entry)

    _at_settle(monkeypatch, land)
    _gc0(root)
    assert not _not_intact(root, image), _not_intact(root, image)
    assert api.check(root).ok
    assert not (root / ".ocicache").exists(), "duplicates of written blobs held"


def test_image_buildkit_writes_into_dir_while_gc_runs(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real BuildKit writes an image into DIR (`type=oci,tar=false`) during gc's settle wait,
    after gc moved the layers it needs: BuildKit finds them absent and writes them again. The
    image is whole, and gc --grace 0 leaves no copy of them held in its quarantine."""
    root, _ = _without(world, tmp_path / "b", "in-dir", "img-multi")
    logs: list[str] = []

    def build() -> None:
        r = _ok(
            world.bk.build(
                world.ctx["one"], "--output", f"type=oci,dest={root},tar=false,name=example.com/app:late"
            )
        )
        logs.append(r.stderr)

    _at_settle(monkeypatch, build)
    _gc0(root)
    assert logs, "the build did not run during gc"
    late = _stored_in_dir(root, "late")
    assert late.root["digest"] == world.images["in-dir"].root["digest"]  # the same image
    assert not _not_intact(root, world.images["in-dir"]), _not_intact(root, world.images["in-dir"])
    assert api.check(root).ok
    assert not (root / ".ocicache").exists(), list((root / ".ocicache").rglob("*"))


def test_an_image_written_without_a_name_takes_the_cache_tag(world: World, tmp_path: Path) -> None:
    """A BuildKit fact, and what ocicache says about it: `type=oci,dest=DIR,tar=false` with no
    `name` writes the image under ref name `latest`, replacing the cache's `latest` entry
    (the same ociindex code as the cache exporter). The cache export is then an older one
    (gc drops it unless kept), and a plain `--cache-from type=local,src=DIR` imports nothing:
    `ref --explain` says so."""
    root = _copy(world, tmp_path / "cache")
    _ok(world.bk.build(world.ctx["two"], "--output", f"type=oci,dest={root},tar=false"))
    latest = _last_entry(root, "latest")
    assert latest["digest"] not in world.exports.values()
    assert (
        sum(1 for e in _read_index(root)["manifests"] if e.get("annotations", {}).get(REF_NAME) == "latest")
        == 1
    )
    doc = _json(run_inprocess, "history", "--json", str(root))
    two = next(e for e in doc["exports"] if e["digest"] == world.exports["two"])
    assert two["tags"] == [] and not two["current"], two
    assert latest["digest"] in {f["digest"] for f in doc["foreign"]}
    r = run_inprocess("ref", "--explain", f"type=local,src={root}")
    assert r.code == 1 and "not a cache manifest" in r.out and "skipped" in r.out, r.out
