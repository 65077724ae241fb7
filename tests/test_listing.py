"""The find listing (listing.py) gives Layout.scan_blobs exactly what its own lstat pass gives."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_hostile import CASES, Case, _build

from ocicache.store.base import BlobScan
from ocicache.store.layout import Layout
from ocicache.store.listing import FIND, Listing

REPO = Path(__file__).parent.parent
FIXTURES = sorted(p for p in (REPO / "fixtures" / "buildkit-v0.32.2").iterdir() if p.is_dir())

pytestmark = pytest.mark.skipif(not any(os.access(f, os.X_OK) for f in FIND), reason="no GNU find")


def _both(d: Path) -> tuple[BlobScan, BlobScan | None]:
    """(scandir's scan, the listing's scan or None when it was not usable)."""
    with Layout(d) as layout:
        plain = layout.scan_blobs()
    with Layout(d) as layout:
        from_listing = layout._scan_listing(Listing(str(d)))
    return plain, from_listing


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_fixtures_same_scan(fixture: Path, tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(fixture, d)
    plain, listed = _both(d)
    assert listed is not None  # it was used ...
    assert listed == plain  # ... and gave the same blobs, sizes, mtimes, modes and strays
    assert len(plain.blobs) > 0


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_hostile_layouts_same_scan(tmp_path: Path, c: Case) -> None:
    base, _, _ = _build(tmp_path, c)
    plain, listed = _both(base.root)
    assert listed is None or listed == plain
    with Layout(base.root, Listing(str(base.root))) as layout:  # and through scan_blobs
        assert layout.scan_blobs() == plain


def test_odd_names_and_entries(tmp_path: Path) -> None:
    """Spaces, newlines and non-UTF-8 bytes in names, special files, folders, sha512."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    sha = d / "blobs" / "sha256"
    (sha / "a name with spaces").write_bytes(b"x")
    (sha / "new\nline").write_bytes(b"yy")
    (sha / os.fsdecode(b"\xff\xfe")).write_bytes(b"zzz")
    (sha / ("0" * 64)).mkdir()
    (sha / ("0" * 64) / "deeper").write_bytes(b"not listed")
    os.mkfifo(sha / ("1" * 64))
    os.symlink("/etc/passwd", sha / ("2" * 64))
    (d / "blobs" / "sha512").mkdir()
    (d / "blobs" / "sha512" / ("3" * 128)).write_bytes(b"512")
    (d / "blobs" / "md5").mkdir()
    real = sorted(p for p in sha.iterdir() if p.is_file() and len(p.name) == 64)[0]
    os.chmod(real, 0o4640)  # setuid: find's %m prints it too
    plain, listed = _both(d)
    assert listed is not None
    assert listed == plain
    assert "sha512:" + "3" * 128 in listed.blobs


def test_another_directory_is_not_used(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURES[0], a)
    shutil.copytree(FIXTURES[0], b)
    with Layout(a) as layout:
        assert layout._scan_listing(Listing(str(b))) is None  # same names, other inodes


def test_changed_after_listing_keeps_the_listing_view(tmp_path: Path) -> None:
    """The scan is the listing's snapshot, taken when find ran; a second scan stats anew."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    listing = Listing(str(d))
    listing.result()
    before, _ = _both(d)
    (d / "blobs" / "sha256" / ("5" * 64)).write_bytes(b"late")
    with Layout(d, listing) as layout:
        assert layout.scan_blobs() == before
        assert "sha256:" + "5" * 64 in layout.scan_blobs().blobs  # a second scan stats anew


def test_no_find_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ocicache.store.listing as listing_mod

    monkeypatch.setattr(listing_mod, "FIND", ("/nonexistent/find",))
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    listing = Listing(str(d))
    assert listing.result() is None and listing.take_tree() is None
    with Layout(d) as plain, Layout(d, listing) as layout:
        assert layout.scan_blobs() == plain.scan_blobs()
