"""Issue 10, the writers' items: what may never be lost or misreported around index.json.

- an index.json that names nothing on disk (none, empty, only missing manifests) never makes gc
  delete every blob unless `--all` says so, and repair never writes one (item 2);
- no hidden size or count limit turns a valid index.json into "torn" or drops entries; a limit
  really hit is refused with its name (item 5);
- index.json.lock that is not a regular file never hangs or crashes anything (item 7);
- a read during BuildKit's in-place rewrite never reports damage or suggests repair (item 17).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from clirun import REPO, run_inprocess, run_subprocess, tree
from special_files import make_special

from ocicache.format import mediatypes as mt
from ocicache.format.model import ANN_REF_NAME
from ocicache.synth import Builder, compact

DAY_NS = 86400 * 10**9


def _cache(root: Path) -> tuple[Builder, str, str, list[str]]:
    """Two exports of tag latest (the older one only in blobs/), three layers."""
    b = Builder(root)
    layers = [b.layer(f"l{i}", size=3000) for i in range(3)]
    old = b.export(layers[:2])
    new = b.export(layers)
    return b, old, new, [x["digest"] for x in layers]


def _blobs(root: Path) -> set[str]:
    d = root / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    """tree() without DIR's own mtime (a writer's lock file moves it)."""
    return {k: v for k, v in tree(root).items() if k != "."}


def _entry(digest: str, size: int, tag: str, **extra: str) -> dict[str, Any]:
    return {
        "mediaType": mt.OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "annotations": {ANN_REF_NAME: tag, **extra},
    }


def _write_index(root: Path, entries: list[dict[str, Any]]) -> bytes:
    data = compact({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    (root / "index.json").write_bytes(data)
    return data


def _size(root: Path, digest: str) -> int:
    return (root / "blobs" / "sha256" / digest[7:]).stat().st_size


# -- item 2: an index.json that names nothing ------------------------------------------------
def _bare_store(root: Path) -> set[str]:
    """blobs/ (layers, no cache manifest) and ingest/, no index.json: a bare content store."""
    b = Builder(root)
    for i in range(4):
        b.layer(f"bare{i}", size=2000)
    b.ingest("e" * 64, 10, 100)
    (root / "index.json").unlink()
    return _blobs(root)


def test_bare_store_repair_refuses_and_gc_refuses(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    names = _bare_store(root)
    before = _files(root)
    for args in (("repair", "--dry-run"), ("repair",)):
        r = run_inprocess(*args, str(root))
        assert r.code == 6, r.err
        assert "no importable cache manifest" in r.err and "nothing written" in r.err
    assert not (root / "index.json").exists() and _files(root) == before
    for args in (("gc", "--grace", "0"), ("gc", "--grace", "0", "--all"), ("gc", "--dry-run")):
        r = run_inprocess(*args, str(root))
        assert r.code == 6 and "nothing deleted" in r.err, r.err
        assert "no cache manifest" in r.err, r.err  # not a bare "run repair"
    assert _blobs(root) == names and _files(root) == before


def test_bare_store_with_cache_manifests_is_repaired_to_the_newest(tmp_path: Path) -> None:
    root = tmp_path / "c"
    _, _old, new, _ = _cache(root)
    (root / "index.json").unlink()
    r = run_inprocess("repair", str(root))
    assert r.code == 0, r.err
    doc = json.loads((root / "index.json").read_bytes())
    assert [e["digest"] for e in doc["manifests"]] == [new]


def test_empty_index_gc_refuses_unless_all(tmp_path: Path) -> None:
    root = tmp_path / "c"
    _cache(root)
    _write_index(root, [])
    names, before = _blobs(root), _files(root)
    for args in (
        ("gc", str(root), "--dry-run"),
        ("gc", str(root), "--dry-run", "--json"),
        ("gc", str(root), "--grace", "0"),
    ):
        r = run_inprocess(*args)
        assert r.code == 6 and "has no entries" in r.err and "--all" in r.err, (args, r.err)
        assert "nothing deleted" in r.err
    assert _blobs(root) == names and _files(root) == before
    r = run_inprocess("check", "--json", str(root))
    assert "index-names-nothing" in {f["code"] for f in json.loads(r.out)["findings"]}
    r = run_inprocess("gc", str(root), "--grace", "0", "--all", "--dry-run", "--json")
    assert r.code == 0 and json.loads(r.out)["freedBytes"] > 0, r.err
    assert _blobs(root) == names
    r = run_inprocess("gc", str(root), "--grace", "0", "--all")
    assert r.code == 0, r.err
    assert _blobs(root) == set()


def test_index_naming_only_missing_manifests(tmp_path: Path) -> None:
    """Entries whose manifests are all gone protect nothing: gc refuses; repair drops them and
    points latest at the newest export on disk."""
    root = tmp_path / "c"
    _, _old, new, _ = _cache(root)
    gone = "sha256:" + "0" * 64
    _write_index(root, [_entry(gone, 10, "latest"), _entry(gone, 10, "beta")])
    names = _blobs(root)
    for all_ in ((), ("--all",)):
        r = run_inprocess("gc", str(root), "--grace", "0", *all_)
        assert r.code == 6, r.err
    assert _blobs(root) == names
    r = run_inprocess("repair", str(root))
    assert r.code == 0 and "names nothing on disk" in r.out, r.out + r.err
    doc = json.loads((root / "index.json").read_bytes())
    assert [e["digest"] for e in doc["manifests"]] == [new]
    r = run_inprocess("repair", str(root))
    assert r.code == 0 and "healthy" in r.err


def test_empty_index_without_any_cache_manifest_is_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "bare"
    _bare_store(root)
    data = _write_index(root, [])
    r = run_inprocess("repair", str(root))
    assert r.code == 0 and "nothing to repair" in r.err, r.err
    assert (root / "index.json").read_bytes() == data
    r = run_inprocess("gc", str(root), "--grace", "0")
    assert r.code == 6 and "--all" in r.err


# -- item 5: no hidden limit -----------------------------------------------------------------
NOTE = "n" * 1400  # an annotation that makes each entry ~1.6 kB: 12,000 of them are 18 MB


def _big_index(root: Path, n: int, note: str = NOTE) -> tuple[bytes, str, str]:
    """An index.json of `n` valid entries (tags t0..), alternately naming the two exports."""
    _, old, new, _ = _cache(root)
    sizes = {old: _size(root, old), new: _size(root, new)}
    entries = [
        _entry(d, sizes[d], "latest" if i == 0 else f"t{i}", **{"dev.example.note": note})
        for i in range(n)
        for d in ((new, old)[i % 2],)
    ]
    return _write_index(root, entries), old, new


def test_valid_index_over_16_mib_is_read_whole(tmp_path: Path) -> None:
    root = tmp_path / "big"
    n = 12_000
    data, old, new = _big_index(root, n)
    assert len(data) > 17 << 20
    r = run_inprocess("history", "--json", str(root))
    assert r.code == 0, r.err[-2000:]
    exports = {e["digest"]: e for e in json.loads(r.out)["exports"]}
    assert len(exports[new]["tags"]) + len(exports[old]["tags"]) == n
    r = run_inprocess("check", "--quick", "--json", str(root))
    assert r.code == 0, r.out[-2000:]
    r = run_inprocess("repair", str(root))
    assert r.code == 0 and "healthy" in r.err
    assert (root / "index.json").read_bytes() == data
    r = run_inprocess("pin", str(root), old, "keep-old")  # rewrites it: every entry kept
    assert r.code == 0, r.err
    after = (root / "index.json").read_bytes()
    assert after.startswith(data[:-2]) and len(json.loads(after)["manifests"]) == n + 1


@pytest.mark.parametrize(
    ("n", "note"), [(12_000, "x"), (12_000, NOTE)], ids=["over-10k-entries", "over-16MiB"]
)
def test_repair_keeps_every_salvageable_entry(tmp_path: Path, n: int, note: str) -> None:
    """A torn index.json of more than 10,000 entries (or over 16 MiB): repair keeps every entry
    that is complete, not 10,000, not one."""
    root = tmp_path / "big"
    data, _old, _new = _big_index(root, n, note)
    (root / "index.json").write_bytes(data[:-40])  # the last entry is torn
    r = run_inprocess("repair", "--dry-run", str(root))
    assert r.code == 0, r.err[-2000:]
    r = run_inprocess("repair", str(root))
    assert r.code == 0, r.err[-2000:]
    assert r.out.splitlines()[-1] == f"wrote index.json ({n - 1} entries)"
    doc = json.loads((root / "index.json").read_bytes())
    assert len(doc["manifests"]) == n - 1
    assert doc["manifests"] == json.loads(data)["manifests"][:-1]


def test_index_over_the_limit_is_refused_by_name(tmp_path: Path) -> None:
    """index.json over ocicache's limit (256 MiB): every command says so and names the limit;
    no command calls it torn, and no writer replaces it (its entries would be lost)."""
    root = tmp_path / "c"
    _cache(root)
    os.truncate(root / "index.json", 300 << 20)  # sparse
    before = _files(root)
    for args in (("history",), ("show",), ("gc", "--dry-run")):
        r = run_inprocess(args[0], str(root), *args[1:])
        assert r.code in (4, 6), r.err
        assert "index.json limit (256 MiB" in r.err and "torn" not in r.err, r.err
    r = run_inprocess("check", "--json", str(root))
    codes = {f["code"] for f in json.loads(r.out)["findings"]}
    assert r.code == 1 and "oversize-index" in codes and "torn-index" not in codes
    for args in (
        ("gc", "--grace", "0"),
        ("pin", "~0", "keep"),
        ("unpin", "latest"),
        ("repair",),
        ("repair", "--dry-run"),
    ):
        r = run_inprocess(args[0], str(root), *args[1:])
        assert r.code == 6 and "256 MiB" in r.err, (args, r.err)
    assert _files(root) == before


def test_writers_refuse_to_write_an_index_they_could_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocicache.store.indexwrite as indexwrite

    root = tmp_path / "c"
    _cache(root)
    data = (root / "index.json").read_bytes()
    monkeypatch.setattr(indexwrite, "INDEX_LIMIT", len(data) + 10)
    r = run_inprocess("pin", str(root), "~1", "keep")
    assert r.code == 6 and "not written" in r.err and "index.json limit" in r.err, r.err
    assert (root / "index.json").read_bytes() == data


# -- item 7: a lock file that is not a regular file ------------------------------------------
def _make_lock(root: Path, kind: str, outside: Path) -> None:
    target = outside / "lock-target"
    target.write_bytes(b"")
    make_special(root / "index.json.lock", kind, target)


KINDS = ["fifo", "directory", "socket", "symlink"]


@pytest.mark.parametrize("kind", KINDS)
def test_writers_refuse_a_lock_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    root, outside = tmp_path / "c", tmp_path / "outside"
    outside.mkdir()
    _cache(root)
    _make_lock(root, kind, outside)
    before, outside_before = tree(root), tree(outside)
    for args in (("gc", "--grace", "0"), ("pin", "~1", "keep"), ("unpin", "latest", "--force"), ("repair",)):
        # a real process: a hang is a timeout, not a stuck test run
        r = (
            run_subprocess(args[0], str(root), *args[1:], timeout=30)
            if kind == "fifo"
            else run_inprocess(args[0], str(root), *args[1:], timeout=30)
        )
        if args == ("repair",):
            assert r.code == 0 and "healthy" in r.err, r.err  # nothing to write: no lock
            continue
        assert r.code == 6, (args, r.code, r.err)
        assert r.err.startswith("ocicache: error: index.json.lock: is a "), r.err
        assert "not a regular file" in r.err
    assert tree(root) == before and tree(outside) == outside_before


@pytest.mark.parametrize("kind", KINDS)
def test_readers_read_past_a_lock_that_is_not_a_file(tmp_path: Path, kind: str) -> None:
    root, outside = tmp_path / "c", tmp_path / "outside"
    outside.mkdir()
    _, _old, _new, _ = _cache(root)
    _make_lock(root, kind, outside)
    before = tree(root)
    for args in (
        ("history", "--json"),
        ("du",),
        ("blobs",),
        ("show",),
        ("check", "--quick"),
        ("gc", "--dry-run"),
        ("ref",),
    ):
        r = (
            run_subprocess(args[0], str(root), *args[1:], timeout=30)
            if kind == "fifo"
            else run_inprocess(args[0], str(root), *args[1:])
        )
        assert r.code == 0, (args, r.err)
        assert "index.json.lock" in r.err + r.out, (args, r.err)
    assert tree(root) == before


# -- item 17: reads while BuildKit rewrites index.json in place --------------------------------
def _hold_exclusive(root: Path) -> int:
    """Lock index.json.lock as BuildKit's writer does (created, exclusive); the fd."""
    fd = os.open(root / "index.json.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


READ_LINES = [
    ("history",),
    ("history", "--json"),
    ("show",),
    ("blobs",),
    ("du",),
    ("check", "--quick"),
    ("gc", "--dry-run", "--json"),
    ("ref",),
]


def test_torn_while_a_writer_holds_the_lock_is_busy_not_damage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ocicache.store.indexread as indexread

    monkeypatch.setattr(indexread, "WAIT_S", 0.3)
    root = tmp_path / "c"
    _cache(root)
    whole = (root / "index.json").read_bytes()
    (root / "index.json").write_bytes(whole[: len(whole) // 2])  # mid-WriteAt
    fd = _hold_exclusive(root)
    try:
        for line in READ_LINES:
            r = run_inprocess(line[0], str(root), *line[1:])
            assert r.code == 7, (line, r.code, r.err)
            assert "a write is in progress" in r.err and "repair" not in r.err, r.err
    finally:
        os.close(fd)
    # The writer died mid-write: the lock file is left, nobody holds it. Now it is damage.
    r = run_inprocess("history", str(root))
    assert r.code == 4 and "truncated JSON" in r.err and "repair" in r.err, r.err
    (root / "index.json.lock").unlink()
    r = run_inprocess("history", str(root))
    assert r.code == 4 and "repair" in r.err, r.err


def test_a_read_waits_for_the_write_to_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ocicache.store.indexread as indexread

    monkeypatch.setattr(indexread, "WAIT_S", 30.0)  # a loaded machine may start `finish` late
    root = tmp_path / "c"
    b, old, new, _ = _cache(root)
    whole = (root / "index.json").read_bytes()
    b.point("beta", old, _size(root, old))
    final = (root / "index.json").read_bytes()
    (root / "index.json").write_bytes(final[: len(whole) // 2])
    fd = _hold_exclusive(root)

    def finish() -> None:
        time.sleep(0.3)
        with open(root / "index.json", "r+b") as f:  # WriteAt + Truncate, then unlock, remove
            f.write(final)
            f.truncate(len(final))
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        (root / "index.json.lock").unlink()

    t = threading.Thread(target=finish)
    t.start()
    try:
        r = run_inprocess("history", "--json", str(root))
    finally:
        t.join()
    assert r.code == 0, r.err
    tags = {e["digest"]: e["tags"] for e in json.loads(r.out)["exports"]}
    assert tags == {new: ["latest"], old: ["beta"]}


def test_read_commands_create_and_remove_nothing(tmp_path: Path) -> None:
    """No lock file is created, none is removed, DIR's own mtime does not move."""
    root = tmp_path / "c"
    _cache(root)
    for leftover in (False, True):
        if leftover:
            (root / "index.json.lock").write_bytes(b"")
        before = tree(root)
        for line in READ_LINES:
            r = run_inprocess(line[0], str(root), *line[1:])
            assert r.code == 0, (line, r.err)
        assert tree(root) == before


_WRITER = textwrap.dedent("""
    import fcntl, os, sys, time
    root, stop = sys.argv[1], sys.argv[2]
    versions = [bytes.fromhex(h) for h in sys.argv[3:]]
    index, lock = os.path.join(root, "index.json"), os.path.join(root, "index.json.lock")
    i = 0
    while not os.path.exists(stop):
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # TryLock
        except BlockingIOError:
            os.close(fd)
            time.sleep(0.0005)
            continue
        data = versions[i % len(versions)]
        f = os.open(index, os.O_RDWR)
        cut = data.find(b"sha256:") + 39  # WriteAt in two steps, cut inside a digest, to hold
        # a torn state for a moment (a splice of two same-length versions is valid JSON)
        os.pwrite(f, data[:cut], 0)
        time.sleep(0.001)
        os.pwrite(f, data[cut:], cut)
        os.ftruncate(f, len(data))
        os.close(f)
        fcntl.flock(fd, fcntl.LOCK_UN)  # Unlock, then RemoveAll, as BuildKit does
        os.close(fd)
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        i += 1
        time.sleep(0.0005 * (i % 4))
""")


def test_reads_during_in_place_rewrites_never_report_damage(tmp_path: Path) -> None:
    """A writer rewriting index.json in place under an exclusive flock, BuildKit's way, in a
    loop: every read command exits 0 (or 7: a write in progress), never 4, never suggests
    repair, and never reports an export that no version of index.json names (a torn read
    can splice two versions into valid JSON naming a digest that is in neither)."""
    root = tmp_path / "c"
    _b, old, new, _ = _cache(root)
    so, sn = _size(root, old), _size(root, new)
    pad = len(str(sn)) - len(str(so))  # the same length: a splice of the two is valid JSON
    versions = [
        compact({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": m})
        for m in (
            [_entry(old, so, "latest", pad="x" * (1 + max(pad, 0)))],
            [_entry(new, sn, "latest", pad="x" * (1 + max(-pad, 0)))],
            [_entry(new, sn, "latest"), _entry(old, so, "beta")],
        )
    ]
    assert len(versions[0]) == len(versions[1])
    (root / "index.json").write_bytes(versions[2])
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), str(stop), *(v.hex() for v in versions)], cwd=REPO
    )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 30
        runs = 0
        while runs < 160 and time.monotonic() < deadline:
            line = READ_LINES[runs % len(READ_LINES)]
            r = run_inprocess(line[0], str(root), *line[1:])
            runs += 1
            seen[r.code] = seen.get(r.code, 0) + 1
            assert r.code in (0, 7), (line, r.code, r.err)
            assert "repair" not in r.err and "torn" not in r.err, (line, r.err)
            if line == ("history", "--json") and r.code == 0:
                digests = {e["digest"] for e in json.loads(r.out)["exports"]}
                assert digests == {old, new}, digests
            if line[0] == "check" and r.code == 0:
                assert "missing" not in r.out, r.out
    finally:
        stop.write_bytes(b"")
        writer.wait(timeout=30)
    assert writer.returncode == 0
    assert runs >= len(READ_LINES)


# -- the same on copies of real BuildKit directories -------------------------------------------
@pytest.mark.parametrize("case", ["a-history-min", "f-tags"])
def test_real_fixture_emptied_index_and_bare_store(tmp_path: Path, case: str) -> None:
    from conftest import copy_fixture

    root = copy_fixture(case, tmp_path, restore_mtimes=True)
    names = _blobs(root)
    _write_index(root, [])  # e.g. a hand edit, or a tool that "reset" the index
    r = run_inprocess("gc", str(root), "--grace", "0")
    assert r.code == 6 and "--all" in r.err and _blobs(root) == names, r.err
    r = run_inprocess("repair", str(root))  # points latest at the newest complete export
    assert r.code == 0, r.err
    newest = json.loads(run_inprocess("history", "--json", str(root)).out)["exports"][0]
    assert newest["tags"] == ["latest"]
    # Now strip it to a bare store: no index.json, no cache manifest or config.
    snap = json.loads(run_inprocess("blobs", "--json", str(root)).out)
    docs = [b["digest"] for b in snap["blobs"] if b["kind"] in ("manifest", "cache-config")]
    for digest in docs:
        (root / "blobs" / "sha256" / digest[7:]).unlink()
    (root / "index.json").unlink()
    left = _blobs(root)
    assert docs and left
    for args in (("repair",), ("gc", "--grace", "0"), ("gc", "--grace", "0", "--all")):
        r = run_inprocess(args[0], str(root), *args[1:])
        assert r.code == 6, (args, r.err)
        assert "no importable cache manifest" in r.err or "no cache manifest" in r.err, r.err
    assert not (root / "index.json").exists() and _blobs(root) == left
