"""When was each export made: per-export evidence after restores that lost mtimes (issue 10, 4).

A restore that does not keep mtimes (`cp -r`, `aws s3 sync`, rsync without `-t`) rewrites every
file it copies within seconds, long after the steps the manifests record; one new BuildKit export
then writes its own blobs with true mtimes. history must order the restored exports by their
steps (and index.json), the new one first and the one it replaced next, and `gc --keep-last 1`
must keep that one. Directories are built here (synth.Builder, copies of the real fixtures),
copies are modelled with os.utime; nothing depends on the clock of the machine.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_fixture, groundtruth
from test_fixtures import expected_exports

from ocicache import api
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.format.model import ANN_REF_NAME
from ocicache.synth import Builder

S = 1_000_000_000
MIN = 60 * S
DAY = 24 * HOUR_NS


def blob_paths(root: Path) -> list[Path]:
    return sorted((root / "blobs" / "sha256").iterdir())


def copy_times(paths: list[Path], start_ns: int, spread_ns: int, seed: int) -> None:
    """A copy that rewrote `paths` in some order (readdir's, the sync tool's) within
    `spread_ns` from `start_ns`: every mtime is the copy's."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    for i, p in enumerate(order):
        t = start_ns + (spread_ns * i) // max(len(order) - 1, 1)
        os.utime(p, ns=(t, t), follow_symlinks=False)


@dataclass
class Restored:
    root: Path
    b: Builder
    old: list[str]  # the exports made before the restore, oldest first
    layers: list[list[dict[str, Any]]]  # their layer descriptors
    tags: list[str]
    restore_ns: int


def history_then_restore(
    root: Path,
    n: int,
    tags: tuple[str, ...],
    gap_ns: int,
    restore_after_ns: int,
    spread_ns: int,
    seed: int = 0,
    preserved: int = 0,
) -> Restored:
    """n exports (each builds one new step on top of the previous one), `gap_ns` apart, tags
    cycling; then a copy `restore_after_ns` after the last one, which rewrote every blob but
    those of the first `preserved` exports (an rsync that kept their times)."""
    b = Builder(root)
    base = b.layer("base", size=900)
    chain = [base]
    old, layers, used = [], [], []
    for i in range(n):
        if i:
            b.tick(gap_ns / S)
        chain = [*chain, b.layer(f"step{i}", size=300 + 17 * i)]
        tag = tags[i % len(tags)]
        old.append(b.export(chain, tag=tag))
        layers.append(chain)
        used.append(tag)
    restore = b.clock_ns + restore_after_ns
    keep = set()
    for i in range(preserved):
        keep.add(old[i])
        keep.update(x["digest"] for x in layers[i])
        keep.add(_config_of(root, old[i]))
    copy_times([p for p in blob_paths(root) if "sha256:" + p.name not in keep], restore, spread_ns, seed)
    return Restored(root, b, old, layers, used, restore)


def _config_of(root: Path, manifest: str) -> str:
    doc = json.loads((root / "blobs" / "sha256" / manifest[7:]).read_bytes())
    return str(doc["config"]["digest"])


def new_export(r: Restored, after_ns: int, tag: str | None = None) -> str:
    """One real BuildKit export `after_ns` after the restore: the last export's layers (already
    there: BuildKit writes none of them again) plus one step built now, on the last one's tag."""
    r.b.clock_ns = r.restore_ns + after_ns
    layers = [*r.layers[-1], r.b.layer("after-restore", size=444)]
    return r.b.export(layers, tag=tag or r.tags[-1])


def order(root: Path) -> list[str]:
    return [e.digest for e in api.history(root).exports]


def keep_last_1(root: Path, now_ns: int) -> list[str]:
    """What `gc --keep-last 1 --grace 0` keeps beyond index.json (a dry run)."""
    plan = api.gc(root, Policy(keep_last=1, grace_ns=0), now_ns=now_ns, dry_run=True).plan
    return [k.digest for k in plan.kept if "keep-last" in k.rules]


