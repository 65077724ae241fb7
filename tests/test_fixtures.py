"""The reader against every real BuildKit directory: exports, order, tags, stacks and totals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from clirun import Run, run_inprocess
from conftest import CASES, copy_fixture, groundtruth, run_cli, tree_state

from ocicache import api
from ocicache.format.schema import validate


def expected_exports(case: str) -> list[str]:
    """Manifest digests BuildKit exported and that are still on disk, newest first."""
    gt = groundtruth(case)
    on_disk = {b["digest"] for b in gt["final"]["blobs_on_disk"]}
    order: list[str] = []
    for build in gt["builds"]:
        digest = build.get("manifest_digest")
        if build["kind"] == "export" and build["exit_code"] == 0 and digest in on_disk:
            if digest in order:
                order.remove(digest)
            order.append(digest)
    return list(reversed(order))


def expected_tags(case: str) -> dict[str, list[str]]:
    index = json.loads(groundtruth(case)["final"]["index_json_raw"])
    tags: dict[str, list[str]] = {}
    for entry in index["manifests"]:
        name = entry["annotations"]["org.opencontainers.image.ref.name"]
        tags.setdefault(entry["digest"], []).append(name)
    return tags


@pytest.mark.parametrize("mtimes", [True, False], ids=["mtimes-kept", "mtimes-lost"])
def test_history_matches_what_buildkit_wrote(case: str, mtimes: bool, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=mtimes)
    snap = api.history(d)
    assert [e.digest for e in snap.exports] == expected_exports(case)
    tags = expected_tags(case)
    for e in snap.exports:
        assert list(e.tags) == tags.get(e.digest, [])
        assert e.current == (e.digest in tags)
        assert e.complete, (e.digest, e.missing, e.problems)
        assert e.created_from == ("mtime" if mtimes else "createdat")


def test_export_sizes_and_blobs_match_groundtruth(case: str, tmp_path: Path) -> None:
    gt = groundtruth(case)
    snap = api.history(copy_fixture(case, tmp_path, restore_mtimes=True))
    by_digest = {e.digest: e for e in snap.exports}
    for build in gt["builds"]:
        digest = build.get("manifest_digest")
        if digest not in by_digest or not build.get("reachable_from_this_export"):
            continue
        reachable = {b["digest"]: b["size"] for b in build["reachable_from_this_export"]}
        export = by_digest[digest]
        assert set(export.blobs) == set(reachable)
        assert export.size == sum(reachable.values())
    # unique sizes: a blob shared by two exports counts for neither
    for e in snap.exports:
        others = {d for o in snap.exports if o is not e for d in o.blobs}
        sizes = {b["digest"]: b["size"] for b in gt["final"]["blobs_on_disk"]}
        assert e.unique_size == sum(sizes[d] for d in e.blobs if d not in others)


def test_show_follows_the_cache_config_chain(case: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    for i in range(len(api.history(d).exports)):
        result = api.show(d, f"~{i}")
        config = result.export.cache_config
        assert config is not None
        assert [x.index for x in result.layers] != []
        assert sorted(x.index for x in result.layers) == list(range(len(config.layers)))
        seen: set[int] = set()
        for layer in result.layers:
            # stack order: a parent is listed before its children, at one depth less
            assert layer.parent == -1 or layer.parent in seen
            assert layer.parent == config.layers[layer.index].parent
            assert layer.digest == config.layers[layer.index].blob
            assert layer.depth == len(config.chain(layer.index)) - 1
            assert layer.present and layer.size is not None
            seen.add(layer.index)


def test_du_totals_match_the_files_on_disk(case: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    on_disk = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    _snap, usage = api.du(d)
    assert sum(u.bytes for u in usage) == on_disk
    by = {u.category: u for u in usage}
    final = groundtruth(case)["final"]
    assert by["index"].files == len(final["reachable_from_index"])
    assert by["older-exports"].bytes + by["unreferenced"].bytes == final["unreachable_from_index_bytes"]


def test_blobs_kinds_match_groundtruth_roles(case: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    _, rows = api.blobs(d)
    final = groundtruth(case)["final"]
    assert len(rows) == final["blob_count"]
    roles = {"manifest": "manifest", "index": "manifest", "cacheconfig": "cache-config", "layer": "layer"}
    for row in rows:
        expected = final["blob_roles"].get(row.digest)
        if expected:
            assert row.kind == roles[expected[0]], row.digest
        else:
            assert row.exports == 0 and not row.from_index


# Every fixture through app.main in this process (the console script's own error boundary);
# one of them through a real `python -m ocicache` process as well, as a user runs it (a process
# start costs ~0.3 s, and 72 of them were a third of this file's time).
PROCESS_CASE = "f-tags"
assert PROCESS_CASE in CASES


def _cli(case: str, *args: str) -> Run:
    if case == PROCESS_CASE:
        p = run_cli(*args)
        return Run(p.returncode, p.stdout, p.stderr)
    return run_inprocess(*args)


@pytest.mark.parametrize("command", ["history", "blobs", "du", "show"])
def test_cli_json_validates_and_leaves_the_tree_alone(case: str, command: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    before = tree_state(d)
    result = _cli(case, command, str(d), "--json")
    assert result.code == 0, result.err
    assert validate(json.loads(result.out), command) == []
    table = _cli(case, command, str(d))
    assert table.code == 0 and table.out.strip()
    assert tree_state(d) == before
    assert not (d / "index.json.lock").exists()


def test_history_json_contract(tmp_path: Path) -> None:
    d = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    doc = json.loads(run_cli("history", str(d), "--json").stdout)
    assert doc["schema"] == "ocicache/history@1"
    first = doc["exports"][0]
    for key in ("digest", "tags", "current", "created", "size", "uniqueSize", "complete"):
        assert key in first
    assert [e["tags"] for e in doc["exports"]] == [["latest"], ["alpha"], ["beta"], []]
    assert first["created"].endswith("Z") and isinstance(first["size"], int)


def test_k_interrupted_export_shows_ingest_and_orphan(tmp_path: Path) -> None:
    d = copy_fixture("k-interrupted-export", tmp_path, restore_mtimes=True)
    _snap, usage = api.du(d)
    by = {u.category: u for u in usage}
    assert by["ingest"].files == 1 and by["ingest"].bytes >= 1048576
    assert by["unreferenced"].files == 1
    assert os.path.isdir(d / "ingest")
