"""`ocicache diff` and history's newLayers: against what BuildKit recorded as CACHED and executed
(real fixtures), on synthetic trees (multi-stage, mode=max, deep chains), and on bad input."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clirun import DOCUMENTED, run_inprocess, run_subprocess
from conftest import FIXTURES, copy_fixture, groundtruth, tree_state
from hypothesis import given, settings
from hypothesis import strategies as st

from ocicache import api
from ocicache.base.errors import CorruptError, NotFoundError
from ocicache.cli import render, render_diff
from ocicache.core.diff import (
    CHANGED,
    NEW,
    REBUILT,
    SHARED,
    Places,
    compare,
    previous_on_tag,
    tree_of,
)
from ocicache.format import mediatypes as mt
from ocicache.format.decoder import cache_config
from ocicache.format.model import ANN_CREATED, ANN_UNCOMPRESSED, CacheConfig, new_config_layer
from ocicache.format.schema import validate
from ocicache.synth import Builder, compact

NOW = datetime(2026, 12, 2, 9, 0, 0, tzinfo=UTC)
CHANGED_STEP = "l-changed-step"
STEP = re.compile(r"\[(\d+)/(\d+)\]")


def _diff_json(d: Path, *refs: str) -> dict[str, Any]:
    snap, result = api.diff(d, *refs)
    doc = render_diff.diff_json(str(snap.root), result, snap.warnings)
    assert validate(doc, "diff") == [], validate(doc, "diff")
    return doc


def _exported(case: str) -> list[dict[str, Any]]:
    return [b for b in groundtruth(case)["builds"] if b.get("manifest_digest")]


# -- the real fixture: three exports, one changed step each time ------------------------------
@pytest.mark.parametrize("restore_mtimes", [True, False])
@pytest.mark.parametrize("n", [2, 3])
def test_agrees_step_for_step_with_buildkit(n: int, restore_mtimes: bool, tmp_path: Path) -> None:
    """Steps CACHED in build N are `shared` in diff(N-1, N); executed ones are not, the first
    of them is the one divergence (`changed`) and the rest were rebuilt on it."""
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes)
    builds = _exported(CHANGED_STEP)
    prev, cur = builds[n - 2], builds[n - 1]
    doc = _diff_json(d, prev["manifest_digest"], cur["manifest_digest"])
    assert (doc["a"], doc["b"]) == (prev["manifest_digest"], cur["manifest_digest"])
    by_position = {s["position"]: s for s in doc["steps"]}
    assert sorted(by_position) == list(range(1, 7))  # one chain of six steps
    for text in cur["cached_steps"]:
        step = by_position[int(STEP.match(text).group(1))]  # type: ignore[union-attr]
        assert step["status"] == SHARED, text
        assert step["counterpart"]["layer"] == step["layer"]
    executed = sorted(int(STEP.match(t).group(1)) for t in cur["executed_steps"])  # type: ignore[union-attr]
    assert executed
    for k in executed:
        assert by_position[k]["status"] in (CHANGED, REBUILT, NEW)
    assert by_position[executed[0]]["status"] == CHANGED
    assert all(by_position[k]["status"] == REBUILT for k in executed[1:])
    change = groundtruth(CHANGED_STEP)["final"]["export_changes"][n - 1]
    assert executed[0] == change["change"]["changed_step"]
    [div] = doc["divergences"]
    assert doc["firstDivergence"] == div
    assert div["position"] == executed[0] and div["kind"] == CHANGED
    assert div["b"] == by_position[executed[0]]["layer"]
    assert div["a"] in groundtruth(CHANGED_STEP)["final"]["export_changes"][n - 2]["layers"]
    assert div["bAfter"] == len(executed) - 1
    assert div["bStep"]["createdAt"] == by_position[executed[0]]["createdAt"]
    # Bytes: what BuildKit recorded as shared with, new to, and dropped from the last export.
    sizes = {x["digest"]: x["size"] for b in builds for x in b["reachable_from_this_export"]}
    assert doc["sharedBytes"] == sum(sizes[x] for x in change["layers_shared_with_previous_export"])
    assert doc["onlyBBytes"] == sum(sizes[x] for x in change["layers_new_vs_previous_export"])
    assert doc["onlyABytes"] == sum(sizes[x] for x in change["layers_dropped_vs_previous_export"])
    assert doc["commonSteps"] == len(cur["cached_steps"]) and not doc["sameExport"]


def test_defaults_compare_the_newest_with_the_one_before_it(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=True)
    builds = _exported(CHANGED_STEP)
    doc = _diff_json(d)
    assert (doc["a"], doc["b"]) == (builds[1]["manifest_digest"], builds[2]["manifest_digest"])
    assert doc["aChosen"] == "previous-on-tag" and doc["bTags"] == ["latest"]
    only_b = _diff_json(d, "~2")  # A given, B the newest
    assert (only_b["a"], only_b["b"], only_b["aChosen"]) == (
        builds[0]["manifest_digest"],
        builds[2]["manifest_digest"],
        "given",
    )
    # B's steps 3-5 were built by export 2, which holds them at the same place.
    assert [s["alsoIn"] for s in only_b["steps"]] == [None, None, *[builds[1]["manifest_digest"]] * 3, None]


def test_history_new_layers_match_the_groundtruth(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=True)
    result = run_inprocess("history", str(d), "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert validate(doc, "history") == []
    got = {e["digest"]: e["newLayers"] for e in doc["exports"]}
    for change in groundtruth(CHANGED_STEP)["final"]["export_changes"]:
        expected = change.get("layers_new_vs_previous_export")
        assert got[change["manifest_digest"]] == (None if expected is None else len(expected))


def test_history_new_layers_on_a_single_tag_fixture(tmp_path: Path) -> None:
    d = copy_fixture("a-history-min", tmp_path, restore_mtimes=False)
    snap = api.history(d)
    got = {e["digest"]: e["newLayers"] for e in render.history_json(snap)["exports"]}
    builds = _exported("a-history-min")
    layers = [{x["digest"] for x in b["reachable_from_this_export"] if x["role"] == "layer"} for b in builds]
    assert got[builds[0]["manifest_digest"]] is None
    for i in range(1, len(builds)):
        assert got[builds[i]["manifest_digest"]] == len(layers[i] - layers[i - 1])


def test_history_new_layers_unknown_when_several_tags_lost_track(tmp_path: Path) -> None:
    # f-tags: alpha, beta, alpha again, latest. The first alpha export lost its tag: with
    # several tags in the directory nothing says which one it was.
    d = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    doc = render.history_json(api.history(d))
    assert [e["newLayers"] for e in doc["exports"]] == [None] * 4


# -- every fixture: counts against CACHED / executed -------------------------------------------
def _pairs() -> list[tuple[str, int]]:
    """(fixture, i): builds i-1 and i both exported, and both manifests still on disk (j-reset's
    reset=true deleted some)."""
    out = []
    for case in sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()):
        builds = _exported(case)
        kept = {b["digest"] for b in groundtruth(case)["final"]["blobs_on_disk"]}
        out.extend(
            (case, i)
            for i in range(1, len(builds))
            if {builds[i - 1]["manifest_digest"], builds[i]["manifest_digest"]} <= kept
        )
    return out


@pytest.mark.parametrize(("case", "i"), _pairs())
def test_every_fixture_agrees_with_buildkit(case: str, i: int, tmp_path: Path) -> None:
    """mode=max exports every step: a step B shares, or holds from an older export, was
    CACHED, every other one was executed. mode=min exports only the final chain, so the
    shared steps are some of the CACHED ones and the others some of the executed ones."""
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    builds = _exported(case)
    prev, cur = builds[i - 1], builds[i]
    doc = _diff_json(d, prev["manifest_digest"], cur["manifest_digest"])
    steps = doc["steps"]
    reused = [s for s in steps if s["status"] == SHARED or s["alsoIn"]]
    ran = [s for s in steps if s["status"] != SHARED and not s["alsoIn"]]
    cached, executed = len(cur["cached_steps"]), len(cur["executed_steps"])
    if any("mode=max" in o for o in cur["cache_export_opts"]):
        assert (len(reused), len(ran)) == (cached, executed)
    else:
        assert len(reused) <= cached and len(ran) <= executed
    assert doc["commonSteps"] == sum(1 for s in steps if s["status"] == SHARED) > 0


def test_mode_max_multi_stage_fixture_reports_each_branch(tmp_path: Path) -> None:
    # f-tags build 4 changed `final 2/3` (so `final 3/3` ran again) and re-used the builder
    # stage from BuildKit's cache; the export before it (alpha again) has no builder stage.
    d = copy_fixture("f-tags", tmp_path, restore_mtimes=True)
    builds = _exported("f-tags")
    doc = _diff_json(d, builds[2]["manifest_digest"], builds[3]["manifest_digest"])
    kinds = [(x["position"], x["kind"]) for x in doc["divergences"]]
    assert kinds == [(4, CHANGED), (3, NEW)]
    new = [s for s in doc["steps"] if s["status"] == NEW]
    assert [s["alsoIn"] for s in new] == [builds[1]["manifest_digest"]] * 2  # beta has them


# -- the CLI -----------------------------------------------------------------------------------
MULTI = [c for c in sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) if len(_exported(c)) > 1]


@pytest.mark.parametrize("case", MULTI)
def test_cli_json_validates_and_leaves_the_tree_alone(case: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    before = tree_state(d)
    result = run_inprocess("diff", str(d), "--json")
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert validate(doc, "diff") == []
    assert list(doc)[:4] == ["schema", "directory", "target", "a"]
    text = run_inprocess("diff", str(d), "--no-trunc")
    assert text.code == 0 and doc["b"] in text.out and "BuildKit stores no Dockerfile text" in text.out
    assert tree_state(d) == before
    assert not (d / "index.json.lock").exists()


@pytest.mark.parametrize(
    "case", ["c-docker-mediatypes", "d2-image-manifest-false-oci-index", "e-compression-zstd"]
)
def test_every_manifest_shape(case: str, tmp_path: Path) -> None:
    d = copy_fixture(case, tmp_path, restore_mtimes=True)
    doc = _diff_json(d, "~0", "~0") if case == "e-compression-zstd" else _diff_json(d)
    assert doc["steps"] and doc["commonSteps"] >= 4
    assert all(s["size"] and s["createdAt"] for s in doc["steps"])


def test_text_output(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=True)
    out = run_inprocess("diff", str(d), "~2", "~1").out
    lines = out.splitlines()
    assert lines[0].split() == ["EXPORT", "DIGEST", "TAGS", "EXPORTED"]
    assert lines[2].split()[:4] == ["A", "~2", "sha256:046f49eea08d", "-"]
    assert lines[3].split()[:4] == ["B", "~1", "sha256:e3ef7df91f6c", "-"]
    assert lines[5].split()[:2] == ["POS", "A"]
    statuses = [
        re.search(r"  (shared|changed|rebuilt|new)  ", line).group(1)  # type: ignore[union-attr]
        for line in lines[7:13]
    ]
    assert statuses == ["shared", "shared", "changed", "rebuilt", "rebuilt", "rebuilt"]
    assert [line.split()[0] for line in lines[7:13]] == ["1", "2", "3", "4", "5", "6"]
    assert lines[10].split()[1:5] == ["sha256:811dbae3aeeb", "9.4", "kB", "2026-12-01"]
    chosen = run_inprocess("diff", str(d)).out.splitlines()
    assert chosen[0].split()[-2:] == ["CHOSEN", "AS"]
    assert chosen[2].endswith("the export before B on its tag")
    assert (
        "first divergence: position 3 (on sha256:f51f2a509fb0): changed: B has "
        "sha256:89a475df8833 (4.3 kB, built 2026-12-01T08:02:52.437270Z) where A had "
        "sha256:0e5404a1750b (4.4 kB, built 2026-12-01T08:02:49.273641Z); the 3 steps built "
        "on it were rebuilt (their parent changed)"
    ) in out
    assert "steps of B: 2 shared, 1 changed, 3 rebuilt, 0 new (of 6)" in out
    assert "layers: 1.1 MB shared, 18.9 kB only in A, 18.9 kB only in B" in out


def test_same_export(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=True)
    result = run_inprocess("diff", str(d), "latest", "~0")
    assert result.code == 0
    assert "A and B are the same export: every step is shared" in result.out
    doc = _diff_json(d, "latest", "latest")
    assert doc["sameExport"] and doc["divergences"] == [] and doc["firstDivergence"] is None
    assert {s["status"] for s in doc["steps"]} == {SHARED}
    assert doc["onlyABytes"] == doc["onlyBBytes"] == 0


@pytest.mark.parametrize("refs", [["nope"], ["~3"], ["~0", "sha256:" + "0" * 64], ["abcdef0"], ["~0", "~99"]])
def test_a_ref_naming_nothing_exits_5(refs: list[str], tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=False)
    result = run_inprocess("diff", str(d), *refs)
    assert result.code == 5, result.err
    assert result.err.startswith("ocicache: error: ") and result.out == ""


def test_nothing_to_compare_with_exits_5(tmp_path: Path) -> None:
    d = copy_fixture("e-compression-zstd", tmp_path, restore_mtimes=False)
    result = run_inprocess("diff", str(d))
    assert result.code == 5
    assert "the only export in this directory" in result.err and "hint: " in result.err
    empty = Builder(tmp_path / "empty")
    assert run_inprocess("diff", str(empty.root)).code == 5


def test_in_process_and_module_paths(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=True)
    in_process = run_inprocess("diff", str(d), "--json")
    assert in_process.code == 0, in_process.err
    via_module = run_subprocess("diff", str(d), "--json")
    assert via_module.code == 0, via_module.err
    assert json.loads(in_process.out) == json.loads(via_module.out)
    assert run_subprocess("diff", "--help").code == 0
    assert run_subprocess("diff", str(d), "nope").code == 5


# -- bad cache configs -------------------------------------------------------------------------
def _config_hex(d: Path, manifest: str) -> str:
    doc = json.loads((d / "blobs" / "sha256" / manifest[7:]).read_bytes())
    return str(doc["config"]["digest"])[7:]


def test_missing_cache_config_exits_4_naming_it(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=False)
    builds = _exported(CHANGED_STEP)
    config = _config_hex(d, builds[1]["manifest_digest"])
    (d / "blobs" / "sha256" / config).unlink()
    result = run_inprocess("diff", str(d))
    assert result.code == 4
    assert result.err.startswith(f"ocicache: error: blobs/sha256/{config}: the cache config of A")
    assert "is missing" in result.err and "hint: " in result.err
    # Another pair is unaffected.
    assert run_inprocess("diff", str(d), "~2", "~0").code == 0


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"layers":', "truncated JSON"),
        (
            b'{"layers":[{"blob":"sha256:'
            + b"a" * 64
            + b'","parent":1},{"blob":"sha256:'
            + b"b" * 64
            + b'"}],"records":[]}',
            "loop",
        ),
        (b'{"layers":[{"blob":"sha256:' + b"a" * 64 + b'","parent":7}],"records":[]}', "out of range"),
        (b'{"layers":"no","records":[]}', ""),
    ],
)
def test_invalid_cache_config_exits_4_naming_it(body: bytes, says: str, tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    good = b.export([b.layer("x"), b.layer("y")])
    config = b.blob(body)
    manifest = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": config, "size": len(body)},
            "layers": [],
        }
    )
    bad = b.blob(manifest)
    b.point("latest", bad, len(manifest))
    result = run_inprocess("diff", str(b.root), good, bad)
    assert result.code == 4, result.err
    assert result.err.startswith(f"ocicache: error: blobs/sha256/{config[7:]}: the cache config of B ({bad})")
    assert says in result.err
    assert result.code in DOCUMENTED


def test_missing_manifest_exits_4(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    first = b.export([b.layer("x")], tag="old")
    second = b.export([b.layer("x"), b.layer("y")])
    (b.root / "blobs" / "sha256" / second[7:]).unlink()
    result = run_inprocess("diff", str(b.root), first, second)
    assert result.code == 4
    assert result.err.startswith(f"ocicache: error: blobs/sha256/{second[7:]}: B ({second})")


# -- synthetic trees: multi-stage, mode=max ----------------------------------------------------
def _statuses(doc: dict[str, Any]) -> list[tuple[int, str]]:
    return [(s["position"], s["status"]) for s in doc["steps"]]


def test_multi_stage_tree_reports_each_diverging_branch(tmp_path: Path) -> None:
    """tools (2 steps) -> builder (2) and final (3, the last copying from builder): the
    builder's source changes, so its first step changes, its second is rebuilt, and the
    final stage's COPY --from changes on a shared parent: two divergences."""
    b = Builder(tmp_path / "d")
    t1, t2 = b.layer("tools1", 1000), b.layer("tools2", 100)
    b1, b2 = b.layer("builder1", 200), b.layer("builder2", 300)
    f1, f2, f3 = b.layer("final1", 400), b.layer("final2", 500), b.layer("final3", 600)
    parents = [-1, 0, 1, 2, 1, 4, 5]  # t1 t2 b1 b2 f1 f2 f3
    a = b.export([t1, t2, b1, b2, f1, f2, f3], parents=parents, tag="latest")
    b1n, b2n, f3n = b.layer("builder1'", 210), b.layer("builder2'", 310), b.layer("final3'", 610)
    new = b.export([t1, t2, b1n, b2n, f1, f2, f3n], parents=parents, tag="latest")
    doc = _diff_json(b.root)
    assert (doc["a"], doc["b"], doc["aChosen"]) == (a, new, "previous-on-tag")
    status = {s["layer"]: s["status"] for s in doc["steps"]}
    assert status == {
        t1["digest"]: SHARED,
        t2["digest"]: SHARED,
        b1n["digest"]: CHANGED,
        b2n["digest"]: REBUILT,
        f1["digest"]: SHARED,
        f2["digest"]: SHARED,
        f3n["digest"]: CHANGED,
    }
    divs = {(x["position"], x["a"], x["b"], x["bAfter"]) for x in doc["divergences"]}
    assert divs == {(3, b1["digest"], b1n["digest"], 1), (5, f3["digest"], f3n["digest"], 0)}
    counterpart = {s["layer"]: s["counterpart"]["layer"] for s in doc["steps"]}
    assert counterpart[b2n["digest"]] == b2["digest"]
    assert doc["sharedBytes"] == 1000 + 100 + 400 + 500
    assert (doc["onlyABytes"], doc["onlyBBytes"]) == (200 + 300 + 600, 210 + 310 + 610)
    text = run_inprocess("diff", str(b.root)).out
    assert "B diverges from A at 2 places in all; also at:" in text


