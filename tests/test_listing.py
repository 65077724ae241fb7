"""The listing (listing.py: a forked child runs the scan) gives Layout.scan_blobs exactly what its own
lstat pass gives, fingerprint included."""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_hostile import CASES, Case, _build

from ocicache.base.errors import CorruptError
from ocicache.store import scan
from ocicache.store.base import BlobScan
from ocicache.store.layout import Layout
from ocicache.store.listing import Listing

# Every test here is about what the listing's forked child does (conftest.py: `alone`).
pytestmark = pytest.mark.alone

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


# -- heads read ahead (store/scan.heads, listing.Heads, Layout.read_blob_head) ---------------


def _heads_both(d: Path) -> tuple[dict[str, bytes], dict[str, bytes], int]:
    """(every blob's head as Layout reads it itself, as read through a listing's child that was
    asked for heads, how many heads the child gave)."""
    with Layout(d) as layout:
        scan = layout.scan_blobs()
        plain = {}
        for digest, blob in scan.blobs.items():
            with contextlib.suppress(OSError, CorruptError):
                plain[digest] = layout.read_blob_head(blob, 64)
    given = 0
    with Layout(d, Listing(str(d))) as layout:
        layout.sniff_ahead()
        scan = layout.scan_blobs()
        heads = layout._heads
        ahead = {}
        if heads is not None:  # (None: the listing was not used, e.g. blobs/ is a symlink)
            real_get = heads.get

            def counting(alg: str, name: str) -> bytes | None:
                nonlocal given
                got = real_get(alg, name)
                given += got is not None
                return got

            heads.get = counting  # type: ignore[method-assign]
        for digest, blob in sorted(scan.blobs.items(), key=lambda db: db[1].mtime_ns, reverse=True):
            with contextlib.suppress(OSError, CorruptError):
                ahead[digest] = layout.read_blob_head(blob, 64)
    return plain, ahead, given


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.name)
def test_heads_read_ahead_are_the_heads(fixture: Path, tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(fixture, d)
    plain, ahead, given = _heads_both(d)
    assert ahead == plain and len(plain) > 0
    assert given == len(plain)  # every one came from the child (the listing was used)


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_hostile_layouts_same_heads(tmp_path: Path, c: Case) -> None:
    base, _, _ = _build(tmp_path, c)
    plain, ahead, _ = _heads_both(base.root)
    assert ahead == plain


def _serve(d: Path, between: Callable[[], None]) -> tuple[list[str], dict[int, bytes | None]]:
    """store/scan.serve run here: the scan's names (position order) and the records it sent,
    `between` run after the scan and before the heads (the parent's answer)."""
    sent: list[bytes] = []

    def go() -> bool:
        between()
        return True

    before = time.time_ns()
    scan.serve(str(d), sent.append, go)
    stream = b"".join(sent)
    assert before <= int.from_bytes(stream[:8], "big") <= time.time_ns()  # when the scan began
    size = int.from_bytes(stream[8:16], "big")
    columns = marshal.loads(stream[16 : 16 + size])
    names = [n for folder in columns[2] if len(folder) > 2 for n in folder[2]]
    records: dict[int, bytes | None] = {}
    order: list[int] = []
    i, rest = 0, stream[16 + size :]
    while i < len(rest):
        pos, n = int.from_bytes(rest[i : i + 4], "big"), rest[i + 4]
        records[pos] = None if n == 255 else rest[i + 5 : i + 5 + n]
        order.append(pos)
        i += 5 + (0 if n == 255 else n)
    assert len(order) == len(records)  # each entry once
    return names, records


def test_heads_of_files_changed_after_the_scan_are_not_sent(tmp_path: Path) -> None:
    """A blob rewritten in place (same size), replaced by a symlink, a FIFO or a bigger file, or
    removed, between the scan and the heads: no head is sent for it (the parent reads it
    itself); every other head is the file's own first 64 bytes, newest first."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    sha = d / "blobs" / "sha256"
    victims = sorted(p for p in sha.iterdir())[:5]

    def change() -> None:
        a, b, c, e, f = victims
        data = a.read_bytes()
        a.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        b.unlink()
        os.symlink("/etc/passwd", b)
        c.unlink()
        os.mkfifo(c)
        e.write_bytes(e.read_bytes() + b"more")
        f.unlink()

    names, records = _serve(d, change)
    changed = {p.name for p in victims}
    assert set(records) == set(range(len(names)))  # every entry (all regular at the scan), once
    for pos, head in records.items():
        name = names[pos]
        if name in changed:
            assert head is None, name
        else:
            assert head == (sha / name).read_bytes()[:64], name
    mtimes = [(sha / names[p]).stat().st_mtime_ns for p in records if names[p] not in changed]
    assert mtimes == sorted(mtimes, reverse=True)


def test_a_folder_replaced_after_the_scan_gives_no_heads(tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    sha = d / "blobs" / "sha256"

    def swap() -> None:
        shutil.copytree(sha, d / "blobs" / "copy")
        os.rename(sha, d / "blobs" / "old")
        os.rename(d / "blobs" / "copy", sha)

    _, records = _serve(d, swap)
    assert records and all(h is None for h in records.values())


def test_heads_that_were_not_sent_are_read_by_layout(tmp_path: Path) -> None:
    """Through Layout: a head asked for twice is read from the file as it is now the second
    time; every other one is the file's own."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    listing = Listing(str(d))
    with Layout(d, listing) as layout:
        layout.sniff_ahead()
        blobs = layout.scan_blobs().blobs
        assert layout._heads is not None
        blob = next(iter(blobs.values()))
        first = layout.read_blob_head(blob, 64)
        path = d / "blobs" / "sha256" / blob.name
        path.write_bytes(b"{changed}" + path.read_bytes()[9:])
        assert layout.read_blob_head(blob, 64) == path.read_bytes()[:64] != first  # asked again
        for other in list(blobs.values())[1:]:
            assert layout.read_blob_head(other, 64) == (d / "blobs" / "sha256" / other.name).read_bytes()[:64]


def test_no_heads_unless_asked(tmp_path: Path) -> None:
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    with Layout(d, Listing(str(d))) as layout:
        layout.scan_blobs()
        assert layout._heads is None
    listing = Listing(str(d))
    assert listing.take() is not None and listing._pid is None  # answered, reaped


def test_list_ahead_replaces_a_listing_not_taken(tmp_path: Path) -> None:
    """A real gc begins a listing before each plan's read; one its failed read did not take is
    stopped (it is older than the next read's folder stamps), and the new one is what the scan
    takes: a blob written between them is in it."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    with Layout(d) as layout:
        layout.list_ahead()
        first = layout._listing
        assert first is not None
        first.result()  # (its scan is done: the blob below comes after it)
        (d / "blobs" / "sha256" / ("5" * 64)).write_bytes(b"late")
        layout.list_ahead()
        assert first._pid is None and first._fd is None  # stopped and reaped
        assert layout._listing is not first
        assert "sha256:" + "5" * 64 in layout.scan_blobs().blobs


def test_heads_hands_out_what_the_stream_says() -> None:
    """listing.Heads on a stream written here: a head comes by name whatever the order and
    however the records are cut across reads; a "no head" record, a name never sent, and a
    head already given are None (the caller reads them itself); a position out of range is
    ignored; the end of the stream tells its listing."""
    from ocicache.store.listing import Heads

    names = ["a" * 64, "b" * 64, "c" * 64]
    stream = (
        (1).to_bytes(4, "big")
        + bytes([3])
        + b"{x}"
        + (0).to_bytes(4, "big")
        + b"\xff"
        + (9).to_bytes(4, "big")
        + bytes([1])
        + b"z"
    )
    r, w = os.pipe()
    ended: list[bool] = []
    heads = Heads(r, [("sha256", names)], lambda: ended.append(True))
    try:
        os.write(w, stream[:6])  # the first record cut in two
        heads._more()
        assert heads._got["sha256"] == {}
        os.write(w, stream[6:])
        os.close(w)
        w = -1
        assert heads.get("sha256", names[1]) == b"{x}"
        assert heads.get("sha256", names[1]) is None  # given already
        assert heads.get("sha256", names[0]) is None  # "no head"
        assert not ended
        assert heads.get("sha256", names[2]) is None  # never sent: read to the end
        assert ended == [True]
        with pytest.raises(OSError):
            os.fstat(r)  # the stream's fd is closed with it
        assert heads.get("sha512", "d" * 128) is None  # a folder the scan did not have
    finally:
        if w >= 0:
            os.close(w)
        heads.close()


def test_a_read_with_heads_leaves_no_descriptor_open(tmp_path: Path) -> None:
    """The heads' pipe is closed when the read ends (and the child is reaped)."""
    from ocicache.ops.read import read_inventory

    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    before = set(os.listdir("/proc/self/fd"))
    with Layout(d, Listing(str(d))) as layout:
        read_inventory(layout)
        assert layout._heads is None  # let go when the documents were read
    assert set(os.listdir("/proc/self/fd")) == before


def _land_after_listing(d: Path, ahead: Callable[[Layout], None] | None) -> tuple[str, BlobScan]:
    """An export lands between a listing's scan and the read: an older export's manifest is
    taken out of blobs/ before the listing, then (its scan done) written back and named by
    index.json, rewritten in place as BuildKit does. (The manifest's digest, the read's scan.)"""
    from ocicache import api

    older = next(e for e in api.history(d).exports if not e.current)
    blob = d / "blobs" / "sha256" / older.digest[7:]
    aside = d.parent / "aside"
    os.rename(blob, aside)
    old = time.time() - 3600  # index.json last written an hour ago
    os.utime(d / "index.json", (old, old))
    index = json.loads((d / "index.json").read_bytes())
    index["manifests"][0]["digest"] = older.digest
    index["manifests"][0]["size"] = aside.stat().st_size
    with Layout(d, None if ahead else Listing(str(d))) as layout:
        if ahead:
            ahead(layout)
        listing = layout._listing
        assert listing is not None
        assert listing.result() is not None  # the child's scan is done: without the manifest
        os.rename(aside, blob)  # the export lands: its blobs, then index.json
        with open(d / "index.json", "r+b") as f:
            f.truncate(0)
            f.write(json.dumps(index).encode())
        return older.digest, layout.scan_blobs()


@pytest.mark.parametrize("how", ["cli", "list_ahead"])
def test_an_export_landing_after_the_scan_is_not_missed(tmp_path: Path, how: str) -> None:
    """The regression of 0.6.2: a listing begun before the read lacked the manifest of an
    export that landed before index.json was read, and gc refused ("index.json references
    this manifest but it is missing", exit 6). A scan that began before index.json's last write
    is not used: the read scans itself and sees what that index names."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    digest, got = _land_after_listing(d, Layout.list_ahead if how == "list_ahead" else None)
    assert digest in got.blobs
    with Layout(d) as plain:
        assert got == plain.scan_blobs()


def test_a_listing_after_the_last_index_write_is_used(tmp_path: Path) -> None:
    """The other side: index.json written well before the scan, the listing is taken (a blob
    written after its scan is not in it)."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    old = time.time() - 3600
    os.utime(d / "index.json", (old, old))
    listing = Listing(str(d))
    assert listing.result() is not None
    (d / "blobs" / "sha256" / ("5" * 64)).write_bytes(b"late")
    with Layout(d, listing) as layout:
        assert "sha256:" + "5" * 64 not in layout.scan_blobs().blobs


def test_gc_begins_no_listing_while_index_json_is_fresh(tmp_path: Path) -> None:
    """list_ahead (a real gc's, before each plan) forks no child while index.json was written
    less than INDEX_SETTLED_NS ago (an export landing): that scan would not be taken. Once
    index.json is older, it begins one again; the read's blobs are the same either way."""
    d = tmp_path / "c"
    shutil.copytree(FIXTURES[0], d)
    (d / "index.json").write_bytes((d / "index.json").read_bytes())  # just written
    with Layout(d) as layout:
        layout.list_ahead()
        assert layout._listing is None
        fresh = layout.scan_blobs()
    old = time.time() - 3600
    os.utime(d / "index.json", (old, old))
    with Layout(d) as layout:
        layout.list_ahead()
        assert layout._listing is not None
        assert layout.scan_blobs() == fresh


def test_runs_in_a_process_without_other_threads() -> None:
    """What `alone` promises (conftest.py): under pytest-xdist too, these tests run where the
    listing can fork."""
    import _thread

    assert _thread._count() == 0
