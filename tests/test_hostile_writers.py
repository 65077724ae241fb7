"""The hostile-input cases of test_hostile.py against the commands that write: gc, pin, ref.

For every case: a documented exit code, no traceback, nothing outside DIR read or changed, and
gc never deletes a blob that an export index.json references still needs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from clirun import run_inprocess, tree
from test_hostile import CASES, SECRET, Case, _assert_clean_run, _atimes, _build

from ocicache import api
from ocicache.errors import OcicacheError

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
    if r.code != 0:
        # refused: nothing deleted
        assert {p for p, *_ in tree(base.root)} >= {p for p, *_ in before
                                                   if not p.endswith(".lock")}
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
    for args in (("ref", str(base.root)), ("ref", "--all", str(base.root)),
                 ("ref", str(base.root), "~1", "--format", "json")):
        r = run_inprocess(*args)
        _assert_clean_run(r, f"{c.name}: {' '.join(args[:2])}")
        assert r.code in ALLOWED, r.err
    assert tree(base.root) == before, f"{c.name}: ref changed DIR"
    r = run_inprocess("pin", str(base.root), "~1", "keep-old")
    _assert_clean_run(r, f"{c.name}: pin")
    assert r.code in ALLOWED, r.err
    if r.code == 0:
        r = run_inprocess("unpin", str(base.root), "keep-old")
        _assert_clean_run(r, f"{c.name}: unpin")
        assert r.code == 0, r.err
    index = base.root / "index.json"
    if index.is_file() and not index.is_symlink():
        assert SECRET not in index.read_text(errors="replace")
    assert tree(outside) == outside_before
    assert _atimes(outside) == atimes, f"{c.name}: pin read a file outside DIR"
