"""The listing (listing.py: a forked child runs the scan) gives Layout.scan_blobs exactly what its own
lstat pass gives, fingerprint included."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from test_hostile import CASES, Case, _build

from ocicache.store.base import BlobScan
from ocicache.store.layout import Layout
from ocicache.store.listing import Listing

REPO = Path(__file__).parent.parent
FIXTURES = sorted(p for p in (REPO / "fixtures" / "buildkit-v0.32.2").iterdir() if p.is_dir())


def _both(d: Path) -> tuple[BlobScan, BlobScan | None]:
    """(scandir's scan, the listing's scan or None when it was not usable)."""
    with Layout(d) as layout:
        plain = layout.scan_blobs()
    with Layout(d) as layout:
        data = Listing(str(d)).take()
        from_listing = layout.scan_from_columns(data) if data is not None else None
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
        data = Listing(str(b)).take()
        assert data is not None
        assert layout.scan_from_columns(data) is None  # same names, other inodes


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


def test_no_fork_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> int:
        raise OSError("no fork here")

    monkeypatch.setattr(os, "fork", refuse)
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    listing = Listing(str(d))
    assert listing.result() is None and listing.take() is None
    with Layout(d) as plain, Layout(d, listing) as layout:
        assert layout.scan_blobs() == plain.scan_blobs()


def test_a_child_that_fails_gives_no_listing(tmp_path: Path) -> None:
    """DIR is not a cache directory any more by the time the child opens it: no listing, and the
    parent scans itself (here: nothing to scan)."""
    d = tmp_path / "c"
    d.mkdir()
    listing = Listing(str(d))  # no index.json, no blobs/: Layout refuses it in the child
    assert listing.result() is None


def test_fingerprint_follows_every_lstat_field(tmp_path: Path) -> None:
    """Equal fingerprints only for equal scans: a new blob, a changed size, mtime or mode each
    change it (a kept read, ops/kept.py, is keyed on it)."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)

    def fp() -> bytes:
        with Layout(d) as layout:
            scan = layout.scan_blobs()
        assert len(scan.fingerprint) == 32
        return scan.fingerprint

    seen = {fp()}
    assert fp() in seen  # the same directory, the same fingerprint
    blob = sorted((d / "blobs" / "sha256").iterdir())[0]
    st = blob.stat()
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    seen.add(fp())
    os.chmod(blob, (st.st_mode & 0o777) ^ 0o040)
    seen.add(fp())
    with open(blob, "ab") as f:
        f.write(b"x")
    seen.add(fp())
    (d / "blobs" / "sha256" / ("5" * 64)).write_bytes(b"new")
    seen.add(fp())
    # Rewritten in place with the same size, its mtime set back: the ctime still tells.
    other = sorted((d / "blobs" / "sha256").iterdir())[1]
    st = other.stat()
    os.chmod(other, 0o644)
    data = other.read_bytes()
    other.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.chmod(other, st.st_mode & 0o777)
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    seen.add(fp())
    assert len(seen) == 6


def test_no_fork_with_other_threads(tmp_path: Path) -> None:
    """A process with other threads is not forked (a child could find their locks held): no
    listing, and Layout scans itself."""
    import threading

    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        listing = Listing(str(d))
        assert listing.result() is None
    finally:
        stop.set()
        t.join()
    assert Listing(str(d)).result() is not None  # alone again: the child scans


def test_early_listing_is_taken_only_for_its_directory(tmp_path: Path) -> None:
    """begin_early guesses DIR from the command line; begin uses that listing only for the very
    DIR typer parsed, and stops a wrong guess."""
    from ocicache.store import listing as mod

    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(FIXTURES[0], a)
    shutil.copytree(FIXTURES[0], b)
    mod.begin_early(["history", str(a), "--json"])
    early = mod._early.get(str(a))
    assert early is not None
    with mod.begin(str(a)) as got:
        assert got is early
    assert mod._early == {}
    mod.begin_early(["--debug", "show", str(a), "~1"])
    wrong = mod._early[str(a)]
    with mod.begin(str(b)) as got:
        assert got is not None and got is not wrong and got.root == str(b)
    assert mod._early == {} and wrong._pid is None  # stopped and reaped
    for argv in (
        ["gc", str(a)],
        ["pin", str(a), "x"],
        ["history", "registry://h/r"],
        ["du"],
        ["du", "--json"],
    ):
        mod.begin_early(argv)
        assert mod._early == {}, argv  # a real gc, a writer, a registry, no DIR: nothing begun
    mod.begin_early(["gc", str(a), "--dry-run"])
    assert list(mod._early) == [str(a)]
    mod.stop_early()


@pytest.mark.parametrize(
    ("code", "status"), [("None", 0), ("0", 0), ("3", 3), ("-1", 255), ("256", 0), ("'why'", 1)]
)
def test_the_console_script_exits_as_python_would(code: str, status: int) -> None:
    """cli/start.py leaves with os._exit (no teardown), with the status Python's own exit gives,
    and stdout flushed."""
    import subprocess
    import sys

    program = f"import sys; sys.stdout.write('out'); from ocicache.cli.start import _leave; _leave({code})"
    r = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == status
    assert r.stdout == "out"
    assert r.stderr == ("why\n" if code == "'why'" else "")


def test_the_scan_module_imports_nothing_heavy() -> None:
    """store/scan.py is what a listing's child runs right after the fork, before anything else
    loads: it imports os, marshal and format/names' constants, nothing else of ocicache or the
    standard library's heavier modules (README: Layout of the code)."""
    import subprocess
    import sys

    probe = (
        "import sys; before = set(sys.modules); import ocicache.store.scan; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(out) <= {
        "__future__",
        "ocicache",
        "ocicache.format",
        "ocicache.format.names",
        "ocicache.store",
        "ocicache.store.scan",
    }, out
