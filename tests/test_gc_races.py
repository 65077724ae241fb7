"""gc under fire: SIGKILLed at random points, and racing a concurrent BuildKit-like exporter."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gc_helpers import assert_consistent, blob_names

from ocicache import api
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.format.model import ANN_REF_NAME
from ocicache.ops.gc_apply import DELAY_ENV, EXCHANGE_ENV, KILL_ENV
from ocicache.store.lock import index_lock
from ocicache.synth import Builder, compact, history_dir

ROOT = Path(__file__).parent.parent
# How gc moves what it drops into its quarantine: the whole of blobs/sha256 exchanged for a
# folder of what it keeps (these directories drop most of their blobs), or blob by blob.
STRATEGIES = ("exchange", "rename")


def _gc_process(
    root: Path, *args: str, delay: float, kill_after: int = -1, strategy: str = "exchange"
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        DELAY_ENV: str(delay),
        KILL_ENV: str(kill_after),
        "PYTHONPATH": str(ROOT),
        EXCHANGE_ENV: "0" if strategy == "rename" else "always",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "ocicache", "gc", str(root), *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """25 exports (old), 15 orphans, 4 stale ingest entries; and what a full gc leaves."""
    root = tmp_path_factory.mktemp("tpl") / "cache"
    b = history_dir(root, exports=25, layers=4, orphans=15, shared=1)
    for k in range(4):
        b.ingest(f"{k:064x}", 1000, 5000, mtime_ns=b.clock_ns)
    expected = tmp_path_factory.mktemp("exp") / "cache"
    shutil.copytree(root, expected)
    api.gc(expected, Policy(grace_ns=0))
    return root, blob_names(expected)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sigkill_at_random_points_leaves_a_consistent_directory(
    tmp_path: Path, template: tuple[Path, set[str]], strategy: str
) -> None:
    tpl, expected = template
    rng = random.Random(20261127)
    killed_mid = 0
    dropped = len(blob_names(tpl)) - len(expected)
    # rename: blob moves + ingest file unlinks; exchange: kept blobs linked, the exchange,
    # ingest file unlinks, the purge's unlinks
    total = dropped + 4 * 5 if strategy == "rename" else len(expected) + 1 + 4 * 5 + dropped
    for trial in range(14):
        root = tmp_path / f"t{trial}"
        shutil.copytree(tpl, root)
        before = blob_names(root)
        if trial < 10:  # a crash right after a random unlink (every phase boundary included)
            proc = _gc_process(
                root, "--grace", "0", delay=0, kill_after=rng.randint(1, total), strategy=strategy
            )
        else:  # a kill at a random time (while planning, locking, deleting, or after)
            proc = _gc_process(root, "--grace", "0", delay=0.002, strategy=strategy)
            time.sleep(rng.uniform(0.1, 0.8))
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = blob_names(root)
        if strategy == "rename" and expected < now < before:
            killed_mid += 1
        # An exchange leaves blobs/ as it was or as gc leaves it, never in between: a kill
        # landed mid-run when gc's own folder (the batch, the exchange's journal) is left.
        if strategy == "exchange" and (root / ".ocicache").exists():
            assert now in (before, expected), (len(now), len(before), len(expected))
            killed_mid += 1
        # The invariant: reads cleanly, every manifest left references only present blobs,
        # every index.json export is complete.
        assert_consistent(root)
        assert expected <= now
        # Running gc again finishes the job; a third run deletes nothing.
        api.gc(root, Policy(grace_ns=0))
        assert blob_names(root) == expected
        assert not (root / "ingest").exists() or not any((root / "ingest").iterdir())
        assert api.gc(root, Policy(grace_ns=0)).deleted == ()
        assert_consistent(root)
    assert killed_mid >= 8, killed_mid  # the kills really landed while gc was deleting


def _upload(root: Path, data: bytes, digest: str) -> None:
    """Write a blob the way BuildKit's content store does: ingest/<h>/data, then rename."""
    name = digest.split(":", 1)[1]
    target = root / "blobs" / "sha256" / name
    if target.exists():  # BuildKit never rewrites an existing blob (nor touches its mtime)
        return
    ing = root / "ingest" / name
    ing.mkdir(parents=True, exist_ok=True)
    (ing / "ref").write_text(f"local-cache/{digest}")
    (ing / "data").write_bytes(data)
    os.rename(ing / "data", target)
    os.chmod(target, 0o444)
    (ing / "ref").unlink()
    ing.rmdir()


def _exporter(root: Path, scratch: Path, delay: float, out: dict[str, str]) -> None:
    """A BuildKit-like export that re-uses the OLDEST export's layers (which gc drops).

    It writes its new layers first, then finds the re-used ones present, then writes config and
    manifest. gc sees the ingest/ activity and waits. (An exporter that finds an old layer
    present *before* writing anything, and one that writes nothing at all, are forced at the
    exact point in test_gc_quarantine.py: gc's quarantine puts back what they need.)
    """
    time.sleep(delay)
    b = Builder(scratch)
    reused = [b.layer("base0"), b.layer("e0l1"), b.layer("e0l2")]  # same bytes as export 0
    new = [b.layer(f"fresh{delay}-{i}", size=5000) for i in range(3)]
    digest = b.export([*reused, *new], tag=None)
    blobs = scratch / "blobs" / "sha256"
    order = [x["digest"] for x in (*new, *reused)]
    manifest = json.loads((blobs / digest[7:]).read_bytes())
    order.append(manifest["config"]["digest"])
    order.append(digest)
    for d in order:  # layers, then config, then manifest
        _upload(root, (blobs / d[7:]).read_bytes(), d)
        time.sleep(0.01)
    size = (blobs / digest[7:]).stat().st_size
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with index_lock(fd, timeout=10):  # then index.json, under BuildKit's lock
            index = json.loads((root / "index.json").read_bytes())
            entries = [
                e for e in index["manifests"] if e.get("annotations", {}).get(ANN_REF_NAME) != "latest"
            ]
            entries.append(
                {
                    "mediaType": manifest["mediaType"],
                    "digest": digest,
                    "size": size,
                    "annotations": {ANN_REF_NAME: "latest"},
                }
            )
            index["manifests"] = entries
            with open(root / "index.json", "r+b") as f:  # in place, like BuildKit
                f.truncate(0)
                f.write(compact(index))
    finally:
        os.close(fd)
    out["digest"] = digest


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_concurrent_exporter_survives(tmp_path: Path, template: tuple[Path, set[str]], strategy: str) -> None:
    """Only the safety property is asserted: whether the export raced gc's moves or not (the
    machine's load decides), the new export is complete and the directory consistent."""
    tpl, _ = template
    for trial, delay in enumerate([0.3, 0.45, 0.6]):
        root = tmp_path / f"c{trial}"
        shutil.copytree(tpl, root)
        out: dict[str, str] = {}
        proc = _gc_process(root, "--json", delay=0.004, strategy=strategy)  # --grace 1h
        t = threading.Thread(target=_exporter, args=(root, tmp_path / f"s{trial}", delay, out))
        t.start()
        t.join()
        stdout, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        assert json.loads(stdout)["schema"] == "ocicache/gc@1"
        snap = api.history(root)
        new = next(e for e in snap.exports if e.digest == out["digest"])
        assert new.tags == ("latest",) and new.complete, (new.missing, err.decode())
        assert_consistent(root)
        # A later gc (the new export is now index.json's) keeps it whole too.
        api.gc(root, Policy(grace_ns=0), now_ns=time.time_ns() + 2 * HOUR_NS)
        assert_consistent(root)
        assert next(e for e in api.history(root).exports if e.digest == out["digest"]).complete
