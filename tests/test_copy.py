"""`ocicache copy` on the real fixtures: directory to directory (fixtures/buildkit-v0.32.2), and to,
from and between registries (a real docker-registry serving fixtures/registry, tests/regserver.py);
faults: a digest mismatch at the source, missing blobs, an unreachable registry, a full disk, a
SIGKILL at every point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import json_of, run_inprocess
from conftest import CASES, FIXTURES, ROOT, copy_fixture, tree_state
from regserver import Registry, head_status, registry_truth, start_registry

from ocicache.format.schema import validate
from ocicache.ops.copy import KILL_ENV
from ocicache.store.blobwrite import TEMP_PREFIX


def _copy(*args: str, code: int = 0) -> dict:
    r = run_inprocess("copy", *args, "--json")
    assert r.code == code, r.err
    if code:
        return {"err": r.err}
    doc = json.loads(r.out)
    assert validate(doc, "copy") == [], validate(doc, "copy")
    return doc


def _check_ok(target: str) -> dict:
    doc = json_of("check", target)
    assert doc["ok"], doc["findings"]
    return doc


def _entries(root: Path) -> list[dict]:
    return json.loads((root / "index.json").read_bytes())["manifests"]


def _blob_files(root: Path) -> dict[str, bytes]:
    d = root / "blobs" / "sha256"
    return {p.name: p.read_bytes() for p in d.iterdir()} if d.is_dir() else {}


def _closure(case: str, digest: str) -> set[str]:
    """Every blob an export reaches: its manifest, cache config and layers (from the fixture)."""
    root = FIXTURES / case / "blobs" / "sha256"
    manifest = json.loads((root / digest.split(":")[1]).read_bytes())
    out = {digest}
    for key in ("config", "layers", "manifests"):
        value = manifest.get(key)
        for d in value if isinstance(value, list) else [value] if value else []:
            out.add(d["digest"])
    return out


def _default_export(case: str) -> dict:
    doc = json_of("history", str(FIXTURES / case))
    for e in doc["exports"]:
        if "latest" in e["tags"]:
            return e
    return doc["exports"][0]


# -- directory to directory -------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_dir_to_new_dir_copies_the_default_export_whole(tmp_path: Path, case: str) -> None:
    src = copy_fixture(case, tmp_path, restore_mtimes=True)
    before = tree_state(src)
    dst = tmp_path / "moved" / "cache"  # parents made too
    want = _default_export(case)
    doc = _copy(str(src), str(dst))
    assert tree_state(src) == before  # nothing written to SRC
    assert doc["created"] and doc["directory"] == str(dst) and doc["source"] == str(src)
    (e,) = doc["exports"]
    assert e["digest"] == want["digest"] and e["tags"] == want["tags"]
    assert e["spec"] == f"type=local,src={dst},digest={want['digest']}"
    assert e["copiedBlobs"] == e["blobs"] and e["skippedBlobs"] == 0
    assert e["copiedBytes"] == e["transferredBytes"] == e["bytes"]
    # The blobs are the source's, byte for byte, read-only as BuildKit leaves them; nothing else.
    files = _blob_files(dst)
    assert set(files) == {d.split(":")[1] for d in _closure(case, want["digest"])}
    for name, data in files.items():
        assert data == (src / "blobs" / "sha256" / name).read_bytes()
        assert (dst / "blobs" / "sha256" / name).stat().st_mode & 0o777 == 0o444
    assert (dst / "oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert sorted(os.listdir(dst)) == ["blobs", "index.json", "oci-layout"]
    entries = _entries(dst)
    assert [(x["digest"], x["annotations"]["org.opencontainers.image.ref.name"]) for x in entries] == [
        (want["digest"], t) for t in e["tags"]
    ]
    _check_ok(str(dst))
    assert run_inprocess("ref", str(dst)).out.strip() == e["spec"]


def test_all_copies_every_current_export_and_the_index_matches_byte_for_byte(tmp_path: Path) -> None:
    src = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    dst = tmp_path / "dst"
    doc = _copy(str(src), "--all", str(dst))
    assert [e["tags"] for e in doc["exports"]] == [["beta"], ["alpha"], ["latest"]]  # index order
    # BuildKit's entries, written as BuildKit writes them, in the same order: the same bytes.
    assert (dst / "index.json").read_bytes() == (src / "index.json").read_bytes()
    hist = json_of("history", str(dst))
    assert [(e["digest"], e["tags"]) for e in hist["exports"]] == [
        (e["digest"], e["tags"]) for e in json_of("history", str(src))["exports"] if e["tags"]
    ]
    t = doc["totals"]
    assert t["exports"] == 3 and t["copiedBlobs"] == t["blobs"] == len(_blob_files(dst))
    assert sum(e["sharedBlobs"] for e in doc["exports"]) > 0  # the base layer, copied once
    _check_ok(str(dst))


def test_tag_names_the_copy_and_an_untagged_export_needs_one(tmp_path: Path) -> None:
    src = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    dst = tmp_path / "dst"
    old = json_of("history", str(src))["exports"][3]
    assert old["tags"] == []
    r = run_inprocess("copy", str(src), "~3", str(dst))
    assert r.code == 2 and "--tag" in r.err and old["digest"] in r.err
    assert not dst.exists()  # refused before anything was made
    doc = _copy(str(src), "~3", str(dst), "--tag", "first-alpha")
    assert doc["exports"][0]["digest"] == old["digest"]
    assert [x["annotations"]["org.opencontainers.image.ref.name"] for x in _entries(dst)] == ["first-alpha"]
    spec = run_inprocess("ref", str(dst), "first-alpha").out.strip()
    assert old["digest"] in spec
    # Several REFs: each with its tags.
    doc = _copy(str(src), "alpha", "beta", str(dst))
    assert [e["tags"] for e in doc["exports"]] == [["alpha"], ["beta"]]
    r = run_inprocess("copy", str(src), "alpha", "beta", str(dst), "--tag", "x")
    assert r.code == 2
    r = run_inprocess("copy", str(src), "--all", "alpha", str(dst))
    assert r.code == 2
    r = run_inprocess("copy", str(src), "--tag", "no spaces", str(dst))
    assert r.code == 2


def test_rerun_copies_nothing_and_writes_nothing(tmp_path: Path) -> None:
    src = copy_fixture("l-changed-step", tmp_path, restore_mtimes=True)
    dst = tmp_path / "dst"
    _copy(str(src), "--all", str(dst))
    state = tree_state(dst)
    doc = _copy(str(src), "--all", str(dst))
    assert not doc["created"]
    assert doc["totals"]["copiedBytes"] == 0 and doc["totals"]["copiedBlobs"] == 0
    assert doc["totals"]["skippedBlobs"] == doc["totals"]["blobs"]
    assert tree_state(dst) == state  # not even index.json rewritten


def test_into_an_existing_cache_keeps_every_other_entry_byte_for_byte(tmp_path: Path) -> None:
    src = copy_fixture("l-changed-step", tmp_path / "s", restore_mtimes=True)
    dst = copy_fixture("f-tags", tmp_path / "d", restore_mtimes=True)  # beta, alpha, latest
    old = (dst / "index.json").read_bytes()
    old_text = old.decode()
    raw = [json.dumps(x, separators=(",", ":")) for x in json.loads(old)["manifests"]]
    assert all(r in old_text for r in raw)  # BuildKit's entries are compact, in this key order
    # A new tag: appended, the old text untouched.
    doc = _copy(str(src), str(dst), "--tag", "changed")
    new = (dst / "index.json").read_bytes()
    assert new.startswith(old[: old.rindex(b"]")]) and new[len(old) - 2 : len(old) - 1] == b","
    assert _entries(dst)[-1]["annotations"]["org.opencontainers.image.ref.name"] == "changed"
    assert doc["exports"][0]["skippedBlobs"] == 0
    # An existing tag (alpha, in the middle): replaced as BuildKit does (its entry goes, the new
    # one is appended); every other entry keeps its exact text.
    alpha = _entries(dst)[1]["digest"]
    r = run_inprocess("copy", str(src), str(dst), "--tag", "alpha")
    assert r.code == 0, r.err
    assert f"tag alpha at the destination moved from {alpha}" in r.err
    names = [x["annotations"]["org.opencontainers.image.ref.name"] for x in _entries(dst)]
    assert names == ["beta", "latest", "changed", "alpha"]
    text = (dst / "index.json").read_text()
    assert text.startswith(
        f'{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{raw[0]},{raw[2]},'
    )
    assert raw[1] not in text
    _check_ok(str(dst))
    # What the moved tag named is still on disk: an older export now (gc may drop it).
    assert alpha in {e["digest"] for e in json_of("history", str(dst))["exports"]}


def test_a_pin_or_an_image_under_the_name_is_not_replaced(tmp_path: Path) -> None:
    src = copy_fixture("f-tags", tmp_path / "s", restore_mtimes=True)
    dst = copy_fixture("a-history-min", tmp_path / "d", restore_mtimes=True)
    assert run_inprocess("pin", str(dst), "~1", "keep").code == 0
    state = tree_state(dst)
    r = run_inprocess("copy", str(src), "alpha", str(dst), "--tag", "keep")
    assert r.code == 6 and "pin" in r.err
    assert tree_state(dst) == state  # refused before a blob was written


def test_link_hard_links_the_same_inodes(tmp_path: Path) -> None:
    src = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    before = tree_state(src)
    dst = tmp_path / "dst"
    doc = _copy(str(src), "--all", str(dst), "--link")
    t = doc["totals"]
    assert t["linkedBlobs"] == t["copiedBlobs"] == t["blobs"] and t["transferredBytes"] == 0
    for p in (dst / "blobs" / "sha256").iterdir():
        assert p.stat().st_ino == (src / "blobs" / "sha256" / p.name).stat().st_ino
    assert [x[:2] for x in tree_state(src)] == [x[:2] for x in before]  # names and sizes
    _check_ok(str(dst))


def test_link_across_filesystems_copies(tmp_path: Path) -> None:
    src = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
    other = Path("/var/tmp") if os.stat("/var/tmp").st_dev != os.stat(tmp_path).st_dev else None
    if other is None:
        pytest.skip("no second filesystem to copy to")
    dst = Path(__import__("tempfile").mkdtemp(dir=other)) / "dst"
    try:
        r = run_inprocess("copy", str(src), str(dst), "--link", "--json")
        assert r.code == 0, r.err
        doc = json.loads(r.out)
        assert doc["totals"]["linkedBlobs"] == 0 and doc["totals"]["transferredBytes"] > 0
        assert "different filesystems" in r.err
        _check_ok(str(dst))
    finally:
        shutil.rmtree(dst.parent)


def test_usage_and_target_errors(tmp_path: Path) -> None:
    src = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
    assert run_inprocess("copy", str(src), str(src)).code == 2  # the same directory
    assert run_inprocess("copy", str(src)).code == 2  # no DST
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine\n")
    r = run_inprocess("copy", str(src), str(junk))
    assert r.code == 3 and "not empty" in r.err
    assert sorted(os.listdir(junk)) == ["notes.txt"]
    assert run_inprocess("copy", str(tmp_path / "nope"), str(tmp_path / "x")).code == 3
    assert not (tmp_path / "x").exists()
    assert run_inprocess("copy", str(src), "nosuchtag", str(tmp_path / "y")).code == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    doc = _copy(str(src), str(empty))
    assert doc["created"]
    assert run_inprocess("copy", str(src), str(tmp_path / "z"), "--link", "--insecure").code == 0


# -- faults at the source ----------------------------------------------------------------------
def test_digest_mismatch_at_the_source_leaves_nothing_visible(tmp_path: Path) -> None:
    src = copy_fixture("k-interrupted-export", tmp_path, restore_mtimes=True)
    e = _default_export("k-interrupted-export")
    manifest = json.loads((src / "blobs" / "sha256" / e["digest"].split(":")[1]).read_bytes())
    layer = max(manifest["layers"], key=lambda d: d["size"])["digest"]
    path = src / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    path.chmod(0o444)
    before = tree_state(src)
    dst = tmp_path / "dst"
    r = run_inprocess("copy", str(src), str(dst))
    assert r.code == 4, r.err
    assert str(path) in r.err and "hashes to" in r.err and layer in r.err
    assert tree_state(src) == before
    assert layer.split(":")[1] not in _blob_files(dst)
    assert e["digest"].split(":")[1] not in _blob_files(dst)  # the manifest comes last
    assert _entries(dst) == []
    assert not [p for p in (dst / "blobs" / "sha256").iterdir() if p.name.startswith(TEMP_PREFIX)]
    _check_ok(str(dst))
    # --link verifies too.
    r = run_inprocess("copy", str(src), str(tmp_path / "linked"), "--link")
    assert r.code == 4 and layer.split(":")[1] not in _blob_files(tmp_path / "linked")


def test_missing_blobs_refuse_unless_allowed(tmp_path: Path) -> None:
    src = copy_fixture("l-changed-step", tmp_path, restore_mtimes=True)
    e = _default_export("l-changed-step")
    shown = json_of("show", str(src), e["digest"])["export"]["stack"]
    leaf = next(s["digest"] for s in shown if s["depth"] == max(x["depth"] for x in shown))
    (src / "blobs" / "sha256" / leaf.split(":")[1]).unlink()
    dst = tmp_path / "dst"
    r = run_inprocess("copy", str(src), str(dst))
    assert r.code == 6 and leaf in r.err and "--allow-missing" in r.err
    assert not dst.exists()  # refused before anything was made
    doc = _copy(str(src), str(dst), "--allow-missing")
    (m,) = doc["exports"][0]["missing"]
    assert m["digest"] == leaf and m["steps"] and all(s["effect"] == "rebuild" for s in m["steps"])
    assert "rebuilds" in m["message"]
    assert leaf.split(":")[1] not in _blob_files(dst)
    check = json_of("check", str(dst), code=1)  # the missing layer is reported, nothing else
    assert {f["digest"] for f in check["findings"] if f["severity"] == "error"} == {leaf}
    r = run_inprocess("ref", str(dst))
    assert r.code == 0 and e["digest"] in r.out and "rebuild" in r.err


def test_an_export_buildkit_would_not_import_is_refused(tmp_path: Path) -> None:
    src = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
    e = _default_export("a-history-min")
    manifest = json.loads((src / "blobs" / "sha256" / e["digest"].split(":")[1]).read_bytes())
    (src / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).unlink()
    r = run_inprocess("copy", str(src), str(tmp_path / "dst"), "--allow-missing")
    assert r.code == 6 and "cache config" in r.err


# -- faults at the destination ------------------------------------------------------------------
def _run_killed(src: Path, dst: Path, after: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OCICACHE_NO_CACHE": "1", KILL_ENV: after}
    return subprocess.run(
        [sys.executable, "-m", "ocicache", "copy", str(src), *extra, str(dst)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _consistent(dst: Path) -> None:
    """Every entry of index.json names an export whose blobs are all there (check passes: a
    temp file a killed write left is a warning, never an error)."""
    doc = json_of("check", str(dst))
    assert doc["ok"], doc["findings"]
    for x in _entries(dst):
        assert (dst / "blobs" / "sha256" / x["digest"].split(":")[1]).is_file()


@pytest.mark.slow
def test_sigkill_at_every_point_then_a_rerun_finishes(tmp_path: Path) -> None:
    src = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    whole = tmp_path / "whole"
    total = _copy(str(src), "--all", str(whole))["totals"]["copiedBlobs"]
    for n in range(total + 1):
        for after in (str(n), f"{n}.5") if n < total else (str(n),):
            dst = tmp_path / f"dst-{after}"
            p = _run_killed(src, dst, after, "--all")
            assert p.returncode == -signal.SIGKILL, (after, p.stderr)
            _consistent(dst)
            assert _entries(dst) == []  # index.json is written last
            if after.endswith(".5"):
                assert [q for q in (dst / "blobs" / "sha256").iterdir() if q.name.startswith(TEMP_PREFIX)]
            doc = _copy(str(src), "--all", str(dst))
            assert doc["totals"]["copiedBlobs"] == total - n
            assert (dst / "index.json").read_bytes() == (whole / "index.json").read_bytes()
            assert _blob_files(dst) == _blob_files(whole)  # the temp file is gone too
            check = _check_ok(str(dst))
            assert not check["findings"], check["findings"]
            shutil.rmtree(dst)


def test_a_full_disk_leaves_the_destination_consistent(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = copy_fixture("k-interrupted-export", tmp_path, restore_mtimes=True)  # a 2 MB layer
        dst = mnt / "cache"
        r = run_inprocess("copy", str(src), str(dst))
        assert r.code == 6 and "No space left on device" in r.err, r.err
        assert _entries(dst) == []
        assert not [p for p in (dst / "blobs" / "sha256").iterdir() if p.name.startswith(TEMP_PREFIX)]
        _consistent(dst)
        # What fits does: a smaller export into the same directory.
        small = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
        r = run_inprocess("copy", str(small), str(dst))
        assert r.code == 0, r.err
        _consistent(dst)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# -- registries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["a-history-min", "d2-image-manifest-false-oci-index", "c-docker-mediatypes"]
)
def test_dir_to_registry_and_back(tmp_path: Path, registry: Registry, case: str) -> None:
    """Shapes A, B and C: pushed to a registry, imported back into a directory, the same bytes."""
    src = copy_fixture(case, tmp_path, restore_mtimes=True)
    before = tree_state(src)
    want = _default_export(case)
    target = registry.target("team/cache")
    doc = _copy(str(src), target)
    assert tree_state(src) == before
    (e,) = doc["exports"]
    assert doc["directory"] is None and doc["target"] == target
    assert e["digest"] == want["digest"] and e["copiedBlobs"] == e["blobs"]
    assert (
        e["spec"] == f"type=registry,ref={registry.host}/team/cache@{want['digest']},registry.insecure=true"
    )
    tag = e["tags"][0]
    assert head_status(registry, "team/cache", "manifests", tag) == 200
    assert json_of("check", target, "--deep")["ok"]
    hist = json_of("history", target)
    assert [(x["digest"], x["tags"], x["shape"]) for x in hist["exports"]] == [
        (want["digest"], [tag], want["shape"])
    ]
    assert run_inprocess("ref", target).out.strip() == e["spec"]
    # Again: nothing moves.
    again = _copy(str(src), target)
    assert again["totals"]["copiedBlobs"] == 0
    # And back into a directory: byte for byte what the source holds.
    back = tmp_path / "back"
    doc = _copy(target, str(back))
    assert doc["exports"][0]["digest"] == want["digest"]
    for name, data in _blob_files(back).items():
        assert data == (src / "blobs" / "sha256" / name).read_bytes()
    assert set(_blob_files(back)) == {d.split(":")[1] for d in _closure(case, want["digest"])}
    _check_ok(str(back))


def test_registry_to_dir_every_shape_and_tag(tmp_path: Path, fixture_registry) -> None:
    reg = fixture_registry("reg-shapes")
    truth = registry_truth("reg-shapes")["final"]["repositories"]["shapes/cache"]["tags"]
    target = reg.target("shapes/cache")
    dst = tmp_path / "dst"
    doc = _copy(target, "--all", str(dst))
    assert {e["digest"]: e["tags"] for e in doc["exports"]} == {d: [t] for t, d in truth.items()}
    assert {e["shape"] for e in doc["exports"]} == {"A", "B", "C"}
    hist = json_of("history", str(dst))
    assert {e["digest"]: e["tags"] for e in hist["exports"]} == {d: [t] for t, d in truth.items()}
    assert all(e["complete"] for e in hist["exports"])
    _check_ok(str(dst))
    # The TAG of a registry SRC is the default REF.
    one = tmp_path / "one"
    doc = _copy(reg.target("shapes/cache", "docker-list"), str(one))
    assert [e["digest"] for e in doc["exports"]] == [truth["docker-list"]]
    # An older (untagged) export named by digest, with a tag given.
    older = registry_truth("reg-shapes")["builds"][0]["exports"][0]["manifest_digest"]
    doc = _copy(target, older, str(one), "--tag", "first")
    assert doc["exports"][0]["digest"] == older
    _check_ok(str(one))


def test_registry_to_registry_mounts_on_one_registry_and_streams_between_two(
    tmp_path: Path, fixture_registry, registry: Registry
) -> None:
    reg = fixture_registry("reg-shapes")
    truth = registry_truth("reg-shapes")["final"]["repositories"]["shapes/cache"]["tags"]
    src = reg.target("shapes/cache")
    same = _copy(src, "--all", reg.target("copied/cache"))
    t = same["totals"]
    assert t["mountedBlobs"] > 0 and t["mountedBlobs"] + (t["copiedBlobs"] - t["mountedBlobs"]) == t["blobs"]
    assert t["transferredBytes"] < t["bytes"] / 10  # only manifests go over the wire
    other = _copy(src, "--all", registry.target("moved/cache"))
    assert other["totals"]["mountedBlobs"] == 0 and other["totals"]["copiedBlobs"] == other["totals"]["blobs"]
    for target in (reg.target("copied/cache"), registry.target("moved/cache")):
        hist = json_of("history", target)
        assert {e["digest"]: e["tags"] for e in hist["exports"]} == {d: [t] for t, d in truth.items()}
        assert json_of("check", target, "--deep")["ok"]
    # A REPO:TAG DST names the tag.
    doc = _copy(src, "image-manifest", registry.target("moved/cache", "v2"))
    assert doc["exports"][0]["tags"] == ["v2"] and doc["totals"]["copiedBlobs"] == 0
    assert head_status(registry, "moved/cache", "manifests", "v2") == 200
    assert run_inprocess("copy", src, reg.target("shapes/cache")).code == 2  # the same repository


def test_registry_refusals(tmp_path: Path, fixture_registry) -> None:
    reg = fixture_registry("reg-mixed")
    src = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
    # `latest` of repository app is an image: not replaced.
    r = run_inprocess("copy", str(src), reg.target("app"))
    assert r.code == 6 and "not a cache export" in r.err
    # Missing layers: a registry refuses a manifest whose blobs it lacks.
    e = _default_export("a-history-min")
    manifest = json.loads((src / "blobs" / "sha256" / e["digest"].split(":")[1]).read_bytes())
    (src / "blobs" / "sha256" / manifest["layers"][-1]["digest"].split(":")[1]).unlink()
    r = run_inprocess("copy", str(src), reg.target("fresh"), "--allow-missing")
    assert r.code == 6 and "directory only" in r.err
    assert head_status(reg, "fresh", "manifests", "latest") == 404
    # A tag the registry cannot take.
    pinned = copy_fixture("f-tags", tmp_path / "p", restore_mtimes=True)
    assert run_inprocess("pin", str(pinned), "~3", "team/base").code == 0  # its only name
    r = run_inprocess("copy", str(pinned), "team/base", reg.target("fresh"))
    assert r.code == 2 and "--tag" in r.err and "team/base" in r.err
    assert run_inprocess("copy", str(pinned), "alpha", reg.target("fresh"), "--tag", "a/b").code == 2
    assert run_inprocess("copy", str(pinned), "team/base", reg.target("fresh"), "--tag", "base").code == 0


def test_corrupt_blob_in_the_registry_is_caught_and_nothing_lands(tmp_path: Path, fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    truth = registry_truth("reg-history")["final"]["repositories"]["myorg/app-cache"]["tags"]
    digest = truth["buildcache"]
    manifest = json.loads(
        (reg.storage / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data").read_bytes()
    )
    layer = max(manifest["layers"], key=lambda d: d["size"])["digest"]
    data_file = reg.storage / "docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    data = bytearray(data_file.read_bytes())
    data[100] ^= 0xFF
    data_file.write_bytes(bytes(data))
    src = reg.target("myorg/app-cache")
    dst = tmp_path / "dst"
    r = run_inprocess("copy", src, str(dst))
    assert r.code == 4 and layer in r.err, r.err
    assert layer[7:] not in _blob_files(dst) and _entries(dst) == []
    r = run_inprocess("copy", src, reg.target("elsewhere"))  # same registry: a mount, no bytes...
    assert r.code == 0  # (the registry's own blob, mounted as it is: not ocicache's to verify)
    second = start_registry(tmp_path / "other-registry")
    try:
        r = run_inprocess("copy", src, second.target("app"))
        assert r.code == 4 and layer in r.err, r.err
        assert head_status(second, "app", "blobs", layer) == 404
        assert head_status(second, "app", "manifests", "buildcache") == 404
    finally:
        second.stop()


def test_an_unreachable_registry_exits_9(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = copy_fixture("a-history-min", tmp_path, restore_mtimes=True)
    r = run_inprocess("copy", str(src), f"registry://127.0.0.1:{port}/x/cache")
    assert r.code == 9 and "cannot connect" in r.err
    r = run_inprocess("copy", f"registry://127.0.0.1:{port}/x/cache", str(tmp_path / "dst"))
    assert r.code == 9
    assert not (tmp_path / "dst").exists()


# -- the pieces ----------------------------------------------------------------------------------
def test_help_usage_line() -> None:
    r = run_inprocess("copy", "--help")
    assert r.code == 0 and r.out.splitlines()[0] == "Usage: ocicache copy [OPTIONS] SRC [REF ...] DST"


def test_blob_writer_names_a_file_only_for_its_content(tmp_path: Path) -> None:
    import hashlib

    from ocicache.base.errors import CorruptError
    from ocicache.store.blobwrite import BlobWriter, ensure_layout, verified
    from ocicache.store.layout import Layout

    assert ensure_layout(tmp_path / "c") and not ensure_layout(tmp_path / "c")
    data = b"layer bytes " * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with Layout(tmp_path / "c") as layout:
        w = BlobWriter(layout)
        for chunks, size in (
            ([data[:-1] + b"X"], len(data)),
            ([data, b"more"], len(data)),
            ([data], len(data) + 1),
        ):
            with pytest.raises(CorruptError):
                w.write(digest, size, chunks, "SRC/blob")
        assert os.listdir(tmp_path / "c" / "blobs" / "sha256") == []
        w.write(digest, len(data), [data[:5000], data[5000:]], "SRC/blob")
        assert w.present(digest, len(data)) and not w.present(digest, len(data) - 1)
        p = tmp_path / "c" / "blobs" / "sha256" / digest[7:]
        assert p.read_bytes() == data and p.stat().st_mode & 0o777 == 0o444
    # A verified stream gives its last chunk only once the whole is known to match.
    assert list(verified([b"ab", b"cd"], "sha256:" + hashlib.sha256(b"abcd").hexdigest(), 4, "w")) == [
        b"ab",
        b"cd",
    ]
    got: list[bytes] = []
    with pytest.raises(CorruptError, match="hashes to"):
        for chunk in verified([b"ab", b"cX"], "sha256:" + hashlib.sha256(b"abcd").hexdigest(), 4, "w"):
            got.append(chunk)
    assert got == [b"ab"]


def test_the_library_reports_progress_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ocicache import api
    from ocicache.cli.check import ProgressBar
    from ocicache.store.hashing import Progress

    src = copy_fixture("k-interrupted-export", tmp_path, restore_mtimes=True)
    seen: list[Progress] = []
    result = api.copy(src, tmp_path / "dst", progress=seen.append)
    assert capsys.readouterr() == ("", "")
    assert seen and seen[-1].done_bytes == seen[-1].total_bytes == sum(
        b.size for b in result.exports[0].copied
    )
    assert seen[-1].done_blobs == seen[-1].total_blobs == 6
    assert result.exports[0].spec == f"type=local,src={tmp_path / 'dst'},digest={result.exports[0].digest}"
    line = ProgressBar(tty=True, label="copying").line(Progress(1 << 20, 4 << 20, 1, 4, 1.0))
    assert line.startswith("copying [######") and "25%" in line and "/s" in line and "s left" in line


@pytest.mark.slow
def test_sigkill_into_a_registry_then_a_rerun_finishes(tmp_path: Path, registry: Registry) -> None:
    src = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    for n, after in enumerate(("1", "2.5", "9")):
        target = registry.target(f"killed/c{n}")
        p = _run_killed(src, target, after, "--all")
        assert p.returncode == -signal.SIGKILL, (after, p.stderr)
        for tag in ("latest", "alpha", "beta"):  # manifests come last: no tag yet
            assert head_status(registry, f"killed/c{n}", "manifests", tag) == 404
        doc = _copy(str(src), "--all", target)
        assert 0 < doc["totals"]["copiedBlobs"] < doc["totals"]["blobs"]
        assert json_of("check", target, "--deep")["ok"]
        assert {e["digest"] for e in json_of("history", target)["exports"]} == {
            e["digest"] for e in json_of("history", str(src))["exports"] if e["tags"]
        }
