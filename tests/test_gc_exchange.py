"""gc's exchange: when it drops most of blobs/sha256, it links what it keeps into a new folder
made like it, swaps the two in one step, and puts back what it did not mean to move.

Every interleaving that matters is forced at its exact point with a hook (a blob landing between
gc's last look and the exchange, a kill right after it, a file re-written since the plan), so no
test depends on a race happening.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from gc_helpers import assert_consistent, blob_names

from ocicache import api
from ocicache.core.gc_plan import Policy
from ocicache.ops import gc_apply
from ocicache.store import quarantine
from ocicache.synth import history_dir

QUARANTINE = Path(".ocicache") / "quarantine"


@pytest.fixture(autouse=True)
def _quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    monkeypatch.delenv(gc_apply.EXCHANGE_ENV, raising=False)


def _held(root: Path) -> set[str]:
    q = root / QUARANTINE
    return {p.name for p in q.glob("q-*/sha256/*")} if q.exists() else set()


def _cache(tmp_path: Path, orphans: int = 0) -> tuple[Path, set[str]]:
    """12 exports of 3 layers, `latest` at the newest: gc keeps 5 blobs and drops ~30."""
    root = tmp_path / "cache"
    history_dir(root, exports=12, layers=3, orphans=orphans, shared=1)
    return root, blob_names(root)


def _folder(root: Path) -> int:
    return (root / "blobs" / "sha256").stat().st_ino


def _new_layer(root: Path, seed: bytes) -> str:
    """Write a layer blob into blobs/sha256 by path, as BuildKit's rename from ingest/ does."""
    import hashlib

    data = b"\x1f\x8b\x08\x00" + seed * 8
    name = hashlib.sha256(data).hexdigest()
    tmp = root / "ingest-data"
    tmp.write_bytes(data)
    os.rename(tmp, root / "blobs" / "sha256" / name)
    return name


def test_exchange_is_used_and_keeps_exactly_what_the_plan_keeps(tmp_path: Path) -> None:
    root, before = _cache(tmp_path)
    ino = _folder(root)
    r = api.gc(root, Policy())
    assert _folder(root) != ino
    moved = {b.name for b in r.deleted}
    assert moved and blob_names(root) == before - moved and _held(root) == moved
    assert not list((root / ".ocicache").glob("*.dropped"))  # the journal is gone once settled
    assert_consistent(root)