# -- restore, then one real export ---------------------------------------------------------------
CASES = [
    # n, tags, gap between exports, restore after the last export, copy spread, new export after
    pytest.param(5, ("latest",), 3 * HOUR_NS, 2 * DAY, 2 * S, 10 * MIN, id="cp-days-later"),
    pytest.param(6, ("latest",), 2 * MIN, 10 * MIN, 0, 90 * S, id="checkout-one-instant"),
    pytest.param(4, ("latest",), 30 * MIN, 20 * S, 4 * S, 5 * MIN, id="copy-right-after-export"),
    pytest.param(7, ("a", "b"), HOUR_NS, DAY, 3 * S, 2 * HOUR_NS, id="two-tags"),
    pytest.param(9, ("a", "b", "c"), 5 * MIN, 3 * HOUR_NS, 8 * S, 30 * S, id="three-tags"),
    pytest.param(3, ("latest",), DAY, 30 * DAY, S // 2, DAY, id="s3-sync-a-month-later"),
]


@pytest.mark.parametrize(("n", "tags", "gap", "after", "spread", "new_after"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_restore_then_one_export(
    tmp_path: Path,
    n: int,
    tags: tuple[str, ...],
    gap: int,
    after: int,
    spread: int,
    new_after: int,
    seed: int,
) -> None:
    r = history_then_restore(tmp_path / "cache", n, tags, gap, after, spread, seed)
    new = new_export(r, new_after)
    replaced = r.old[-1]
    exports = api.history(r.root).exports
    assert [e.digest for e in exports] == [new, *reversed(r.old)]
    by = {e.digest: e for e in exports}
    assert by[new].created_from == "mtime" and by[new].mtime_rejected is None
    for d in r.old:
        assert by[d].created_from == "createdat", d
        assert by[d].mtime_rejected == "copied-batch", d
        assert by[d].created_ns == by[d].newest_step_ns
    assert keep_last_1(r.root, r.b.clock_ns + DAY) == [replaced]


def test_gc_keep_last_1_deletes_the_right_ones(tmp_path: Path) -> None:
    """The real gc, not only its plan: the replaced export survives whole, the others go."""
    r = history_then_restore(tmp_path / "cache", 5, ("latest",), HOUR_NS, DAY, 2 * S, seed=3)
    new = new_export(r, 15 * MIN)
    api.gc(r.root, Policy(keep_last=1, grace_ns=0), now_ns=r.b.clock_ns + DAY)
    after = api.history(r.root).exports
    assert [e.digest for e in after] == [new, r.old[-1]]
    assert all(e.complete for e in after)


def test_rsync_that_kept_some_times(tmp_path: Path) -> None:
    """Exports copied earlier with their times (rsync -t) keep them; the ones copied later
    without are one batch; one new export on top."""
    r = history_then_restore(
        tmp_path / "cache", 6, ("latest",), 2 * HOUR_NS, 3 * DAY, 5 * S, seed=2, preserved=2
    )
    new = new_export(r, 3 * MIN)
    exports = api.history(r.root).exports
    assert [e.digest for e in exports] == [new, *reversed(r.old)]
    by = {e.digest: e for e in exports}
    for d in r.old[:2]:
        assert by[d].created_from == "mtime" and by[d].mtime_rejected is None
    for d in r.old[2:]:
        assert by[d].created_from == "createdat" and by[d].mtime_rejected == "copied-batch"
    assert keep_last_1(r.root, r.b.clock_ns + DAY) == [r.old[-1]]


def test_rsync_that_kept_layer_times_only(tmp_path: Path) -> None:
    """Layers kept their times, every manifest and config was rewritten at once."""
    r = history_then_restore(
        tmp_path / "cache", 5, ("latest",), HOUR_NS, 2 * DAY, 0, preserved=5
    )  # (nothing copied yet)
    docs = [*r.old, *(_config_of(r.root, m) for m in r.old)]
    copy_times([r.root / "blobs" / "sha256" / d[7:] for d in docs], r.restore_ns, 3 * S, 4)
    new = new_export(r, 20 * MIN)
    assert order(r.root) == [new, *reversed(r.old)]
    assert keep_last_1(r.root, r.b.clock_ns + DAY) == [r.old[-1]]


def test_slow_copy_of_big_layers_is_one_batch(tmp_path: Path) -> None:
    """A copy at a few MiB/s: manifests seconds apart with big layers written between them."""
    b = Builder(tmp_path)
    chain = [b.layer("base")]
    old = []
    for i in range(3):
        b.tick(3600)
        chain = [*chain, b.layer(f"big{i}", size=(12 << 20) + i)]
        old.append(b.export(chain))
    t = b.clock_ns + DAY
    big = [x["digest"] for x in chain[1:]]
    first = [d for pair in zip(old, big, strict=True) for d in pair]  # manifest, big layer, ...
    rest = [p for p in blob_paths(tmp_path) if "sha256:" + p.name not in first]
    for p in [*(tmp_path / "blobs" / "sha256" / d[7:] for d in first), *rest]:
        t += S // 10 + p.stat().st_size * S // (4 << 20)  # one file after the other, 4 MiB/s
        os.utime(p, ns=(t, t))
    manifests = sorted((tmp_path / "blobs" / "sha256" / d[7:]).stat().st_mtime_ns for d in old)
    assert max(b - a for a, b in itertools.pairwise(manifests)) > 3 * S
    b.clock_ns = t + 10 * MIN
    new = b.export([*chain, b.layer("new")])
    exports = api.history(tmp_path).exports
    assert [e.digest for e in exports] == [new, *reversed(old)]
    assert {e.mtime_rejected for e in exports[1:]} == {"copied-batch"}


@pytest.mark.parametrize("case", ["a-history-min", "f-tags"])
def test_fixture_checkout_then_one_export(tmp_path: Path, case: str) -> None:
    """A real BuildKit directory as git checked it out (every mtime lost), then one export."""
    root = copy_fixture(case, tmp_path, restore_mtimes=False)
    truth = groundtruth(case)["final"]["blobs_on_disk"]
    checkout = max(blob["mtime_ns"] for blob in truth) + 3 * DAY  # (not this machine's clock)
    copy_times(blob_paths(root), checkout, S // 100, 0)
    index = json.loads((root / "index.json").read_bytes())
    latest = next(e for e in index["manifests"] if e["annotations"][ANN_REF_NAME] == "latest")
    manifest = json.loads((root / "blobs" / "sha256" / latest["digest"][7:]).read_bytes())
    b = Builder(root)  # (rewrites index.json empty: put the fixture's entries back)
    b.entries = index["manifests"]
    b.write_index()
    b.clock_ns = max(p.stat().st_mtime_ns for p in blob_paths(root)) + 20 * MIN
    new = b.export([*manifest["layers"], b.layer("after-checkout")], tag="latest")
    assert order(root) == [new, *expected_exports(case)]
    assert keep_last_1(root, b.clock_ns + DAY) == [latest["digest"]]


# -- what must keep its mtime ---------------------------------------------------------------
def test_real_exports_back_to_back_keep_their_mtimes(tmp_path: Path) -> None:
    """Exports seconds apart, each right after its own steps (like the real fixtures)."""
    b = Builder(tmp_path)
    chain = [b.layer("r")]
    digests = []
    for i in range(6):
        chain = [*chain, b.layer(f"s{i}")]
        digests.append(b.export(chain, tag=("a", "b")[i % 2]))
    exports = api.history(tmp_path).exports
    assert [e.digest for e in exports] == digests[::-1]
    assert {e.created_from for e in exports} == {"mtime"}


def test_fully_cached_export_long_after_keeps_its_mtime(tmp_path: Path) -> None:
    """A new manifest that re-uses only old steps, hours later: its mtime is long after its
    steps, but nothing else was written with it: it is the newest export."""
    b = Builder(tmp_path)
    r, s, t = b.layer("r"), b.layer("s"), b.layer("t")
    first = b.export([r, s])
    second = b.export([r, s, t])
    b.tick(5 * 3600)
    cached = b.export([r, t], tag="other")  # steps built hours ago, re-combined
    b.tick(2 * 3600)
    b.export([r, s, t])  # (identical to `second`: no new blob, the tag moves)
    exports = api.history(tmp_path).exports
    assert [e.digest for e in exports] == [second, cached, first]
    by = {e.digest: e for e in exports}
    assert by[cached].created_from == "mtime" and by[cached].created_ns == by[cached].mtime_ns
    assert by[cached].mtime_ns - by[cached].newest_step_ns > 4 * HOUR_NS  # type: ignore[operator]


def test_a_manifest_older_than_its_steps_only_loses_its_own_mtime(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    r = b.layer("r")
    x = b.export([r, b.layer("s")])
    y = b.export([r, b.layer("t")], tag="y")
    z = b.export([r, b.layer("u")], tag="z")
    p = tmp_path / "blobs" / "sha256" / y[7:]
    os.utime(p, ns=(10**9, 10**9))  # 1970: older than any step it records
    by = {e.digest: e for e in api.history(tmp_path).exports}
    assert by[y].mtime_rejected == "older-than-steps" and by[y].created_from == "createdat"
    assert by[x].created_from == by[z].created_from == "mtime"
    assert order(tmp_path) == [z, y, x]


def test_copy_of_a_lone_export_then_one_export(tmp_path: Path) -> None:
    b = Builder(tmp_path)
    chain = [b.layer("r"), b.layer("s")]
    old = b.export(chain)
    copy_times(blob_paths(tmp_path), b.clock_ns + 6 * HOUR_NS, S, 0)
    b.clock_ns += 6 * HOUR_NS + 5 * MIN
    new = b.export([*chain, b.layer("t")])
    by = {e.digest: e for e in api.history(tmp_path).exports}
    assert order(tmp_path) == [new, old]
    assert by[old].mtime_rejected == "copied-alone" and by[new].created_from == "mtime"


def test_history_json_says_the_evidence(tmp_path: Path) -> None:
    from conftest import run_cli

    r = history_then_restore(tmp_path / "cache", 3, ("latest",), HOUR_NS, DAY, S)
    new = new_export(r, 5 * MIN)
    doc = json.loads(run_cli("history", "--json", str(r.root)).stdout)
    got = [(e["digest"], e["createdFrom"], e["mtimeRejected"]) for e in doc["exports"]]
    assert got == [(new, "mtime", None), *((d, "createdat", "copied-batch") for d in reversed(r.old))]
    table = run_cli("history", str(r.root)).stdout
    assert table.count(" *") == 3 and "* no credible manifest mtime (a copy's" in table
    show = run_cli("show", str(r.root), "~1").stdout
    assert "from createdat, mtime rejected: copied-batch)" in show
