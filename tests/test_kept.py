"""The kept read (ops/kept.py): a second read of an unchanged directory reads no document and
computes no export, and gives exactly what a fresh read gives; any change to what the read
consumed is a miss."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from ocicache.core.exports import build_exports
from ocicache.ops import read as readmod
from ocicache.ops.read import read_inventory, read_store
from ocicache.store.cache import READS_DIR, ReadCache
from ocicache.store.layout import Layout
from ocicache.store.listing import Listing

REPO = Path(__file__).parent.parent
FIXTURES = sorted(p for p in (REPO / "fixtures" / "buildkit-v0.32.2").iterdir() if p.is_dir())


def _view(inv: Any, exports: list[Any]) -> dict[str, Any]:
    """Everything a read yields, comparable (errors by their fields, not their identity)."""
    out = {
        name: getattr(inv, name)
        for name in inv.__dataclass_fields__
        if name not in ("bad_docs", "index_error", "oci_layout")
    }
    out["bad_docs"] = {
        d: (type(e).__name__, e.message, e.file, e.where, e.hint) for d, e in inv.bad_docs.items()
    }
    out["index_error"] = None if inv.index_error is None else str(inv.index_error)
    out["oci_layout"] = repr(inv.oci_layout) if isinstance(inv.oci_layout, Exception) else inv.oci_layout
    out["exports"] = exports
    return out


def _fresh(d: Path) -> dict[str, Any]:
    with Layout(d) as layout:
        inv = read_inventory(layout)
    return _view(inv, build_exports(inv))


def _cached(d: Path, listing: bool = False) -> dict[str, Any]:
    with Layout(d, Listing(str(d)) if listing else None) as layout:
        inv, exports = read_store(layout, ReadCache.default(layout.root))
    return _view(inv, exports)


def _no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> bool:
        raise AssertionError("the documents were read: the kept read was not used")

    monkeypatch.setattr(readmod, "_read_documents", refuse)


def _kept_files() -> list[Path]:
    reads = Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / READS_DIR
    return sorted(reads.iterdir()) if reads.is_dir() else []


@pytest.mark.alone  # (through a listing: it forks only in a process without other threads)
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_kept_read_is_the_fresh_read(fixture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "c"
    shutil.copytree(fixture, d)
    expected = _fresh(d)
    assert _cached(d) == expected  # reads, and keeps the read
    assert len(_kept_files()) == 1
    with monkeypatch.context() as m:
        _no_reading(m)
        assert _cached(d) == expected  # the kept read, through Layout's own scan
        assert _cached(d, listing=True) == expected  # and through a listing's


def test_every_change_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    _cached(d)
    blobs = sorted((d / "blobs" / "sha256").iterdir())
    changes = [
        lambda: os.utime(blobs[0], ns=(0, blobs[0].stat().st_mtime_ns + 1)),  # a blob's mtime
        lambda: (d / "blobs" / "sha256" / ("7" * 64)).write_bytes(b"{}"),  # a new blob
        lambda: (d / "index.json").write_bytes((d / "index.json").read_bytes() + b"\n"),  # index.json
        lambda: (d / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}'),  # oci-layout
        lambda: (d / "ingest" / "x").mkdir(parents=True),  # ingest/
        lambda: blobs[1].unlink(),  # a blob gone
    ]
    for i, change in enumerate(changes):
        change()
        expected = _fresh(d)
        calls: list[int] = []
        real = readmod._read_documents

        def counting(*args: Any, real: Any = real, calls: list[int] = calls) -> bool:
            calls.append(1)
            return bool(real(*args))

        with monkeypatch.context() as m:
            m.setattr(readmod, "_read_documents", counting)
            assert _cached(d) == expected
        assert calls == [1], f"change {i}"  # a miss: read again ...
        with monkeypatch.context() as m:
            _no_reading(m)
            assert _cached(d) == expected  # ... and kept again


def test_damaged_kept_file_is_a_miss(tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    expected = _fresh(d)
    _cached(d)
    (kept,) = _kept_files()
    data = bytearray(kept.read_bytes())
    for damage in (
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # a flipped bit
        lambda b: b"OCR1 other-stamp\n" + b[b.index(b"\n") + 1 :],  # another ocicache's
        lambda b: b"",
    ):
        kept.write_bytes(bytes(damage(data)))
        assert _cached(d) == expected
        kept.write_bytes(bytes(data))


def test_unreadable_blob_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a read found when a file could not be read is the file's state, not its content: it
    is used for that run and not kept."""
    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    real = Layout.read_blob_head

    def failing(self: Layout, blob: Any, n: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Layout, "read_blob_head", failing)
    with Layout(d) as layout:
        inv, _ = read_store(layout, ReadCache.default(layout.root))
    assert any("cannot read" in str(p) for p in inv.problems)
    assert _kept_files() == []
    monkeypatch.setattr(Layout, "read_blob_head", real)
    assert _cached(d) == _fresh(d)
    assert len(_kept_files()) == 1


