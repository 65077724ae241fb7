"""gc's quarantine (issue 10, item 0): what gc drops is moved aside, put back when an export
lands that needs it, and deleted only once older than --grace.

The interleavings BuildKit produces are forced with a hook at the exact point (the settle wait
after gc moved blobs, or after gc returned), so no test depends on a race happening; the
concurrent tests assert only the safety property.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import traceback
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from gc_helpers import assert_consistent, blob_names

from ocicache import api
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.format.model import ANN_REF_NAME
from ocicache.ops import gc_apply
from ocicache.store.lock import index_lock
from ocicache.synth import Builder, compact, history_dir

ROOT = Path(__file__).parent.parent
QUARANTINE = Path(".ocicache") / "quarantine"


def _held(root: Path) -> set[str]:
    q = root / QUARANTINE
    if not q.exists():
        return set()
    return {p.name for p in q.glob("q-*/sha256/*")}


def _size_now(root: Path, digest: str) -> int | None:
    """The size of a blob in blobs/ or in gc's quarantine; None when it is in neither (a gc
    moving it or purging it at that very moment)."""
    for path in [
        root / "blobs" / "sha256" / digest[7:],
        *(root / QUARANTINE).glob(f"q-*/sha256/{digest[7:]}"),
    ]:
        with suppress(FileNotFoundError):
            return path.stat().st_size
    return None


def _repoint(root: Path, digest: str, tag: str = "latest", size: int | None = None) -> None:
    """BuildKit's index update: under its exclusive flock, drop the entry with `tag`, append
    one for `digest`, rewrite index.json in place (truncate + write)."""
    if size is None:
        size = _size_now(root, digest)
        assert size is not None, digest
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with index_lock(fd, timeout=10):
            index = json.loads((root / "index.json").read_bytes())
            entries = [e for e in index["manifests"] if e.get("annotations", {}).get(ANN_REF_NAME) != tag]
            entries.append(
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": size,
                    "annotations": {ANN_REF_NAME: tag},
                }
            )
            index["manifests"] = entries
            with open(root / "index.json", "r+b") as f:
                f.truncate(0)
                f.write(compact(index))
    finally:
        os.close(fd)


def _layers_of(root: Path, digest: str) -> list[str]:
    doc = json.loads((root / "blobs" / "sha256" / digest[7:]).read_bytes())
    return [x["digest"] for x in doc["layers"]] + [doc["config"]["digest"]]


@pytest.fixture(autouse=True, params=["exchange", "rename"])
def strategy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test both ways gc moves what it drops: blobs/sha256 exchanged whole for a folder of
    what it keeps (what these directories get: they drop most blobs), or blob by blob."""
    monkeypatch.setenv(gc_apply.EXCHANGE_ENV, "0" if request.param == "rename" else "always")
    return str(request.param)


@pytest.fixture
def cache(tmp_path: Path) -> tuple[Path, list[str]]:
    """6 old exports of 3 layers (1 shared), `latest` at the newest; digests newest first."""
    root = tmp_path / "cache"
    history_dir(root, exports=6, layers=3, shared=1)
    return root, [e.digest for e in api.history(root).exports]


def _hook_wait(monkeypatch: pytest.MonkeyPatch, action: Any) -> list[int]:
    """Run `action` at gc's settle wait (after it moved blobs, before the final re-read)."""
    calls: list[int] = []
    original = gc_apply._wait

    def wait(*args: Any, **kwargs: Any) -> None:
        calls.append(1)
        action()
        original(*args, **kwargs)

    monkeypatch.setattr(gc_apply, "_wait", wait)
    return calls


