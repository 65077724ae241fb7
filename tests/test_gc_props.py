"""Property tests: gc invariants over generated BuildKit-like histories (hypothesis)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from gc_helpers import blob_names, drop_from_index, stable_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocicache import api
from ocicache.base.errors import RefusedError
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.synth import Builder


@dataclass(frozen=True)
class Scenario:
    exports: list[dict[str, Any]]  # shape, tag (None: not pointed), own layers, reuse, gap_h
    shared: int
    orphans: int
    ingest_ages_h: list[float]
    policy: Policy
    now_after_h: float


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 6))
    tags = draw(st.sampled_from([("latest",), ("a", "b"), ("a", "b", "c")]))
    exports = [
        {
            "shape": draw(st.sampled_from("ABC")),
            "tag": None if draw(st.integers(0, 5)) == 0 else tags[i % len(tags)],
            "own": draw(st.integers(1, 3)),  # every export builds at least one new step
            "reuse": draw(st.integers(0, 2)),  # layers re-used from earlier exports
            "gap_h": draw(st.sampled_from([0.0, 0.5, 2.0, 30.0])),
        }
        for i in range(n)
    ]
    grace_h = draw(st.sampled_from([0.0, 1.0, 3.0]))
    policy = Policy(
        keep_last=draw(st.integers(0, 3)),
        keep_within_ns=draw(st.none() | st.sampled_from([HOUR_NS, 24 * HOUR_NS])),
        max_size=draw(st.none() | st.integers(0, 3000)),
        grace_ns=int(grace_h * HOUR_NS),
    )
    return Scenario(
        exports,
        draw(st.integers(0, 2)),
        draw(st.integers(0, 3)),
        draw(st.lists(st.sampled_from([0.1, 5.0]), max_size=2)),
        policy,
        draw(st.sampled_from([0.0, 0.5, 2.0, 48.0])),
    )


def build(root: Path, sc: Scenario, draw_index: int = 0) -> int:
    """Write the scenario; returns `now_ns`."""
    b = Builder(root)
    base = [b.layer(f"base{i}") for i in range(sc.shared)]
    written: list[dict[str, Any]] = []
    for i, e in enumerate(sc.exports):
        b.tick(e["gap_h"] * 3600)
        own = [b.layer(f"e{i}l{j}", size=40 + 13 * j) for j in range(e["own"])]
        reused = written[-e["reuse"] :] if e["reuse"] and written else []
        layers = list({x["digest"]: x for x in [*base, *reused, *own]}.values())
        b.export(layers, tag=e["tag"], shape=e["shape"])
        written.extend(own)
    for o in range(sc.orphans):
        b.orphan(str(o))
    now = b.clock_ns + int(sc.now_after_h * HOUR_NS)
    for k, age in enumerate(sc.ingest_ages_h):
        b.ingest(f"{k:064x}", 10, 20, mtime_ns=now - int(age * HOUR_NS))
    return now


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_gc_invariants(sc: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        now = build(root, sc)
        before = api.history(root)
        complete_before = {e.digest for e in before.exports if e.complete}
        index_blobs = {d for e in before.exports if e.referenced_by_index for d in e.blobs}
        young = {b.digest for b in before.inventory.blobs.values() if now - b.mtime_ns < sc.policy.grace_ns}
        history_before = stable_history(root)
        names_before = blob_names(root)
        policy = sc.policy
        if before.inventory.names_nothing_present():
            # No export is tagged: gc deletes on an index.json naming nothing only with --all.
            policy = replace(policy, allow_empty_index=True)
            if api.gc(root, policy, now_ns=now, dry_run=True).plan.blobs:
                with pytest.raises(RefusedError, match="has no entries"):
                    api.gc(root, sc.policy, now_ns=now)
                assert blob_names(root) == names_before

        dry = api.gc(root, policy, now_ns=now, dry_run=True)
        assert blob_names(root) == names_before  # --dry-run changes nothing
        real = api.gc(root, policy, now_ns=now)
        # --dry-run predicts exactly what gc does
        assert real.deleted == dry.plan.blobs and real.ingest_deleted == dry.plan.ingest
        assert real.plan.kept == dry.plan.kept and real.freed_bytes == dry.freed_bytes
        deleted = {b.digest for b in real.deleted}
        assert names_before - blob_names(root) == {d[7:] for d in deleted}
        # nothing index.json reaches, nothing younger than grace
        assert not deleted & index_blobs and not deleted & young
        after = api.history(root)
        kept = {d.digest for d in real.plan.kept}
        assert {e.digest for e in after.exports} == kept
        for e in after.exports:  # every kept export that was complete still is
            assert e.complete or e.digest not in complete_before, e.digest
        assert stable_history(root) == {d: h for d, h in history_before.items() if d in kept}
        if policy.max_size is not None and not real.warnings:
            assert real.kept_bytes <= policy.max_size
        assert all(now - i.mtime_ns >= policy.grace_ns for i in real.ingest_deleted)
        # gc twice: the second run deletes nothing
        again = api.gc(root, policy, now_ns=now)
        assert again.deleted == () and again.ingest_deleted == ()


# -- UNIQUE is what gc frees when that export alone is dropped (issue 10, 15) ------------------
@dataclass(frozen=True)
class Layout:
    exports: list[dict[str, Any]]  # shape, tag, own layers, reuse, twin (the same layers again)
    missing: list[int]  # indexes into the distinct layers written: their files are deleted
    drop_config: int | None  # an export whose cache config file is deleted
    foreign: int  # layers a foreign image in index.json shares with the cache (0: no image)
    orphans: int
    bad_json: bool  # a JSON blob that does not parse (kept: it could be a manifest)
    real: int  # which export the real gc drops at the end


@st.composite
def layouts(draw: st.DrawFn) -> Layout:
    n = draw(st.integers(1, 5))
    exports = [
        {
            "shape": draw(st.sampled_from("ABC")),
            "tag": draw(st.sampled_from([None, "latest", "a", "b"])),
            "own": draw(st.integers(0, 3)),
            "reuse": draw(st.integers(0, 3)),
            # the same layers exported again in another shape: a second manifest over the same
            # cache config blob (shared manifest-level content)
            "twin": draw(st.sampled_from([None, None, "A", "B"])),
        }
        for _ in range(n)
    ]
    return Layout(
        exports,
        draw(st.lists(st.integers(0, 30), max_size=4, unique=True)),
        draw(st.none() | st.integers(0, n - 1)),
        draw(st.integers(0, 2)),
        draw(st.integers(0, 2)),
        draw(st.booleans()),
        draw(st.integers(0, 20)),
    )


def write_layout(root: Path, lay: Layout) -> int:
    """Write the layout; returns `now_ns` (after every write)."""
    from ocicache.format import mediatypes as mt
    from ocicache.synth import compact

    b = Builder(root)
    written: list[dict[str, Any]] = [b.layer("base", size=500)]
    manifests: list[str] = []
    for i, e in enumerate(lay.exports):
        own = [b.layer(f"e{i}l{j}", size=30 + 41 * j + i) for j in range(e["own"])]
        reused = written[-e["reuse"] :] if e["reuse"] else []
        layers = list({x["digest"]: x for x in [*reused, *own]}.values()) or written[:1]
        manifests.append(b.export(layers, tag=e["tag"], shape=e["shape"]))
        if e["twin"] is not None and e["twin"] != e["shape"]:
            b.export(layers, tag=None, shape=e["twin"])
        written.extend(own)
    if lay.foreign:
        cfg = b.blob(compact({"architecture": "amd64", "os": "linux", "rootfs": {}}))
        shared = written[: lay.foreign]
        image = compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cfg,
                    "size": 60,
                },
                "layers": [{k: x[k] for k in ("mediaType", "digest", "size")} for x in shared],
            }
        )
        b.point("image", b.blob(image), len(image))
    for o in range(lay.orphans):
        b.orphan(str(o))
    if lay.bad_json:
        b.blob(b'{"schemaVersion":2,"config":{"mediaType":')
    distinct = list({x["digest"]: x for x in written}.values())
    for k in lay.missing:
        if k < len(distinct):
            (root / "blobs" / "sha256" / distinct[k]["digest"][7:]).unlink(missing_ok=True)
    if lay.drop_config is not None:
        doc = json.loads((root / "blobs" / "sha256" / manifests[lay.drop_config][7:]).read_bytes())
        config = doc["config"] if "config" in doc else doc["manifests"][-1]
        (root / "blobs" / "sha256" / config["digest"][7:]).unlink(missing_ok=True)
    return b.clock_ns + HOUR_NS


def _freed(root: Path, keep: list[str], now: int, dry_run: bool = True) -> dict[str, int]:
    r = api.gc(root, Policy(grace_ns=0, keep_refs=tuple(keep)), now_ns=now, dry_run=dry_run)
    blobs = r.plan.blobs if dry_run else r.deleted
    return {b.digest: b.size for b in blobs}


@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    database=None,
)
@given(lay=layouts())
def test_unique_is_what_gc_frees_when_that_export_alone_is_dropped(lay: Layout) -> None:
    """UNIQUE (history, show) == the bytes `gc --grace 0` frees beyond what it frees anyway
    when that export alone is dropped (every other one kept with --keep); SIZE counts the
    blobs on disk only, what the missing ones would take is missingBytes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        now = write_layout(root, lay)
        snap = api.history(root)
        inv, exports = snap.inventory, snap.exports
        everyone = [e.digest for e in exports]
        for e in exports:
            on_disk = [d for d in e.blobs if d in inv.blobs]
            assert e.size == sum(inv.blobs[d].size for d in on_disk)
            assert e.missing_bytes == sum(
                x.size for x in (*e.layers, *([e.config] if e.config else [])) if x.digest in e.missing
            )
            assert e.unique_size <= e.size
            old = drop_from_index(root, e.digest)
            try:
                base = _freed(root, everyone, now)
                drop = _freed(root, [d for d in everyone if d != e.digest], now)
            finally:
                (root / "index.json").write_bytes(old)
            assert base.items() <= drop.items()
            extra = {d: n for d, n in drop.items() if d not in base}
            assert sum(extra.values()) == e.unique_size, e.digest
            assert not set(extra) & set(e.missing) and set(extra) <= set(inv.blobs)
        # and the real gc, on one of them
        e = exports[lay.real % len(exports)]
        unique = e.unique_size
        drop_from_index(root, e.digest)
        base = _freed(root, everyone, now)
        real = _freed(root, [d for d in everyone if d != e.digest], now, dry_run=False)
        assert sum(n for d, n in real.items() if d not in base) == unique
        assert e.digest not in {x.digest for x in api.history(root).exports}
