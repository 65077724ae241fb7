"""`gc --expire-tags AGE [--keep-tag GLOB]` on a directory: the index.json entries of tags
whose export is older than AGE are removed (atomically, under BuildKit's lock; pins and
--keep-tag globs stay), and their exports then count as older exports."""

from __future__ import annotations

import json
from pathlib import Path

from clirun import run_inprocess
from conftest import copy_fixture

from ocicache.format.schema import validate


def _names(root: Path) -> list[str]:
    index = json.loads((root / "index.json").read_text())
    return [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]]


def test_expire_tags_removes_old_tags_but_kept_globs_and_pins(tmp_path: Path) -> None:
    root = copy_fixture("f-tags", tmp_path, restore_mtimes=True)  # exported months ago
    r = run_inprocess("pin", str(root), "alpha", "keep-me")
    assert r.code == 0, r.err
    before = (root / "index.json").read_bytes()
    args = ["gc", str(root), "--expire-tags", "1h", "--keep-tag", "lat*", "--grace", "0"]
    dry = run_inprocess(*args, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    doc = json.loads(dry.out)
    assert validate(doc, "gc") == []
    assert sorted(t["tag"] for t in doc["expiredTags"]) == ["alpha", "beta"]
    assert (root / "index.json").read_bytes() == before  # a dry run writes nothing
    r = run_inprocess(*args)
    assert r.code == 0, r.err
    assert "expired 2 tags (--expire-tags): " in r.out
    assert sorted(n for n in _names(root) if n) == ["keep-me", "latest"]
    # What beta alone named is gone; alpha's export stays (the pin keeps it).
    hist = json.loads(run_inprocess("history", str(root), "--json").out)
    assert {tuple(e["tags"]) + tuple(e["pins"]) for e in hist["exports"]} == {("latest",), ("keep-me",)}
    check = run_inprocess("check", str(root))
    assert check.code == 0, check.out


def test_expire_tags_keeps_young_tags_and_needs_an_age(tmp_path: Path) -> None:
    root = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    r = run_inprocess("gc", str(root), "--expire-tags", "100000d", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["expiredTags"] == []
    assert sorted(n for n in _names(root) if n) == ["alpha", "beta", "latest"]
    assert run_inprocess("gc", str(root), "--keep-tag", "x").code == 2
    assert run_inprocess("gc", str(root), "--expire-tags", "soon").code == 2
