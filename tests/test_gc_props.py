"""Property tests: gc invariants over generated BuildKit-like histories (hypothesis)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from gc_helpers import blob_names, stable_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocicache import api
from ocicache.errors import RefusedError
from ocicache.gc_plan import HOUR_NS, Policy
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
    exports = [{
        "shape": draw(st.sampled_from("ABC")),
        "tag": None if draw(st.integers(0, 5)) == 0 else tags[i % len(tags)],
        "own": draw(st.integers(1, 3)),  # every export builds at least one new step
        "reuse": draw(st.integers(0, 2)),  # layers re-used from earlier exports
        "gap_h": draw(st.sampled_from([0.0, 0.5, 2.0, 30.0])),
    } for i in range(n)]
    grace_h = draw(st.sampled_from([0.0, 1.0, 3.0]))
    policy = Policy(
        keep_last=draw(st.integers(0, 3)),
        keep_within_ns=draw(st.none() | st.sampled_from([HOUR_NS, 24 * HOUR_NS])),
        max_size=draw(st.none() | st.integers(0, 3000)),
        grace_ns=int(grace_h * HOUR_NS),
    )
    return Scenario(exports, draw(st.integers(0, 2)), draw(st.integers(0, 3)),
                    draw(st.lists(st.sampled_from([0.1, 5.0]), max_size=2)), policy,
                    draw(st.sampled_from([0.0, 0.5, 2.0, 48.0])))


def build(root: Path, sc: Scenario, draw_index: int = 0) -> int:
    """Write the scenario; returns `now_ns`."""
    b = Builder(root)
    base = [b.layer(f"base{i}") for i in range(sc.shared)]
    written: list[dict[str, Any]] = []
    for i, e in enumerate(sc.exports):
        b.tick(e["gap_h"] * 3600)
        own = [b.layer(f"e{i}l{j}", size=40 + 13 * j) for j in range(e["own"])]
        reused = written[-e["reuse"]:] if e["reuse"] and written else []
        layers = list({x["digest"]: x for x in [*base, *reused, *own]}.values())
        b.export(layers, tag=e["tag"], shape=e["shape"])
        written.extend(own)
    for o in range(sc.orphans):
        b.orphan(str(o))
    now = b.clock_ns + int(sc.now_after_h * HOUR_NS)
    for k, age in enumerate(sc.ingest_ages_h):
        b.ingest(f"{k:064x}", 10, 20, mtime_ns=now - int(age * HOUR_NS))
    return now


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios())
def test_gc_invariants(sc: Scenario) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        now = build(root, sc)
        before = api.history(root)
        complete_before = {e.digest for e in before.exports if e.complete}
        index_blobs = {d for e in before.exports if e.referenced_by_index for d in e.blobs}
        young = {b.digest for b in before.inventory.blobs.values()
                 if now - b.mtime_ns < sc.policy.grace_ns}
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
