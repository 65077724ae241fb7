"""`check` and `repair` on copies of the real BuildKit fixtures, clean and with injected faults."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clirun import run_inprocess, run_subprocess, tree
from conftest import copy_tree

from ocicache import api
from ocicache.base.errors import EXIT_PROBLEMS, EXIT_REFUSED
from ocicache.cli.check import ProgressBar
from ocicache.format.schema import validate
from ocicache.store.hashing import Progress, verify_blobs
from ocicache.store.layout import Layout

FIXTURES = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _copy(tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    copy_tree(FIXTURES / name, dest, symlinks=True)
    return dest


def _truth(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.groundtruth.json").read_text())
    return data


def _check(root: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    r = run_inprocess("check", "--json", *flags, str(root))
    doc = json.loads(r.out)
    assert validate(doc, "check") == [], validate(doc, "check")
    assert "Traceback" not in r.err
    return r.code, doc


def _layers(root: Path) -> list[str]:
    """Layer digests of the exports index.json points at (from the reader)."""
    snap = api.read(root)
    return sorted({d.digest for e in snap.exports if e.referenced_by_index for d in e.layers})


@pytest.mark.parametrize("name", CASES)
def test_clean_fixture_passes(tmp_path: Path, name: str) -> None:
    root = _copy(tmp_path, name)
    before = tree(root)
    code, doc = _check(root)
    assert code == 0 and doc["ok"] and doc["hashed"]
    assert doc["counts"]["hashedBlobs"] == len(_truth(name)["final"]["blobs_on_disk"])
    assert {f["severity"] for f in doc["findings"]} <= {"note"}
    if name == "k-interrupted-export":
        codes = {(f["code"], f["digest"]) for f in doc["findings"]}
        for d in _truth(name)["final"]["unreachable_from_index"]:
            assert ("unreferenced-blob", d) in codes
        assert any(f["code"] == "stale-ingest" for f in doc["findings"])
    else:
        assert doc["findings"] == []
    assert tree(root) == before


@pytest.mark.parametrize("name", CASES)
def test_injected_faults_named_by_digest(tmp_path: Path, name: str) -> None:
    root = _copy(tmp_path, name)
    layers = _layers(root)
    flipped, removed = layers[0], layers[-1]
    p = root / "blobs" / "sha256" / flipped[7:]
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    (root / "blobs" / "sha256" / removed[7:]).unlink()
    code, doc = _check(root)
    assert code == EXIT_PROBLEMS and not doc["ok"]
    found = {(f["code"], f["digest"]) for f in doc["findings"]}
    assert ("digest-mismatch", flipped) in found
    assert ("missing-blob", removed) in found
    missing = [f for f in doc["findings"] if f["code"] == "missing-blob"]
    assert all(f["steps"] and f["export"] for f in missing)
    # --quick cannot see the flipped byte, but still the missing layer.
    code, doc = _check(root, "--quick")
    found = {(f["code"], f["digest"]) for f in doc["findings"]}
    assert code == EXIT_PROBLEMS and ("missing-blob", removed) in found
    assert not any(c == "digest-mismatch" for c, _ in found)


@pytest.mark.parametrize("name", ["a-history-min", "c-docker-mediatypes"])
def test_torn_index_and_missing_config(tmp_path: Path, name: str) -> None:
    root = _copy(tmp_path, name)
    snap = api.read(root)
    current = next(e for e in snap.exports if e.referenced_by_index)
    assert current.config is not None
    (root / "blobs" / "sha256" / current.config.digest[7:]).unlink()
    code, doc = _check(root, "--quick")
    found = {(f["code"], f["digest"]) for f in doc["findings"]}
    assert code == 1 and ("missing-blob", current.config.digest) in found
    index = root / "index.json"
    index.write_bytes(index.read_bytes()[: len(index.read_bytes()) // 2])
    code, doc = _check(root, "--quick")
    assert code == 1 and "torn-index" in {f["code"] for f in doc["findings"]}


def test_text_output(tmp_path: Path) -> None:
    root = _copy(tmp_path, "k-interrupted-export")
    r = run_inprocess("check", str(root))
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[-1].endswith(": OK") and "0 errors" in lines[-1]
    assert any(line.startswith("note: stale-ingest: ingest/") for line in lines)
    assert any(line.startswith("note: unreferenced-blob: blobs/sha256/") for line in lines)


# -- repair ------------------------------------------------------------------------------------
def test_repair_torn_index(tmp_path: Path) -> None:
    root = _copy(tmp_path, "f-tags")
    truth = json.loads(_truth("f-tags")["final"]["index_json_raw"])
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in truth["manifests"]}
    index = root / "index.json"
    raw = index.read_bytes()
    cut = raw.index(by_tag["alpha"].encode()) + 10  # torn inside the second entry
    index.write_bytes(raw[:cut])
    before = tree(root)
    r = run_inprocess("repair", "--dry-run", str(root))
    assert r.code == 0 and tree(root) == before
    would = json.loads(r.out)
    assert validate(would, "image-index") == []
    r = run_inprocess("repair", str(root))
    assert r.code == 0, r.err
    assert json.loads(index.read_bytes()) == would
    tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in would["manifests"]}
    # beta survived the tear; alpha's entry was torn and cannot be recovered from blobs;
    # latest is the newest complete cache manifest, which is what BuildKit last exported.
    assert tags == {"beta": by_tag["beta"], "latest": by_tag["latest"]}
    assert b" " not in index.read_bytes()  # compact, like BuildKit
    assert not (root / "index.json.lock").exists()
    assert sorted(p.name for p in root.iterdir()) == ["blobs", "index.json", "oci-layout"]
    code, _ = _check(root)
    assert code == 0
    after = tree(root)
    r = run_inprocess("repair", str(root))
    assert r.code == 0 and "healthy" in r.err and tree(root) == after


def test_repair_missing_index(tmp_path: Path) -> None:
    root = _copy(tmp_path, "a-history-min")
    latest = json.loads((root / "index.json").read_bytes())["manifests"][-1]["digest"]
    (root / "index.json").unlink()
    assert run_inprocess("history", str(root)).code == 4
    r = run_inprocess("repair", str(root))
    assert r.code == 0, r.err
    doc = json.loads((root / "index.json").read_bytes())
    assert [m["digest"] for m in doc["manifests"]] == [latest]
    assert run_inprocess("history", str(root)).code == 0


def _unshare_ro() -> bool:
    try:
        p = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


@pytest.mark.skipif(not _unshare_ro(), reason="needs unshare -rm for a read-only bind mount")
def test_read_only_filesystem(tmp_path: Path) -> None:
    """On a read-only mount: reading works, repair (a writer) refuses clearly with exit 6."""
    root = _copy(tmp_path, "a-history-min")
    index = root / "index.json"
    index.write_bytes(index.read_bytes()[:-30])
    before = tree(root)
    mount = (
        "unshare",
        "-rm",
        "sh",
        "-c",
        'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"',
        str(root),
    )
    r = run_subprocess("check", "--quick", str(root), prefix=mount)
    assert r.code == 1 and "torn-index" in r.out and "Traceback" not in r.err
    r = run_subprocess("history", str(root / "blobs"), prefix=mount)
    assert r.code == 3
    r = run_subprocess("repair", str(root), prefix=mount)
    assert r.code == EXIT_REFUSED, r.err
    assert r.err.startswith("ocicache: error: ") and "Read-only file system" in r.err, r.err
    assert "Traceback" not in r.err
    assert tree(root) == before


# -- hashing ------------------------------------------------------------------------------------
def test_hashing_sha256_sha512_parallel(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for alg in ("sha256", "sha512"):
        (root / "blobs" / alg).mkdir(parents=True)
    (root / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    blobs = {}
    for i in range(12):
        data = os.urandom(1000 + i * 300_000)
        alg = "sha512" if i % 3 == 0 else "sha256"
        hexpart = hashlib.new(alg, data).hexdigest()
        (root / "blobs" / alg / hexpart).write_bytes(data)
        blobs[f"{alg}:{hexpart}"] = data
    bad = next(d for d in blobs if d.startswith("sha512"))
    (root / "blobs" / "sha512" / bad[7:]).write_bytes(b"other")
    seen: list[Progress] = []
    with Layout(root) as layout:
        files = list(layout.scan_blobs().blobs.values())
        one = verify_blobs(layout, files, workers=1)
        two = verify_blobs(layout, files, workers=2, progress=seen.append, interval=0.001)
    assert one == two
    assert [d for d, r in two.items() if not r.ok] == [bad]
    assert two[bad].actual == "sha512:" + hashlib.sha512(b"other").hexdigest()
    assert seen and seen[-1].done_blobs == 12 and seen[-1].done_bytes == seen[-1].total_bytes
    code, doc = _check(root)
    assert code == 1
    errors = [(f["code"], f["digest"]) for f in doc["findings"] if f["severity"] == "error"]
    assert errors == [("digest-mismatch", bad)]


def test_progress_line() -> None:
    bar = ProgressBar(tty=True)
    line = bar.line(Progress(50 << 20, 200 << 20, 3, 10, 0.5))
    assert line.startswith("hashing [######")
    assert "52.4 MB / 209.7 MB" in line and "(3/10 blobs)" in line
    assert "104.9 MB/s" in line and "2 s left" in line


@pytest.mark.parametrize("name", ["k-interrupted-export", "f-tags"])
def test_read_only_commands_leave_fixture_unchanged(tmp_path: Path, name: str) -> None:
    root = _copy(tmp_path, name)
    # BuildKit's real modes and mtimes (git keeps neither), so "unchanged" means something.
    for b in _truth(name)["final"]["blobs_on_disk"]:
        p = root / "blobs" / b["digest"].replace(":", "/")
        os.chmod(p, int(str(b["mode"]).replace("0o", ""), 8))
        os.utime(p, ns=(b["mtime_ns"], b["mtime_ns"]))
    before = tree(root)
    for argv in (
        ("history", "DIR"),
        ("show", "DIR"),
        ("show", "DIR", "latest"),
        ("blobs", "DIR"),
        ("du", "DIR"),
        ("check", "DIR"),
        ("check", "--quick", "--json", "DIR"),
        ("repair", "--dry-run", "DIR"),
        ("repair", "DIR"),
    ):
        r = run_inprocess(*(str(root) if a == "DIR" else a for a in argv))
        assert r.code == 0, (argv, r.err)
        assert tree(root) == before, argv


def test_repair_with_no_complete_export_keeps_the_newest_importable(tmp_path: Path) -> None:
    """A torn index.json and a layer every export shares is gone: repair must not write an
    empty index (the next gc or reset=true would drop every export) but point `latest` at the
    newest export BuildKit can still import, and say that some steps will rebuild."""
    d = tmp_path / "a"
    shutil.copytree(Path(__file__).parent.parent / "fixtures/buildkit-v0.32.2/a-history-min", d)
    newest = api.history(d).exports[0].digest
    shared = "489f7c8476ce3a84bdf65ecc388a7d328094ddb73977c74f5885813c6e29d879"
    (d / "blobs" / "sha256" / shared).unlink()
    (d / "index.json").write_bytes((d / "index.json").read_bytes()[:150])
    plan = api.repair(d)
    assert plan.added is not None and plan.added["digest"] == newest
    assert plan.added_missing == 1
    after = api.history(d).exports
    assert after[0].digest == newest and after[0].tags == ("latest",)


def test_duplicate_keys_in_blobs_and_index() -> None:
    """Blobs are read as BuildKit (Go) reads them: a repeated key keeps its last value, and
    `duplicate_keys` says where; index.json stays strict."""
    from ocicache.base.errors import CorruptError
    from ocicache.format import documents as docs

    data = b'{"a":1,"b":{"x":[{"k":1,"k":2,"j":0,"j":1}]},"a":3}'
    assert docs.loads_blob(data, "f") == {"a": 3, "b": {"x": [{"k": 2, "j": 1}]}}
    assert docs.duplicate_keys(data) == [("b.x[0]", "k"), ("b.x[0]", "j"), ("(root)", "a")]
    # An object that a later duplicate replaced is no longer in the document: no path.
    assert docs.duplicate_keys(b'{"a":{"x":1,"x":2},"a":0}') == [("", "x"), ("(root)", "a")]
    assert docs.duplicate_keys(b'{"a":1}') == [] and docs.duplicate_keys(b"{torn") == []
    with pytest.raises(CorruptError, match="duplicate key 'k'"):
        docs.loads_strict(data, "index.json")
    for bad in (b'{"a":NaN}', b'{"a":"\xff"}', b"", b'{"a":1', b"[" * 100_000):
        with pytest.raises(CorruptError):
            docs.loads_blob(bad, "f")
