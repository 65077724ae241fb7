"""gc back to back during real BuildKit exports (issue 10, item 0), proven by imports.

BuildKit v0.32.2 (../shared/buildkit, skipped when absent) exports into DIR while `ocicache gc`
runs in a loop with its default settings. The blobs are aged past the grace before and during
each build, so gc drops the older export; the builds alternate between two Dockerfiles, so every
export after the first two is identical to the older, unreferenced one: BuildKit writes no blob,
touches no mtime and only re-points index.json at the old manifest (the case that broke 4 of 36
exports before the quarantine). Whether a gc run falls inside that window is up to the machine's
timing, so only the safety property is asserted (the interleaving itself is forced in
test_gc_quarantine.py): after each build and the gc run that follows it, every export index.json
names is whole, and at the end a fresh daemon imports the current export with every step CACHED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import pytest
from buildkit_helpers import STEPS, cached_steps, context, daemon, needs_buildkit
from gc_helpers import assert_consistent

from ocicache import api
from ocicache.core.gc_plan import Policy
from ocicache.ops import gc_apply

ROOT = Path(__file__).resolve().parent.parent


def _age(root: Path, seconds: int) -> None:
    """Make every blob look `seconds` older (an export made hours ago)."""
    old = time.time() - seconds
    for p in (root / "blobs" / "sha256").iterdir():
        with suppress(FileNotFoundError):  # gc moved it meanwhile
            os.utime(p, (old, old), follow_symlinks=False)


def _gc_loop(root: Path, stop: threading.Event, codes: list[int], errors: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OCICACHE_GC_SETTLE", None)  # gc's default settings
    while not stop.is_set():
        p = subprocess.run(
            [sys.executable, "-m", "ocicache", "gc", str(root)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        codes.append(p.returncode)
        if p.returncode not in (0, 7):
            errors.append(p.stderr)


@pytest.mark.slow
@needs_buildkit
@pytest.mark.parametrize("strategy", ["default", "exchange"])
def test_gc_during_real_exports_keeps_every_export_importable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str
) -> None:
    """`default`: gc's own choice (here, dropping about half: blob by blob); `exchange`: gc
    swaps blobs/sha256 whole whenever it drops anything, BuildKit writing beside it."""
    # The gc loop racing the exports runs with every default (_gc_loop), its 3 s settle wait
    # included. The in-process gc after each build keeps the short settle of the other tests
    # (conftest): no export can land while it runs (the builds are this thread's), so its wait
    # would wait for nothing, 3 s a build (36 of this test's 55 s).
    if strategy == "exchange":
        monkeypatch.setenv(gc_apply.EXCHANGE_ENV, "always")  # the gc loop's processes too
    else:
        monkeypatch.delenv(gc_apply.EXCHANGE_ENV, raising=False)
    cache = tmp_path / "cache"
    with daemon(tmp_path / "bk") as bk:
        ctx = {v: context(tmp_path, v) for v in ("one", "two")}
        for v in ("one", "two"):  # the two exports every later build repeats
            r = bk.build(ctx[v], "--export-cache", f"type=local,dest={cache},mode=max")
            assert r.returncode == 0, r.stderr[-2000:]
        _age(cache, 3 * 3600)
        stop = threading.Event()
        codes: list[int] = []
        errors: list[str] = []
        loop = threading.Thread(target=_gc_loop, args=(cache, stop, codes, errors))
        loop.start()
        landed: list[str] = []
        try:
            for k in range(12):
                v = ("one", "two")[k % 2]
                _age(cache, 3 * 3600)  # builds hours apart: the export this one repeats is old
                # and again while the build runs (its check of the old manifest comes late)
                ager = threading.Timer(0.3 + 0.1 * (k % 5), _age, (cache, 3 * 3600))
                ager.start()
                for _ in range(3):
                    r = bk.build(
                        ctx[v],
                        "--export-cache",
                        f"type=local,dest={cache},mode=max",
                        "--import-cache",
                        f"type=local,src={cache}",
                    )
                    # BuildKit's exporter fails at once when anyone holds index.json.lock, even
                    # a shared reader (its own importer included); gc never takes it, but the
                    # read commands' instant of shared lock on an existing lock file can meet
                    # an export's TryLock. Such a build is tried again.
                    if "could not lock" not in r.stderr:
                        break
                ager.join()
                assert r.returncode == 0, r.stderr[-2000:]
                index = json.loads((cache / "index.json").read_bytes())
                landed.append(index["manifests"][-1]["digest"])
                # Whatever gc was doing when the export landed, the gc after it leaves every
                # export index.json names whole.
                api.gc(cache, Policy())
                assert_consistent(cache)
        finally:
            stop.set()
            loop.join()
    assert not errors, errors
    assert codes and landed
    api.gc(cache, Policy())
    assert_consistent(cache)
    current = json.loads((cache / "index.json").read_bytes())["manifests"][-1]["digest"]
    assert current == landed[-1]
    with daemon(tmp_path / "fresh") as fresh:  # an empty build cache: only the import helps
        r = fresh.build(ctx["two"], "--import-cache", f"type=local,src={cache},digest={current}")
        assert r.returncode == 0, r.stderr[-2000:]
        assert cached_steps(r.stderr) == STEPS, r.stderr[-3000:]