def test_no_cache_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    monkeypatch.setenv("OCICACHE_NO_CACHE", "1")
    assert _cached(d) == _fresh(d)
    assert _kept_files() == []


def test_kept_reads_are_pruned_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file per directory read, at most MAX_READS: a CI host reading many temporary
    directories does not fill the cache home; the directory read last is never the one pruned."""
    from ocicache.store import cache as cache_mod

    monkeypatch.setattr(cache_mod, "MAX_READS", 3)
    dirs = []
    for i in range(5):
        d = tmp_path / f"c{i}"
        shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
        dirs.append(d)
    for d in dirs[:3]:
        _cached(d)
    assert len(_kept_files()) == 3
    os.utime(_kept_files()[0], ns=(1, 1))  # the oldest use
    oldest = _kept_files()[0].name
    _cached(dirs[3])
    names = [p.name for p in _kept_files()]
    assert len(names) == 3 and oldest not in names
    with monkeypatch.context() as m:
        _no_reading(m)
        _cached(dirs[3])  # the newest is kept


def test_the_key_takes_any_error_and_any_text(tmp_path: Path) -> None:
    """Whatever made index.json or oci-layout unusable, and whatever text a problem holds (a lone
    surrogate from a name), the key is made: a read never fails for its cache."""
    from ocicache.base.errors import BusyError, NotFoundError
    from ocicache.core.inventory import Problem
    from ocicache.ops import kept

    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    with Layout(d) as layout:
        inv = read_inventory(layout)
    keys = set()
    for err in (None, BusyError("busy", file="index.json"), NotFoundError("gone", hint="\udcff")):
        inv.index_error = err
        inv.oci_layout = err
        inv.problems = [Problem("warning", "blobs/sha256/\udcff\ud800", "", "odd")]
        keys.add(kept.key(inv, b"x", "stamp"))
    assert len(keys) == 3


def test_the_old_per_digest_file_is_deleted(tmp_path: Path) -> None:
    """0.5 kept per-digest facts in blobs.marshal; the kept read replaces it, and the first read
    kept deletes it (README: what changed in 0.6.0)."""
    old = Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / "blobs.marshal"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_bytes(b"OCB1 from 0.5")
    d = tmp_path / "c"
    shutil.copytree(REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags", d)
    _cached(d)
    assert len(_kept_files()) == 1
    assert not old.exists()


def _first_through_listing(d: Path) -> dict[str, Any]:
    """A first read (no kept read: every blob sniffed) through a listing whose child reads the
    heads ahead (Layout.sniff_ahead)."""
    with Layout(d, Listing(str(d))) as layout:
        inv, exports = read_store(layout, ReadCache.default(layout.root))
    return _view(inv, exports)


@pytest.mark.alone  # (through a listing: it forks only in a process without other threads)
@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_first_read_with_heads_read_ahead_is_the_fresh_read(fixture: Path, tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(fixture, d)
    assert _kept_files() == []
    assert _first_through_listing(d) == _fresh(d)


@pytest.mark.alone  # (through a listing: it forks only in a process without other threads)
def test_first_read_with_heads_read_ahead_on_hostile_layouts(tmp_path: Path) -> None:
    from test_hostile import CASES, _build

    for i, c in enumerate(CASES):
        (tmp_path / str(i)).mkdir()
        base, _, _ = _build(tmp_path / str(i), c)
        expected = _fresh(base.root)
        for f in _kept_files():
            f.unlink()
        assert _first_through_listing(base.root) == expected, c.name
