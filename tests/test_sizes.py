"""SIZE, UNIQUE and missing bytes of an export (issue 10, 15): SIZE counts the blobs on disk,
missing ones are shown apart, and UNIQUE is what gc frees when that export alone is dropped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_fixture, run_cli
from gc_helpers import drop_from_index

from ocicache import api
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.format import mediatypes as mt
from ocicache.format.schema import validate
from ocicache.synth import Builder, compact


def blob(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest[7:]


def by_digest(root: Path) -> dict[str, Any]:
    return {e.digest: e for e in api.history(root).exports}


def freed_by_dropping(root: Path, digest: str, now: int) -> int:
    """What `gc --grace 0` frees beyond what it frees anyway when `digest` alone is dropped
    (it must not be in index.json)."""
    everyone = [e.digest for e in api.history(root).exports]

    def freed(keep: list[str]) -> set[tuple[str, int]]:
        plan = api.gc(root, Policy(grace_ns=0, keep_refs=tuple(keep)), now_ns=now, dry_run=True).plan
        return {(b.digest, b.size) for b in plan.blobs}

    return sum(n for _, n in freed([d for d in everyone if d != digest]) - freed(everyone))


@pytest.fixture
def two(tmp_path: Path) -> tuple[Builder, dict[str, Any], str, str]:
    """An older export (base + a + b) and the current one (base + a + c), 1000-byte layers."""
    b = Builder(tmp_path)
    base, a = b.layer("base", 1000), b.layer("a", 1000)
    older = b.export([base, a, b.layer("b", 1000)])
    newer = b.export([base, a, b.layer("c", 1000)])
    return b, {"base": base, "a": a}, older, newer


def test_a_missing_layer_counts_in_neither_size_nor_unique(
    two: tuple[Builder, dict[str, Any], str, str],
) -> None:
    b, _, older, _ = two
    before = by_digest(b.root)[older]
    layer_b = next(
        x for x in before.layers if x.digest not in {y.digest for y in by_digest(b.root)[two[3]].layers}
    )
    blob(b.root, layer_b.digest).unlink()
    e = by_digest(b.root)[older]
    assert e.missing == (layer_b.digest,)
    assert e.size == before.size - 1000 and e.missing_bytes == 1000
    assert e.unique_size == before.unique_size - 1000
    assert e.unique_size == freed_by_dropping(b.root, older, b.clock_ns + HOUR_NS)


def test_a_missing_shared_layer_counts_for_nobody(two: tuple[Builder, dict[str, Any], str, str]) -> None:
    b, shared, older, newer = two
    before = by_digest(b.root)
    blob(b.root, shared["a"]["digest"]).unlink()
    after = by_digest(b.root)
    for d in (older, newer):
        assert after[d].size == before[d].size - 1000 and after[d].missing_bytes == 1000
        assert after[d].unique_size == before[d].unique_size  # it was never unique


def test_missing_bytes_in_json_table_and_show(two: tuple[Builder, dict[str, Any], str, str]) -> None:
    b, shared, older, newer = two
    blob(b.root, shared["base"]["digest"]).unlink()
    doc = json.loads(run_cli("history", "--json", str(b.root)).stdout)
    assert validate(doc, "history") == []
    rows = {x["digest"]: x for x in doc["exports"]}
    for d in (older, newer):
        assert rows[d]["missingBytes"] == 1000 and rows[d]["missing"] == [shared["base"]["digest"]]
        assert rows[d]["size"] == by_digest(b.root)[d].size
    table = run_cli("history", str(b.root)).stdout
    assert table.count("(+1.0 kB missing)") == 2
    show = json.loads(run_cli("show", "--json", str(b.root), "~0").stdout)
    assert validate(show, "show") == [] and show["export"]["missingBytes"] == 1000
    text = run_cli("show", str(b.root), "~0").stdout
    assert ", 1.0 kB missing" in text.splitlines()[4]


def test_complete_exports_show_no_missing_note(tmp_path: Path) -> None:
    d = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    assert "missing" not in run_cli("history", str(d)).stdout
    assert all(
        x["missingBytes"] == 0 for x in json.loads(run_cli("history", "--json", str(d)).stdout)["exports"]
    )


def test_what_a_foreign_image_shares_is_not_unique(two: tuple[Builder, dict[str, Any], str, str]) -> None:
    b, _, older, _ = two
    e = by_digest(b.root)[older]
    own = [x for x in e.layers if x.digest not in {y.digest for y in by_digest(b.root)[two[3]].layers}]
    cfg = b.blob(compact({"architecture": "amd64", "os": "linux", "rootfs": {}}))
    image = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": 60},
            "layers": [{"mediaType": x.media_type, "digest": x.digest, "size": x.size} for x in own],
        }
    )
    b.point("image", b.blob(image), len(image))
    after = by_digest(b.root)[older]
    assert after.size == e.size and after.unique_size == e.unique_size - 1000
    assert after.unique_size == freed_by_dropping(b.root, older, b.clock_ns + HOUR_NS)


def test_a_layer_only_the_cache_config_names_is_counted_like_gc_counts_it(tmp_path: Path) -> None:
    """gc keeps what a kept export's cache config names, even when its manifest does not list
    it; dropping that export frees it: SIZE and UNIQUE count it too."""
    b = Builder(tmp_path)
    base = b.layer("base", 700)
    b.export([base, b.layer("x", 300)])
    extra = b.layer("only-in-config", 2000)
    config = compact(
        {
            "layers": [{"blob": base["digest"], "parent": -1}, {"blob": extra["digest"]}],
            "records": [{"digest": "sha256:" + "1" * 64}],
        }
    )
    cdig = b.blob(config)
    manifest = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": cdig, "size": len(config)},
            "layers": [base],
        }
    )
    odd = b.blob(manifest)
    b.export([base, b.layer("y", 300)])  # the current one
    e = by_digest(tmp_path)[odd]
    assert e.size == len(manifest) + len(config) + 700 + 2000
    assert e.unique_size == len(manifest) + len(config) + 2000
    assert e.unique_size == freed_by_dropping(tmp_path, odd, b.clock_ns + HOUR_NS)


@pytest.mark.parametrize("case", ["a-history-min", "f-tags", "j-reset", "k-interrupted-export"])
def test_unique_is_what_gc_frees_on_real_directories(tmp_path: Path, case: str) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    now = max(p.stat().st_mtime_ns for p in (d / "blobs" / "sha256").iterdir()) + HOUR_NS
    for e in api.history(d).exports:
        index = drop_from_index(d, e.digest)
        assert e.unique_size == freed_by_dropping(d, e.digest, now), (case, e.digest)
        (d / "index.json").write_bytes(index)