def test_default_gc_moves_into_the_quarantine_and_deletes_nothing(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    root, _ = cache
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    before = blob_names(root)
    folder = (root / "blobs" / "sha256").stat()
    kept = {n: (root / "blobs" / "sha256" / n).stat() for n in before}
    r = api.gc(root, Policy())
    # The exchange put a new folder in place, alike, whose blobs are the very files kept.
    now = (root / "blobs" / "sha256").stat()
    assert (now.st_ino != folder.st_ino) == (strategy == "exchange")
    assert (now.st_mode, now.st_uid, now.st_gid) == (folder.st_mode, folder.st_uid, folder.st_gid)
    for n in blob_names(root):
        st = (root / "blobs" / "sha256" / n).stat()
        assert (st.st_ino, st.st_mtime_ns, st.st_mode, st.st_nlink) == (
            kept[n].st_ino,
            kept[n].st_mtime_ns,
            kept[n].st_mode,
            kept[n].st_nlink,
        )
    moved = {b.name for b in r.deleted}
    assert moved and r.quarantine is not None
    assert _held(root) == moved  # nothing deleted: every dropped blob is in the quarantine
    assert blob_names(root) | _held(root) == before
    assert r.freed_bytes == 0 and r.quarantine.held == (len(moved), sum(b.size for b in r.deleted))
    assert_consistent(root)
    # A second run within the grace moves and purges nothing.
    again = api.gc(root, Policy())
    assert again.deleted == () and again.quarantine is not None and again.quarantine.purged == (0, 0)
    assert _held(root) == moved


def test_identical_export_landing_during_the_settle_is_put_back(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """BuildKit found the old manifest present (nothing to write), gc moved it, then BuildKit
    re-pointed `latest` at it: the final re-read puts it back with everything it names."""
    root, digests = cache
    oldest = digests[-1]
    calls = _hook_wait(monkeypatch, lambda: _repoint(root, oldest))
    r = api.gc(root, Policy())
    assert calls
    assert oldest in r.quarantine.restored  # type: ignore[union-attr]
    for d in [oldest, *_layers_of(root, oldest)]:
        assert (root / "blobs" / "sha256" / d[7:]).exists(), d
    snap = api.history(root)
    assert snap.exports[0].digest == oldest and snap.exports[0].complete
    assert_consistent(root)


def test_identical_export_landing_after_gc_is_put_back_by_the_next_run(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digests = cache
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    oldest = digests[-1]
    api.gc(root, Policy())
    _repoint(root, oldest)  # after gc returned: index.json names a quarantined manifest
    # The read commands say where it is and how it comes back.
    snap = api.history(root)
    assert any("quarantine" in w and oldest in w for w in snap.warnings), snap.warnings
    checked = api.check(root, quick=True)
    missing = [f for f in checked.findings if f.code == "index-missing-manifest"]
    assert missing and "quarantine" in missing[0].message
    assert any(f.code == "quarantine" for f in checked.findings)
    usage = {u.category: u for u in api.du(root)[1]}
    assert usage["quarantine"].files == len(_held(root)) > 0
    # The next gc puts it back before planning, then keeps it: nothing refuses.
    r = api.gc(root, Policy())
    assert oldest in r.quarantine.restored  # type: ignore[union-attr]
    assert api.history(root).exports[0].digest == oldest
    assert_consistent(root)
    assert api.check(root, quick=True).ok


def test_export_reusing_a_moved_layer_gets_it_back(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """BuildKit found an old layer present, gc moved it (its export was dropped), then BuildKit
    wrote a new config and manifest naming it and re-pointed index.json."""
    root, digests = cache
    oldest = digests[-1]
    reused = [
        d for d in _layers_of(root, oldest)[:-1] if d not in _layers_of(root, digests[0])
    ]  # layers only the oldest export has
    assert reused

    def land() -> None:
        b = Builder(root)  # writes only what is missing, with fresh mtimes (young)
        b.clock_ns = time.time_ns()
        b.entries = json.loads((root / "index.json").read_bytes())["manifests"]
        old = json.loads((root / "blobs" / "sha256" / digests[0][7:]).read_bytes())
        layers = [x for x in old["layers"]][:1]
        layers.append(
            {
                "mediaType": layers[0]["mediaType"],
                "digest": reused[0],
                "size": 64,
                "annotations": layers[0]["annotations"],
            }
        )
        layers.append(b.layer("brand-new", created_ns=time.time_ns()))
        new = b.export(layers, tag=None, mtime_ns=time.time_ns())
        _repoint(root, new)
        land.digest = new  # type: ignore[attr-defined]

    _hook_wait(monkeypatch, land)
    api.gc(root, Policy())
    new = land.digest  # type: ignore[attr-defined]
    assert (root / "blobs" / "sha256" / reused[0][7:]).exists()
    e = next(e for e in api.history(root).exports if e.digest == new)
    assert e.complete and e.tags == ("latest",)
    assert_consistent(root)


def test_reused_layer_export_landing_after_gc_is_completed_by_the_next_run(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, digests = cache
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    oldest = digests[-1]
    doc = json.loads((root / "blobs" / "sha256" / oldest[7:]).read_bytes())
    api.gc(root, Policy())
    # The export lands after gc: its config and manifest are written, the layer is held.
    b = Builder(root)
    b.entries = json.loads((root / "index.json").read_bytes())["manifests"]
    new = b.export(
        doc["layers"] + [b.layer("x", created_ns=time.time_ns())], tag=None, mtime_ns=time.time_ns()
    )
    _repoint(root, new)
    assert not api.history(root).exports[0].complete
    api.gc(root, Policy())
    e = api.history(root).exports[0]
    assert e.digest == new and e.complete
    assert_consistent(root)


def test_purged_once_older_than_grace_and_at_once_with_grace_0(
    cache: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = cache
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    first = api.gc(root, Policy())
    held = _held(root)
    assert held
    later = api.gc(root, Policy(), now_ns=time.time_ns() + 2 * HOUR_NS)
    assert later.quarantine is not None
    assert later.quarantine.purged == (len(held), sum(b.size for b in first.deleted))
    assert later.freed_bytes == later.quarantine.purged[1]
    assert _held(root) == set() and not (root / ".ocicache").exists()
    assert_consistent(root)
    # --grace 0: moved and purged in the same run.
    other = tmp_path / "g0"
    history_dir(other, exports=6, layers=3, shared=1)
    r = api.gc(other, Policy(grace_ns=0))
    assert r.deleted and _held(other) == set()
    assert r.freed_bytes == sum(b.size for b in r.deleted)


@pytest.mark.parametrize("grace", ["0", "1h"])
def test_a_blob_written_anew_after_gc_moved_it_is_not_held_for_ever(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch, grace: str
) -> None:
    """An export (or an image BuildKit writes into DIR) that checks for a blob after gc moved
    it finds it absent and writes it again: the quarantined copy is then a duplicate of a
    needed blob. It was kept with the needed ones, by every later gc too (.ocicache/ never
    went away); now it is purged like the rest once older than the grace."""
    root, digests = cache
    oldest = digests[-1]
    names = [oldest, *_layers_of(root, oldest)]
    saved = {d: (root / "blobs" / "sha256" / d[7:]).read_bytes() for d in names}

    def rewrite() -> None:  # BuildKit re-exports the oldest export whole, then re-points
        for d, data in saved.items():
            path = root / "blobs" / "sha256" / d[7:]
            if not path.exists():
                path.write_bytes(data)
        _repoint(root, oldest)

    _hook_wait(monkeypatch, rewrite)
    grace_ns = 0 if grace == "0" else HOUR_NS
    r = api.gc(root, Policy(grace_ns=grace_ns))
    assert r.quarantine is not None
    rewritten = {d[7:] for d in saved} & {b.name for b in r.deleted}
    assert rewritten, "gc did not move the oldest export's blobs"
    assert api.history(root).exports[0].digest == oldest
    assert_consistent(root)
    if grace == "0":
        assert not (rewritten & _held(root)) and not (root / ".ocicache").exists(), _held(root)
        return
    assert rewritten <= _held(root)  # within the grace: held, like every moved blob
    later = api.gc(root, Policy(grace_ns=grace_ns), now_ns=time.time_ns() + 2 * HOUR_NS)
    assert later.quarantine is not None and later.quarantine.purged[0] >= len(rewritten)
    assert _held(root) == set() and not (root / ".ocicache").exists()
    assert_consistent(root)
    for d, data in saved.items():  # the copies in blobs/ are the ones kept
        assert (root / "blobs" / "sha256" / d[7:]).read_bytes() == data


def test_quarantine_in_the_json_documents(
    cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clirun import run_inprocess

    root, _ = cache
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    out = run_inprocess("gc", str(root), "--json")
    assert out.code == 0, out.err
    doc = json.loads(out.out)
    q = doc["quarantine"]
    assert q["movedBlobs"] == q["heldBlobs"] == len(doc["blobs"]) > 0
    assert q["purgeAfter"] is not None and doc["freedBytes"] == 0
    hist = json.loads(run_inprocess("history", str(root), "--json").out)
    assert hist["quarantine"]["blobs"] == q["heldBlobs"]
    assert hist["quarantine"]["bytes"] == q["heldBytes"]
    text = run_inprocess("history", str(root)).out
    assert ".ocicache/quarantine/ holds" in text
    gc_text = run_inprocess("gc", str(root), "--dry-run").out
    assert "held in .ocicache/quarantine/" in gc_text


def _gc_proc(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ocicache", "gc", str(root), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_two_gc_at_once_never_crash(tmp_path: Path) -> None:
    """Issue 10 item 8: two gc on one directory; anything already gone is simply gone."""
    for trial in range(3):
        root = tmp_path / f"t{trial}"
        b = history_dir(root, exports=12, layers=3, orphans=10, shared=1)
        for k in range(6):
            b.ingest(f"{k:064x}", 100, 500, mtime_ns=b.clock_ns)
        env = {gc_apply.DELAY_ENV: "0.002"}
        procs = [_gc_proc(root, "--grace", "0", env=env) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert_consistent(root)
        assert not (root / "ingest").exists() or not any((root / "ingest").iterdir())
        assert _held(root) == set()
        assert api.gc(root, Policy(grace_ns=0)).deleted == ()


@pytest.mark.slow
def test_pin_during_gc_is_never_left_dangling(tmp_path: Path) -> None:
    """Issue 10 item 3: pin and gc exclude each other (a flock on DIR): a pin that reported
    success names a manifest that is there, with its blobs, whatever the interleaving."""
    for trial, offset in enumerate((0.0, 0.15, 0.4)):
        root = tmp_path / f"p{trial}"
        history_dir(root, exports=8, layers=3, shared=1)
        victim = api.history(root).exports[-1].digest
        proc = _gc_proc(root, "--grace", "0", env={gc_apply.DELAY_ENV: "0.01"})
        time.sleep(offset)
        try:
            api.pin(root, victim, f"keep{trial}")
            pinned = True
        except Exception as e:  # a clear refusal is fine; a dangling success is not
            assert getattr(e, "exit_code", None) in (5, 6, 7), e
            pinned = False
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        if pinned:
            e = next(e for e in api.history(root).exports if e.digest == victim)
            assert e.complete and f"keep{trial}" in e.pins
        assert_consistent(root)


def _upload(root: Path, scratch: Path, digest: str) -> None:
    """Write a blob as BuildKit's content store does (ingest/<h>/data, then a rename into
    blobs/), unless it is present (BuildKit never rewrites a blob nor touches its mtime)."""
    name = digest[7:]
    target = root / "blobs" / "sha256" / name
    if target.exists():
        return
    ing = root / "ingest" / f"{name}-{threading.get_ident()}"
    ing.mkdir(parents=True, exist_ok=True)
    (ing / "data").write_bytes((scratch / "blobs" / "sha256" / name).read_bytes())
    os.rename(ing / "data", target)
    os.chmod(target, 0o444)
    ing.rmdir()


def _exporter_loop(
    root: Path, scratch: Path, stop: threading.Event, landed: list[str], errors: list[str]
) -> None:
    """BuildKit-like exports, back to back: an identical re-export of an older export (nothing
    written), one re-using an old layer, and a fresh one, in BuildKit's order (check what is
    present, write layers, config, manifest, then the in-place index.json rewrite under its
    flock). The documents are made in `scratch` and uploaded. What it raises goes to `errors`
    (the test fails on it, rather than waiting for exports that never come)."""
    try:
        _exports(root, scratch, stop, landed)
    except BaseException:
        errors.append(traceback.format_exc())


def _exports(root: Path, scratch: Path, stop: threading.Event, landed: list[str]) -> None:
    b = Builder(scratch)
    k = 0
    while not stop.is_set():
        snap = api.history(root)
        older = [e for e in snap.exports if not e.current and e.complete]
        kind = k % 3
        size = _size_now(root, older[-1].digest) if kind == 0 and older else None
        if size is not None:  # identical to an older export: found present, nothing written
            target = older[-1].digest
            time.sleep(0.05)
            _repoint(root, target, size=size)
        else:
            reused: list[dict[str, Any]] = []
            if kind == 1 and older:  # old layers found present now, named by the manifest later
                with suppress(FileNotFoundError):  # (unless gc moved that manifest just now)
                    doc = json.loads((root / "blobs" / "sha256" / older[-1].digest[7:]).read_bytes())
                    reused = doc["layers"][:2]
            fresh = b.layer(f"fresh-{k}", created_ns=time.time_ns())
            target = b.export([*reused, fresh], tag=None, mtime_ns=time.time_ns())
            manifest = json.loads((scratch / "blobs" / "sha256" / target[7:]).read_bytes())
            time.sleep(0.05)
            for d in (fresh["digest"], manifest["config"]["digest"], target):
                _upload(root, scratch, d)
            _repoint(root, target)
        landed.append(target)
        k += 1
        time.sleep(0.1)


@pytest.mark.slow
def test_back_to_back_gc_during_exports_loses_nothing(tmp_path: Path) -> None:
    """gc looping with default settings while exports land: after the loop and one more gc,
    every export that landed and is still current is complete; nothing was deleted for good."""
    root = tmp_path / "cache"
    history_dir(root, exports=10, layers=3, shared=1)
    stop = threading.Event()
    landed: list[str] = []
    errors: list[str] = []
    t = threading.Thread(target=_exporter_loop, args=(root, tmp_path / "scratch", stop, landed, errors))
    t.start()
    runs = 0
    deadline = time.monotonic() + 300
    try:
        while (runs < 6 or len(landed) < 6) and t.is_alive() and time.monotonic() < deadline:
            p = _gc_proc(root, env={gc_apply.SETTLE_ENV: "0.3"})
            _, err = p.communicate(timeout=120)
            assert p.returncode in (0, 7), err  # 7: the exporter held the lock too long
            runs += 1
    finally:
        stop.set()
        t.join(timeout=120)
    assert not errors, errors[0]
    assert runs >= 6 and len(landed) >= 6, (runs, len(landed))
    api.gc(root, Policy())
    assert_consistent(root)
    index = json.loads((root / "index.json").read_bytes())
    for entry in index["manifests"]:
        d = entry["digest"]
        e = next(e for e in api.history(root).exports if e.digest == d)
        assert e.complete, (d, e.missing)
    # Default grace: nothing was deleted for good, so every landed export is still whole
    # (in blobs/ or in the quarantine).
    held_or_present = blob_names(root) | _held(root)
    for d in landed:
        assert d[7:] in held_or_present


def _fs_type_by_stat(path: Path) -> str:
    """GNU stat's own name for the filesystem of `path` (statfs's f_type)."""
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.mark.parametrize("where", ["/dev/shm", "tmp_path"])
def test_purge_threads_follow_the_filesystem(where: str, tmp_path: Path) -> None:
    """On tmpfs an unlink is CPU work: no more purge threads than cores; elsewhere (a disk,
    where each unlink may wait on the device) PURGE_WORKERS. The type is told by device
    number from /proc/self/mountinfo, and agrees with GNU stat's statfs."""
    from ocicache.store import quarantine

    path = Path(where) if where != "tmp_path" else tmp_path
    if not path.is_dir():
        pytest.skip(f"{path} does not exist here")
    told = _fs_type_by_stat(path)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mine = quarantine._fs_type(os.fstat(fd).st_dev)
        workers = quarantine.purge_workers(fd)
    finally:
        os.close(fd)
    if told in ("tmpfs", "ramfs"):
        assert mine == told
        assert workers == min(quarantine.PURGE_WORKERS, len(os.sched_getaffinity(0)))
    else:
        assert mine not in ("tmpfs", "ramfs") and mine is not None
        assert workers == quarantine.PURGE_WORKERS


def test_fs_type_of_an_unknown_device_is_none() -> None:
    from ocicache.store import quarantine

    assert quarantine._fs_type(os.makedev(4095, 1048575)) is None