def test_a_blob_landing_just_before_the_exchange_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BuildKit renames a new layer into blobs/sha256 after gc's last look: it lands in the
    folder gc exchanges out, and the settle links it back at once."""
    root, before = _cache(tmp_path)
    real = quarantine.exchange
    landed: list[str] = []

    def land_then_exchange(*args: Any) -> bool:
        if not landed:
            landed.append(_new_layer(root, b"arrival"))
        return real(*args)

    monkeypatch.setattr(quarantine, "exchange", land_then_exchange)
    r = api.gc(root, Policy())
    assert landed
    name = landed[0]
    assert (root / "blobs" / "sha256" / name).exists() and name not in _held(root)
    assert name not in {b.name for b in r.deleted}
    assert blob_names(root) == before - {b.name for b in r.deleted} | {name}
    assert_consistent(root)


@pytest.mark.parametrize("then", ["gc", "pin", "repair"])
def test_killed_right_after_the_exchange_the_next_run_settles_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str
) -> None:
    """A run dies between the exchange and its settle, with a blob BuildKit renamed in just
    before: the next gc, pin or repair reads the journal, puts back everything it does not
    name (the kept blobs' second links, the arrival), and drops it."""
    root, before = _cache(tmp_path)
    latest = api.history(root).exports[0].digest

    class Killed(Exception):
        pass

    def die(*args: Any) -> Any:
        raise Killed

    monkeypatch.setattr(gc_apply, "settle_exchange", die)
    with pytest.raises(Killed):
        api.gc(root, Policy())
    monkeypatch.undo()
    monkeypatch.setenv(gc_apply.SETTLE_ENV, "0")
    batch = next((root / QUARANTINE).glob("q-*/sha256"))
    kept = blob_names(root)
    assert kept < before and set(os.listdir(batch)) == before  # dropped + kept links
    assert list((root / ".ocicache").glob("*.dropped"))
    arrival = _new_layer(root, b"late")
    os.rename(root / "blobs" / "sha256" / arrival, batch / arrival)  # as if it landed there
    if then == "gc":
        api.gc(root, Policy())
    elif then == "pin":
        api.pin(root, latest, "keep")
    else:
        api.repair(root)
    assert arrival in blob_names(root) and arrival not in _held(root)
    assert kept <= blob_names(root) and not (kept & _held(root))
    assert _held(root) == before - kept
    assert not list((root / ".ocicache").glob("*.dropped"))
    assert_consistent(root)


def test_a_journal_cut_short_means_the_exchange_never_happened(tmp_path: Path) -> None:
    """Killed while writing the journal or linking the kept blobs: the batch folder holds only
    links of blobs still in blobs/; the next run removes them, and loses nothing."""
    root, before = _cache(tmp_path)
    batch = root / QUARANTINE / "q-1-1" / "sha256"
    batch.mkdir(parents=True)
    for name in sorted(before)[:3]:
        os.link(root / "blobs" / "sha256" / name, batch / name)
    (root / ".ocicache" / "q-1-1.sha256.dropped").write_text("\n".join(sorted(before)[:2]))
    r = api.gc(root, Policy())
    assert blob_names(root) | _held(root) == before
    assert not (batch.exists() and os.listdir(batch))
    assert not list((root / ".ocicache").glob("*.dropped"))
    assert {b.name for b in r.deleted} == _held(root)
    assert_consistent(root)


@pytest.mark.parametrize("grace", [0, 3600])
def test_a_blob_rewritten_since_the_plan_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: int
) -> None:
    """The exchange moves the whole folder: a dropped blob that is no longer the file the plan
    saw (written anew: another mtime) is found by the same lstat the blob-by-blob move makes,
    in the quarantine (at once with a grace, in the purge with `--grace 0`), and put back."""
    root, _ = _cache(tmp_path)
    touched: list[str] = []
    real = gc_apply.settle_exchange

    def settle_then_touch(layout: Any, batch: str, algorithm: str, dropped: Any) -> Any:
        out = real(layout, batch, algorithm, dropped)
        name = sorted(dropped)[0]
        os.utime(root / QUARANTINE / batch / algorithm / name, ns=(1, 1))
        touched.append(name)
        return out

    monkeypatch.setattr(gc_apply, "settle_exchange", settle_then_touch)
    r = api.gc(root, Policy(grace_ns=grace * 10**9))
    name = touched[0]
    assert (root / "blobs" / "sha256" / name).exists() and name not in _held(root)
    assert name not in {b.name for b in r.deleted}
    assert any(name in w and "re-written since the plan" in w for w in r.warnings), r.warnings
    assert _held(root) == (set() if grace == 0 else {b.name for b in r.deleted})
    assert_consistent(root)


def _same_as_blob_by_blob(tmp_path: Path, root: Path, r: Any) -> None:
    other = tmp_path / "other"
    history_dir(other, exports=12, layers=3, shared=1)
    os.environ[gc_apply.EXCHANGE_ENV] = "0"
    try:
        expected = api.gc(other, Policy())
    finally:
        del os.environ[gc_apply.EXCHANGE_ENV]
    assert [b.digest for b in r.deleted] == [b.digest for b in expected.deleted]
    assert blob_names(root) == blob_names(other)