def test_mode_max_forest_with_roots_added_dropped_and_changed(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    r1, r2, r3 = b.layer("root1"), b.layer("root2"), b.layer("root3")
    x, y = b.layer("x"), b.layer("y")
    # A: r1 -> x, r2 -> y, r3.  B: r1 -> x -> z (added), r2' -> y (under a changed root).
    a = b.export([r1, x, r2, y, r3], parents=[-1, 0, -1, 2, -1])
    r2n, z = b.layer("root2'"), b.layer("z")
    new = b.export([r1, x, z, r2n, y], parents=[-1, 0, 1, -1, 3])
    doc = _diff_json(b.root, a, new)
    status = {s["layer"]: s["status"] for s in doc["steps"]}
    assert status[r1["digest"]] == status[x["digest"]] == SHARED
    assert status[z["digest"]] == NEW
    assert status[r2n["digest"]] == CHANGED and status[y["digest"]] == REBUILT
    kinds = sorted((d["kind"], d["position"]) for d in doc["divergences"])
    assert kinds == [(CHANGED, 1), (NEW, 3), ("onlyA", 1)]
    # r2 and r3 were A's open roots; r2' pairs with the first built (r2), and B's y, rebuilt,
    # with A's y on r2: only r3 is at no place in B.
    [only] = [d for d in doc["divergences"] if d["kind"] == "onlyA"]
    assert (only["a"], only["b"]) == (r3["digest"], None)
    [y_step] = [s for s in doc["steps"] if s["layer"] == y["digest"]]
    assert y_step["counterpart"]["layer"] == y["digest"]
    assert [s["layer"] for s in doc["onlyASteps"]] == [r3["digest"]]


def test_no_step_in_common(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    b.export([b.layer("a1"), b.layer("a2")])
    b.export([b.layer("b1"), b.layer("b2"), b.layer("b3")])
    doc = _diff_json(b.root)
    assert doc["commonSteps"] == 0 and doc["sharedBytes"] == 0
    assert _statuses(doc) == [(1, CHANGED), (2, REBUILT), (3, REBUILT)]
    assert "no step in common" in run_inprocess("diff", str(b.root)).out


def test_chain_grows_and_shrinks(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    base = [b.layer(f"s{i}") for i in range(3)]
    short = b.export(base)
    extra = [b.layer("s3"), b.layer("s4")]
    long = b.export(base + extra)
    grown = _diff_json(b.root, short, long)
    assert _statuses(grown) == [(1, SHARED), (2, SHARED), (3, SHARED), (4, NEW), (5, NEW)]
    assert [(d["position"], d["kind"], d["a"], d["bAfter"]) for d in grown["divergences"]] == [
        (4, NEW, None, 1)
    ]
    shrunk = _diff_json(b.root, long, short)
    assert {s["status"] for s in shrunk["steps"]} == {SHARED}
    assert [(d["position"], d["kind"], d["b"], d["aAfter"]) for d in shrunk["divergences"]] == [
        (4, "onlyA", None, 1)
    ]
    assert [s["position"] for s in shrunk["onlyASteps"]] == [4, 5]
    assert "only in A" in run_inprocess("diff", str(b.root), long, short).out


@pytest.mark.parametrize("shape", ["A", "B", "C"])
def test_synthetic_shapes(shape: str, tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    layers = [b.layer(f"l{i}") for i in range(4)]
    b.export(layers, shape=shape)
    b.export([*layers[:2], b.layer("changed"), b.layer("after")], shape=shape)
    assert _statuses(_diff_json(b.root)) == [(1, SHARED), (2, SHARED), (3, CHANGED), (4, REBUILT)]


def test_a_layer_repeated_at_one_place_is_one_step(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    r, x, y = b.layer("r"), b.layer("x"), b.layer("y")
    b.export([r, x])
    b.export([r, x, x, y], parents=[-1, 0, 0, 2])  # x twice on r; y on the second x
    doc = _diff_json(b.root)
    assert _statuses(doc) == [(1, SHARED), (2, SHARED), (3, NEW)]


# -- a step is a layer built at a time (found against real BuildKit, test_diff_buildkit.py) -----
def _rebuilt_as(b: Builder, layer: dict[str, Any], seed: str | None = None) -> dict[str, Any]:
    """`layer` built again later: the same blob (seed None) or, re-compressed, another blob
    with the same diffID; createdAt is now."""
    again = b.layer(seed) if seed else {**layer, "annotations": dict(layer["annotations"])}
    again["annotations"][ANN_UNCOMPRESSED] = layer["annotations"][ANN_UNCOMPRESSED]
    again["annotations"][ANN_CREATED] = b.layer("clock")["annotations"][ANN_CREATED]
    return again


def test_the_same_layer_built_again_is_changed(tmp_path: Path) -> None:
    """`RUN true` then `RUN true && true`: the second ran (BuildKit: DONE) and wrote the very
    same empty layer at the same place, with a new createdAt; the step on it ran again too."""
    b = Builder(tmp_path / "d")
    r, x, empty, y = (b.layer(n) for n in ("r", "x", "empty", "y"))
    a = b.export([r, x, empty, y])
    empty2, y2 = _rebuilt_as(b, empty), b.layer("y2")
    new = b.export([r, x, empty2, y2])
    doc = _diff_json(b.root, a, new)
    assert _statuses(doc) == [(1, SHARED), (2, SHARED), (3, CHANGED), (4, REBUILT)]
    [div] = doc["divergences"]
    assert div["a"] == div["b"] == empty["digest"] and div["kind"] == CHANGED
    assert div["aStep"]["createdAt"] != div["bStep"]["createdAt"]
    assert "(the same layer, built again)" in run_inprocess("diff", str(b.root), a, new).out
    # The step that did not run again keeps its createdAt: shared, as before.
    assert _statuses(_diff_json(b.root, new, b.export([r, x, empty2, y2, b.layer("z")])))[:4] == [
        (1, SHARED),
        (2, SHARED),
        (3, SHARED),
        (4, SHARED),
    ]


def test_a_recompressed_export_shares_every_step(tmp_path: Path) -> None:
    """compression=zstd,force-compression=true re-exports every CACHED step as a new blob
    with the same diffID and createdAt: the same steps."""
    b = Builder(tmp_path / "d")
    gz = [b.layer(f"s{i}", 100 + i) for i in range(4)]
    a = b.export(gz)
    zst = []
    for i, x in enumerate(gz):
        z = b.layer(f"zstd{i}", 90 + i, media_type="application/vnd.oci.image.layer.v1.tar+zstd")
        z["annotations"] = dict(x["annotations"])
        zst.append(z)
    new = b.export(zst)
    doc = _diff_json(b.root, a, new)
    assert {s["status"] for s in doc["steps"]} == {SHARED} and doc["divergences"] == []
    assert [s["counterpart"]["layer"] for s in doc["steps"]] == [x["digest"] for x in gz]
    assert doc["sharedBytes"] == 0 and doc["onlyBBytes"] == sum(90 + i for i in range(4))
    # Re-compressed *and* built again is still a change.
    again = b.export([*zst[:2], _rebuilt_as(b, gz[2], "zstd2-again"), b.layer("after")])
    assert _statuses(_diff_json(b.root, new, again)) == [(1, SHARED), (2, SHARED), (3, CHANGED), (4, REBUILT)]


def test_steps_built_before_a(tmp_path: Path) -> None:
    """A toggle back (main, feature, main again: BuildKit re-points the tag at main's old
    manifest, every step CACHED) and a stage a mode=min A built but did not export: B's steps
    that A lacks were built before A's newest step, so B's build did not run them."""
    b = Builder(tmp_path / "d")
    r, m1, m2 = b.layer("r"), b.layer("main1"), b.layer("main2")
    main = b.export([r, m1, m2])
    f1, f2 = b.layer("feature1"), b.layer("feature2")
    b.export([r, f1, f2])
    size = (b.root / "blobs" / "sha256" / main[7:]).stat().st_size
    b.point("latest", main, size)  # the third build: byte-identical to the first
    doc = _diff_json(b.root)
    assert doc["b"] == main and doc["aChosen"] == "previous-on-tag"
    assert _statuses(doc) == [(1, SHARED), (2, CHANGED), (3, REBUILT)]
    assert [s["builtBeforeA"] for s in doc["steps"]] == [False, True, True]
    assert [s["alsoIn"] for s in doc["steps"]] == [None, None, None]  # B itself is the old one
    text = run_inprocess("diff", str(b.root)).out
    assert text.splitlines()[5].split()[-2:] == ["ALSO", "IN"]
    assert "built before A: 2 steps of B that A does not share were built before A's newest step" in text
    assert sum(line.endswith("built before A") for line in text.splitlines()) == 2
    # mode=min A (the builder stage ran but only the final chain was exported), then mode=max.
    m = Builder(tmp_path / "m")
    base, s1, s2 = m.layer("base"), m.layer("stage1"), m.layer("stage2")
    fin1, fin2 = m.layer("final1"), m.layer("final2")
    a = m.export([base, fin1, fin2])
    new = m.export([base, fin1, fin2, s1, s2], parents=[-1, 0, 1, 0, 3])
    doc = _diff_json(m.root, a, new)
    status = {s["layer"]: (s["status"], s["builtBeforeA"]) for s in doc["steps"]}
    assert status[s1["digest"]] == status[s2["digest"]] == (NEW, True)
    assert {status[x["digest"]] for x in (base, fin1, fin2)} == {(SHARED, False)}
    # Steps built after A are not: a step added by B's own build.
    later = m.export([base, fin1, fin2, s1, s2, m.layer("added")], parents=[-1, 0, 1, 0, 3, 4])
    assert [s["builtBeforeA"] for s in _diff_json(m.root, new, later)["steps"] if s["status"] != SHARED] == [
        False
    ]


# -- deep chains: iterative walks only ---------------------------------------------------------
def _chain_config(digests: list[str]) -> CacheConfig:
    layers = tuple(new_config_layer(dg, i - 1) for i, dg in enumerate(digests))
    return cache_config("sha256:" + "c" * 64, layers, 0, ())


def _digests(prefix: str, n: int) -> list[str]:
    return ["sha256:" + hashlib.sha256(f"{prefix}{i}".encode()).hexdigest() for i in range(n)]


def test_deep_chain_pure() -> None:
    n = 5000
    assert n > sys.getrecursionlimit()  # a recursive walk would fail
    old = _digests("s", n)
    new = old[:2500] + _digests("t", n - 2500)
    places = Places()
    c = compare(tree_of(_chain_config(old), {}, places), tree_of(_chain_config(new), {}, places))
    assert c.status[:2500] == (SHARED,) * 2500
    assert c.status[2500] == CHANGED and c.status[2501:] == (REBUILT,) * 2499
    assert [(d.a, d.b, d.below_b) for d in c.divergences] == [(2500, 2500, 2499)]
    assert [s.depth for s in c.b.steps] == list(range(1, n + 1))


def test_deep_chain_cli(tmp_path: Path) -> None:
    b = Builder(tmp_path / "d")
    layers = [b.layer(f"s{i}", 40) for i in range(5000)]
    b.export(layers)
    b.export([*layers[:4000], *[b.layer(f"t{i}", 40) for i in range(1000)]])
    result = run_inprocess("diff", str(b.root), "--json", timeout=120)
    assert result.code == 0, result.err
    doc = json.loads(result.out)
    assert doc["counts"] == {
        "shared": 4000,
        "changed": 1,
        "rebuilt": 999,
        "new": 0,
        "aSteps": 5000,
        "bSteps": 5000,
        "onlyA": 0,
    }
    assert [d["position"] for d in doc["divergences"]] == [4001]
    text = run_inprocess("diff", str(b.root), timeout=120)
    assert text.code == 0 and "first divergence: position 4001" in text.out
    assert max(len(line) for line in text.out.splitlines()) < 400  # no staircase
    history = json.loads(run_inprocess("history", str(b.root), "--json").out)
    assert [e["newLayers"] for e in history["exports"]] == [1000, None]


# -- which export came before which --------------------------------------------------------------
def test_previous_on_tag(tmp_path: Path) -> None:
    b = Builder(tmp_path / "one-tag")
    for i in range(3):
        b.export([b.layer(f"l{i}")])
    exports = api.history(b.root).exports
    assert [previous_on_tag(exports, i) for i in range(3)] == [1, 2, None]
    m = Builder(tmp_path / "tags")
    m.export([m.layer("a1")], tag="a")
    m.export([m.layer("b1")], tag="b")
    m.export([m.layer("a2")], tag="a")
    exports = api.history(m.root).exports  # a2 (a), b1 (b), a1 (untagged now)
    assert [e.tags for e in exports] == [("a",), ("b",), ()]
    assert [previous_on_tag(exports, i) for i in range(3)] == [None, None, None]
    doc = _diff_json(m.root)
    assert doc["aChosen"] == "previous-in-history" and doc["a"] == exports[1].digest
    # index.json naming two exports `a` (edited by hand): the older one is before the newer.
    m.entries.insert(
        0,
        {
            "mediaType": mt.OCI_MANIFEST,
            "digest": exports[2].digest,
            "size": (m.root / "blobs" / "sha256" / exports[2].digest[7:]).stat().st_size,
            "annotations": {"org.opencontainers.image.ref.name": "a"},
        },
    )
    m.write_index()
    exports = api.history(m.root).exports
    assert [e.tags for e in exports] == [("a",), ("b",), ("a",)]
    assert [previous_on_tag(exports, i) for i in range(3)] == [2, None, None]
    assert _diff_json(m.root)["aChosen"] == "previous-on-tag"


# -- properties of the comparison ----------------------------------------------------------------
_FOREST = st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 30)), min_size=0, max_size=25)


def _forest(spec: list[tuple[int, int]]) -> CacheConfig:
    """layers[i] = (blob number, parent): a parent must come earlier (so no loops)."""
    layers = []
    for i, (blob, parent) in enumerate(spec):
        p = parent if 0 <= parent < i else -1
        layers.append(new_config_layer("sha256:" + f"{blob:x}" * 64, p))
    return cache_config("sha256:" + "c" * 64, tuple(layers), 0, ())


@settings(max_examples=300, deadline=None)
@given(a_spec=_FOREST, b_spec=_FOREST)
def test_comparison_invariants(a_spec: list[tuple[int, int]], b_spec: list[tuple[int, int]]) -> None:
    places = Places()
    a = tree_of(_forest(a_spec), {}, places)
    b = tree_of(_forest(b_spec), {}, places)
    c = compare(a, b)
    a_keys = {s.key for s in a.steps}
    for i, s in enumerate(b.steps):
        st_ = c.status[i]
        parent = c.status[s.parent] if s.parent >= 0 else None
        assert (st_ == SHARED) == (s.key in a_keys)
        if st_ == SHARED:
            assert parent in (None, SHARED)
            assert a.steps[c.counterpart[i]].key == s.key
        elif st_ == CHANGED:
            assert parent in (None, SHARED) and c.counterpart[i] >= 0
        elif st_ == REBUILT:
            assert parent in (CHANGED, REBUILT)
        else:
            assert parent in (None, SHARED, NEW)
            assert parent == NEW or c.counterpart[i] < 0
    # Every A step is B's counterpart somewhere or listed as only in A, once.
    used = [x for x in c.counterpart if x >= 0]
    assert len(used) == len(set(used))
    assert sorted([*used, *c.only_a]) == list(range(len(a.steps)))
    # The merged rows hold every step of both, once.
    assert sorted(r.b for r in c.rows if r.b >= 0) == list(range(len(b.steps)))
    assert sorted(r.a for r in c.rows if r.a >= 0) == list(range(len(a.steps)))
    assert [r.b for r in c.rows if r.b >= 0] == list(range(len(b.steps)))  # B's stack order
    # A tree against itself: all shared, no divergence.
    same = compare(b, b)
    assert set(same.status) <= {SHARED} and same.divergences == ()


def test_missing_config_in_api_raises_corrupt(tmp_path: Path) -> None:
    d = copy_fixture(CHANGED_STEP, tmp_path, restore_mtimes=False)
    builds = _exported(CHANGED_STEP)
    (d / "blobs" / "sha256" / _config_hex(d, builds[2]["manifest_digest"])).unlink()
    with pytest.raises(CorruptError):
        api.diff(d)
    with pytest.raises(NotFoundError):
        api.diff(d, "nothing")
