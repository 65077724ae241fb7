"""The between-run blob cache: same answers as no cache, never inside DIR, never an error."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ocicache import api
from ocicache.cli import render
from ocicache.core.gc_plan import Policy
from ocicache.store.cache import READS_DIR
from ocicache.store.layout import Layout
from ocicache.synth import Builder, compact, history_dir


def _history(directory: Path) -> str:
    return render.dumps(render.history_json(api.history(directory, use_cache=True))).decode()


def _blobs(directory: Path) -> str:
    snap, rows = api.blobs(directory, use_cache=True)
    return render.dumps(render.blobs_json(snap, rows)).decode()


def _tree(directory: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), directory)] = (
                st.st_size,
                st.st_mtime_ns,
                st.st_mode,
            )
    return out


def _uncached(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    with monkeypatch.context() as m:
        m.setenv("OCICACHE_NO_CACHE", "1")
        return _history(directory), _blobs(directory)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "cache"
    b = history_dir(directory, exports=4, layers=5, orphans=3, tags=("latest", "pr"), shared=2)
    b.blob(b"{ not json")  # JSON-looking but malformed: a warning and a bad document
    b.blob(
        compact(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "application/x", "digest": "sha256:" + "0" * 64, "size": -1},
                "layers": [],
            }
        )
    )  # a manifest that fails the schema
    return directory


def _kept_file() -> Path:
    """The one kept read (these tests read one directory at a time)."""
    (path,) = (Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / READS_DIR).iterdir()
    return path


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    opened: list[str] = []
    real_read, real_head = Layout.read_blob, Layout.read_blob_head

    def read_blob(self: Layout, digest: object, limit: int) -> bytes:
        opened.append(str(digest))
        return real_read(self, digest, limit)  # type: ignore[arg-type]

    def read_blob_head(self: Layout, blob: object, n: int) -> bytes:
        opened.append(str(getattr(blob, "digest", blob)))
        return real_head(self, blob, n)  # type: ignore[arg-type]

    monkeypatch.setattr(Layout, "read_blob", read_blob)
    monkeypatch.setattr(Layout, "read_blob_head", read_blob_head)
    return opened


def test_second_run_gives_the_same_answer_and_opens_no_blob(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _uncached(cache_dir, monkeypatch)
    before = _tree(cache_dir)
    assert (_history(cache_dir), _blobs(cache_dir)) == expected  # first run: fills the cache
    assert _kept_file().is_file()
    opened = _counting_reads(monkeypatch)
    assert (_history(cache_dir), _blobs(cache_dir)) == expected
    assert opened == []
    assert _tree(cache_dir) == before  # nothing written into DIR


def test_corrupt_cache_file_is_ignored(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _uncached(cache_dir, monkeypatch)
    _history(cache_dir)
    path = _kept_file()
    data = path.read_bytes()
    for garbage in (data[: len(data) // 2], b"", b"\x00garbage", data[:-7] + b"1234567"):
        path.write_bytes(garbage)
        assert (_history(cache_dir), _blobs(cache_dir)) == expected


def test_a_flipped_bit_in_the_cache_is_a_miss(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _uncached(cache_dir, monkeypatch)
    _history(cache_dir)
    path = _kept_file()
    data = bytearray(path.read_bytes())
    for offset in (5, len(data) // 3, len(data) - 2):
        damaged = bytearray(data)
        damaged[offset] ^= 0x04
        path.write_bytes(bytes(damaged))
        assert (_history(cache_dir), _blobs(cache_dir)) == expected


def test_a_blob_whose_size_changed_is_read_again(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _history(cache_dir)  # every blob is now in the cache
    blobs = cache_dir / "blobs" / "sha256"
    # Turn an orphan (cached: not JSON) into a cache manifest (different size) under its name:
    # the file no longer matches its digest, and the cache must not hide what it now holds.
    index = json.loads((cache_dir / "index.json").read_bytes())
    manifest_digest = index["manifests"][-1]["digest"]
    manifest = (blobs / manifest_digest[7:]).read_bytes()
    orphan = next(
        p
        for p in sorted(blobs.iterdir())
        if p.stat().st_size != len(manifest) and p.read_bytes()[:1] == b"\x1f"
    )
    os.chmod(orphan, 0o644)
    orphan.write_bytes(manifest)
    expected = _uncached(cache_dir, monkeypatch)
    assert orphan.name in expected[0]  # the uncached read finds it as an export
    assert (_history(cache_dir), _blobs(cache_dir)) == expected


def test_truncated_manifest_is_not_answered_from_the_cache(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _history(cache_dir)
    index = json.loads((cache_dir / "index.json").read_bytes())
    path = cache_dir / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[: len(data) // 2])
    expected = _uncached(cache_dir, monkeypatch)
    assert "truncated" in expected[0] or "malformed" in expected[0]
    assert (_history(cache_dir), _blobs(cache_dir)) == expected


def test_cache_never_lives_inside_dir(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _tree(cache_dir)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir / "xdg"))
    _history(cache_dir)
    _history(cache_dir)
    assert _tree(cache_dir) == before


def test_a_library_read_writes_nothing_unless_asked(cache_dir: Path) -> None:
    """api calls keep no blob facts by default (the CLI asks for them): nothing appears under
    XDG_CACHE_HOME, and a read with use_cache=True then finds nothing to reuse."""
    xdg = Path(os.environ["XDG_CACHE_HOME"])
    before = sorted(xdg.rglob("*"))
    api.history(cache_dir)
    api.blobs(cache_dir)
    api.du(cache_dir)
    api.show(cache_dir, "~0")
    api.diff(cache_dir)
    api.ref_all(cache_dir)
    api.read(cache_dir)
    api.gc(cache_dir, Policy(keep_last=1, grace_ns=0), dry_run=True)
    api.gc(cache_dir, Policy(keep_last=1, grace_ns=0))
    assert sorted(xdg.rglob("*")) == before == []
    _history(cache_dir)
    assert _kept_file().is_file()


def test_the_cli_keeps_the_facts(cache_dir: Path) -> None:
    from clirun import run_inprocess

    assert run_inprocess("history", "--json", str(cache_dir)).code == 0
    assert _kept_file().is_file()


def test_no_cache_env_writes_nothing(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCICACHE_NO_CACHE", "1")
    _history(cache_dir)
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "ocicache").exists()


def test_other_directories_share_the_cache_safely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two directories holding some of the same digests: each answer equals its uncached one.
    one = tmp_path / "one"
    history_dir(one, exports=2, layers=3, orphans=1)
    two = tmp_path / "two"
    b = Builder(two, oci_layout=False, index_media_type=False)
    layers = [b.layer(f"e0l{i}") for i in range(3)]
    b.export(layers, shape="B")
    b.export(layers[:2], shape="C", tag="old")
    expected = [_uncached(d, monkeypatch) for d in (one, two)]
    for _ in range(2):
        assert [(_history(d), _blobs(d)) for d in (one, two)] == expected


def test_stale_stamp_is_ignored(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read another ocicache kept (another stamp) is not used, even one that would be a hit."""
    from ocicache.store.cache import read_stamp

    _history(cache_dir)
    path = _kept_file()
    data = path.read_bytes()
    path.write_bytes(data.replace(read_stamp().encode(), b"ocicache-read/0/old", 1))
    opened = _counting_reads(monkeypatch)
    expected = _uncached(cache_dir, monkeypatch)
    opened.clear()
    assert (_history(cache_dir), _blobs(cache_dir)) == expected
    assert opened  # read again: the old file was not used ...
    assert read_stamp().encode() in path.read_bytes()  # ... and was replaced


def test_a_changed_directory_opens_only_new_blobs(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new export (new blobs, a new index.json) misses the kept read; its facts still spare
    opening every blob it knows."""
    b = history_dir(cache_dir / "more", exports=1, layers=2, orphans=0)  # blobs to copy over
    _history(cache_dir)
    new = []
    for p in sorted((cache_dir / "more" / "blobs" / "sha256").iterdir()):
        target = cache_dir / "blobs" / "sha256" / p.name
        if not target.exists():
            shutil.copy(p, target)
            new.append("sha256:" + p.name)
    shutil.rmtree(cache_dir / "more")
    del b
    expected = _uncached(cache_dir, monkeypatch)
    opened = _counting_reads(monkeypatch)
    assert (_history(cache_dir), _blobs(cache_dir)) == expected
    assert opened and set(opened) <= set(new)