def test_the_new_folder_gets_the_extended_attributes_of_the_old(tmp_path: Path) -> None:
    """blobs/sha256 carries extended attributes (here a user one; an ACL or a security label
    alike): the folder put in its place carries the same."""
    root, _ = _cache(tmp_path)
    folder = root / "blobs" / "sha256"
    try:
        os.setxattr(folder, "user.ocicache-test", b"kept")
    except OSError:
        pytest.skip("no user extended attributes here")
    ino = _folder(root)
    api.gc(root, Policy())
    assert _folder(root) != ino
    assert os.getxattr(folder, "user.ocicache-test") == b"kept"
    assert_consistent(root)


def test_no_exchange_when_the_folder_cannot_be_made_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An extended attribute of blobs/sha256 that cannot be read (or given to a new folder):
    gc moves blob by blob instead."""
    root, _ = _cache(tmp_path)
    ino = _folder(root)
    monkeypatch.setattr(gc_apply, "xattrs", lambda fd: None)
    r = api.gc(root, Policy())
    assert _folder(root) == ino
    _same_as_blob_by_blob(tmp_path, root, r)
    assert_consistent(root)


def test_no_exchange_when_an_attribute_cannot_be_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = _cache(tmp_path)
    ino = _folder(root)
    real = quarantine.xattrs
    monkeypatch.setattr(gc_apply, "xattrs", lambda fd: {**(real(fd) or {}), "security.selinux": b"label\0"})

    def refuse(*args: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "setxattr", refuse)
    r = api.gc(root, Policy())
    assert _folder(root) == ino
    _same_as_blob_by_blob(tmp_path, root, r)
    assert_consistent(root)


def test_no_exchange_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = _cache(tmp_path)
    ino = _folder(root)

    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    r = api.gc(root, Policy())
    assert _folder(root) == ino
    _same_as_blob_by_blob(tmp_path, root, r)
    assert_consistent(root)


def test_blobs_changing_before_the_exchange_mean_blob_by_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer lands while gc links the kept blobs: blobs/sha256 is not the folder gc listed,
    so it does not exchange it (blob by blob never touches what it did not plan)."""
    root, before = _cache(tmp_path)
    ino = _folder(root)
    real = gc_apply._link_kept
    landed: list[str] = []

    def link_then_land(*args: Any) -> bool:
        ok = real(*args)
        landed.append(_new_layer(root, b"while linking"))
        return ok

    monkeypatch.setattr(gc_apply, "_link_kept", link_then_land)
    r = api.gc(root, Policy())
    assert _folder(root) == ino
    assert landed[0] in blob_names(root)
    assert blob_names(root) == before - {b.name for b in r.deleted} | {landed[0]}
    assert_consistent(root)


def test_strays_mean_blob_by_blob(tmp_path: Path) -> None:
    root, _ = _cache(tmp_path)
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"x")
    ino = _folder(root)
    api.gc(root, Policy())
    assert _folder(root) == ino and (root / "blobs" / "sha256" / "not-a-digest").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
def test_the_new_folder_has_the_owner_and_mode_of_the_old(tmp_path: Path) -> None:
    """gc run by root on a user's cache: the folder BuildKit writes into stays the user's."""
    root, _ = _cache(tmp_path)
    folder = root / "blobs" / "sha256"
    os.chown(folder, 4321, 4322)
    os.chmod(folder, 0o2750)
    ino = _folder(root)
    api.gc(root, Policy())
    st = folder.stat()
    assert st.st_ino != ino
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (4321, 4322, 0o2750)


def test_many_blobs_are_purged_in_threads(tmp_path: Path) -> None:
    """More blobs than one purge thread takes at a time: all of them go, counted once."""
    root, before = _cache(tmp_path, orphans=3 * quarantine._CHUNK + 7)
    r = api.gc(root, Policy(grace_ns=0))
    assert r.quarantine is not None
    assert r.quarantine.purged == (len(r.deleted), sum(b.size for b in r.deleted))
    assert len(r.deleted) > 3 * quarantine._CHUNK and _held(root) == set()
    assert not (root / ".ocicache").exists()
    assert blob_names(root) == before - {b.name for b in r.deleted}
    assert_consistent(root)
