"""The hostile-input cases of test_hostile.py against the commands that write: gc, pin, ref.

For every case: a documented exit code, no traceback, nothing outside DIR read or changed, and
gc never deletes a blob that an export index.json references still needs.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from clirun import run_inprocess, tree
from test_hostile import CASES, SECRET, Case, _assert_clean_run, _atimes, _build

from ocicache import api
from ocicache.base.errors import OcicacheError

# Exit codes a writing command may give on broken input: success, refusal (fail closed), a
# missing REF, a corrupt document, or a usage error (a REF the broken layout cannot name).
ALLOWED = {0, 2, 3, 4, 5, 6, 7}


def _needed(root: Path) -> set[str]:
    """Blobs on disk that an index.json-referenced export needs, and everything index.json's
    foreign entries reach (empty when unreadable)."""
    try:
        snap = api.read(root)
    except OcicacheError:
        return set()
    on_disk = set(snap.inventory.blobs)
    needed = {d for e in snap.exports if e.referenced_by_index for d in e.blobs}
    return (needed | snap.inventory.foreign_closure) & on_disk


def _holds(path: Path, needle: bytes) -> bool:
    """Whether the file holds `needle`, read a MiB at a time and only where it has data: the
    holes of a sparse file (index-sparse-4g: 4 GiB that read_text would load whole) are zeros,
    which cannot hold it."""
    chunk, keep = 1 << 20, len(needle) - 1
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = os.lseek(fd, start, os.SEEK_HOLE)
            except OSError as e:
                if e.errno == errno.ENXIO:  # nothing but a hole from pos on
                    return False
                start, end = pos, size  # no SEEK_DATA here: read it all
            tail = b""
            while start < end:
                data = os.pread(fd, min(chunk, end - start), start)
                if not data:
                    break
                if needle in tail + data:
                    return True
                tail, start = data[-keep:] if keep else b"", start + len(data)
            pos = end
        return False
    finally:
        os.close(fd)


# Cases where the writers must refuse (exit 6) and what the refusal names: a lock file that is
# not a regular file (never waited on, never followed); an index.json naming nothing on disk
# (gc would delete every blob on its word).
LOCK_CASES = ("lock-fifo", "lock-directory", "lock-socket", "lock-symlink-outside")
GC_REFUSES = {
    **{name: "index.json.lock" for name in LOCK_CASES},
    "index-no-entries": "--all",
    "bare-store": "index.json",
}
PIN_REFUSES = {name: "index.json.lock" for name in LOCK_CASES}


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_gc_on_hostile_input(tmp_path: Path, c: Case) -> None:
    base, outside, _ = _build(tmp_path, c)
    outside_before, atimes = tree(outside), _atimes(outside)
    needed = _needed(base.root)
    before = tree(base.root)
    r = run_inprocess("gc", "--dry-run", "--grace", "0", str(base.root))
    _assert_clean_run(r, f"{c.name}: gc --dry-run")
    assert r.code in ALLOWED and tree(base.root) == before, f"{c.name}: dry run changed DIR"
    r = run_inprocess("gc", "--grace", "0", "--keep-last", "0", str(base.root))
    _assert_clean_run(r, f"{c.name}: gc")
    assert r.code in ALLOWED, r.err
    if c.name in GC_REFUSES:
        assert r.code == 6 and GC_REFUSES[c.name] in r.err, f"{c.name}: {r.code}\n{r.err}"
    if r.code != 0:
        # refused: nothing deleted
        assert {p for p, *_ in tree(base.root)} >= {p for p, *_ in before if not p.endswith(".lock")}
    after = _needed(base.root) if needed else set()
    gone = {d for d in needed if not (base.root / "blobs" / d.replace(":", "/")).exists()}
    assert not gone, f"{c.name}: gc deleted blobs an index.json export needs: {gone}"
    assert after >= needed or not needed  # gc may put back what it held (quarantine)
    assert tree(outside) == outside_before
    assert _atimes(outside) == atimes, f"{c.name}: gc read a file outside DIR"


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_ref_and_pin_on_hostile_input(tmp_path: Path, c: Case) -> None:
    base, outside, _ = _build(tmp_path, c)
    outside_before, atimes = tree(outside), _atimes(outside)
    before = tree(base.root)
    for args in (
        ("ref", str(base.root)),
        ("ref", "--all", str(base.root)),
        ("ref", str(base.root), "~1", "--format", "json"),
    ):
        r = run_inprocess(*args)
        _assert_clean_run(r, f"{c.name}: {' '.join(args[:2])}")
        assert r.code in ALLOWED, r.err
    assert tree(base.root) == before, f"{c.name}: ref changed DIR"
    r = run_inprocess("pin", str(base.root), "~1", "keep-old")
    _assert_clean_run(r, f"{c.name}: pin")
    assert r.code in ALLOWED, r.err
    if c.name in PIN_REFUSES:
        assert r.code == 6 and PIN_REFUSES[c.name] in r.err, f"{c.name}: {r.code}\n{r.err}"
        assert tree(base.root) == before
    if r.code == 0:
        r = run_inprocess("unpin", str(base.root), "keep-old")
        _assert_clean_run(r, f"{c.name}: unpin")
        assert r.code == 0, r.err
    index = base.root / "index.json"
    if index.is_file() and not index.is_symlink():
        assert not _holds(index, SECRET.encode())
    assert tree(outside) == outside_before
    assert _atimes(outside) == atimes, f"{c.name}: pin read a file outside DIR"


# The classes of issue 10 that only writers have.
@pytest.mark.parametrize(
    "c",
    [c for c in CASES if c.name in ("clean", "index-over-16mib-valid", "lock-leftover")],
    ids=lambda c: c.name,
)
def test_pin_never_moves_a_pin_silently(tmp_path: Path, c: Case) -> None:
    """A NAME that already pins one export is not moved to another (that export would lose its
    protection) unless --force, which says what moved."""
    base, _outside, _ = _build(tmp_path, c)

    def files() -> dict[str, tuple[int, int, int]]:  # DIR's own mtime moves with the lock file
        return {k: v for k, v in tree(base.root).items() if k != "."}

    r = run_inprocess("pin", str(base.root), "~1", "keep")
    assert r.code == 0, r.err
    before = files()
    r = run_inprocess("pin", str(base.root), "~0", "keep")
    _assert_clean_run(r, f"{c.name}: pin again")
    assert r.code == 6 and f"already pins {base.old}" in r.err and "--force" in r.err, r.err
    assert files() == before
    r = run_inprocess("pin", str(base.root), "~1", "keep")  # the same export: nothing to do
    assert r.code == 0 and files() == before
    r = run_inprocess("pin", str(base.root), "~0", "keep", "--force")
    assert r.code == 0 and f"moved keep from {base.old} to {base.new}" in r.err, r.err
    assert not (base.root / "index.json.lock").exists()  # removed after use, as BuildKit does
    pins = [
        e
        for e in json.loads((base.root / "index.json").read_bytes())["manifests"]
        if e["annotations"].get("org.opencontainers.image.ref.name") == "keep"
    ]
    assert [e["digest"] for e in pins] == [base.new]


@pytest.mark.parametrize("name", ["index-no-entries", "index-only-missing-foreign"])
def test_gc_all_on_an_index_naming_nothing(tmp_path: Path, name: str) -> None:
    """gc refuses an index.json that names nothing on disk; --all says that is meant."""
    c = next(x for x in CASES if x.name == name)
    base, _outside, _ = _build(tmp_path, c)

    def files() -> dict[str, tuple[int, int, int]]:  # DIR's own mtime moves with the lock file
        return {k: v for k, v in tree(base.root).items() if k != "."}

    before = files()
    for args in (("--dry-run",), ()):
        r = run_inprocess("gc", "--grace", "0", *args, str(base.root))
        _assert_clean_run(r, f"{name}: gc {args}")
        assert r.code == 6 and "nothing " in r.err and "deleted" in r.err, r.err
        assert files() == before
    if name == "index-only-missing-foreign":
        return  # an entry naming a missing manifest: gc refuses whatever --all says
    assert "--all" in r.err
    r = run_inprocess("gc", "--grace", "0", "--all", str(base.root))
    assert r.code == 0, r.err
    left = [p.name for p in (base.root / "blobs" / "sha256").iterdir()]
    assert left == []
