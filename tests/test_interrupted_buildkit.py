"""An export real BuildKit never finished: buildkitd killed (SIGKILL) while it writes a layer into DIR.

BuildKit v0.32.2 (../shared/buildkit, skipped when absent) exports a cache with a big layer
(incompressible, so writing it takes seconds) under tag `first`, then builds again with that
layer's input changed and is killed as soon as the new layer's partial write shows in
`ingest/` (an export that ends before that lands, and the next attempt brings a new layer; after
three the test skips, saying so). What is left is what a crash, an OOM kill or a cancelled CI job leaves: an
`ingest/<ref>/` folder (data, ref, total, startedat, updatedat) holding part of the layer, maybe
some finished blobs of the new export, and index.json as the first export left it.

ocicache must call that folder an interrupted write (check: a `stale-ingest` note, exit 0),
count it in du, keep it under gc's default grace (a write that recent may still be going on, or
be taken up by the next export), remove it with `--grace 0` without touching the export
index.json names, and leave that export importable: a fresh daemon imports it with every step
CACHED.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from buildkit_helpers import STEPS, cached_steps, daemon, needs_buildkit
from clirun import json_of

BIG = 96 << 20  # random bytes: gzip cannot shrink them, so the layer takes seconds to write


def _context(root: Path, big_seed: int) -> Path:
    """FROM scratch, busybox, two RUN steps and a COPY of a big random file between them."""
    ctx = root / f"ctx-{big_seed}"
    ctx.mkdir(parents=True)
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "big").write_bytes(os.urandom(BIG))
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox","--install","-s","/bin"]\n'
        "RUN echo base > /base\n"
        "COPY big /big\n"
        "RUN echo done > /done\n"
    )
    stamp = 1_767_225_600 + big_seed
    for p in (ctx / "busybox", ctx / "Dockerfile"):
        os.utime(p, (1_767_225_600, 1_767_225_600))
    os.utime(ctx / "big", (stamp, stamp))
    return ctx


def _partial_ingest(cache: Path) -> list[Path]:
    """The ingest/<ref>/ folders whose data has bytes but not all of them yet."""
    out = []
    ingest = cache / "ingest"
    for entry in ingest.iterdir() if ingest.is_dir() else []:
        try:
            data = (entry / "data").stat().st_size
            total = int((entry / "total").read_text() or 0)
        except (OSError, ValueError):
            continue
        if 0 < data < total:
            out.append(entry)
    return out


def _kill_mid_layer(buildctl: str, host: str, ctx: Path, cache: Path, pid: int) -> list[Path]:
    """Export `ctx`'s build into `cache` and SIGKILL buildkitd (`pid`) as soon as a layer's
    partial write shows in ingest/; the partial writes caught ([] when the export ended first)."""
    build = subprocess.Popen(
        [
            buildctl,
            "--addr",
            host,
            "build",
            "--frontend",
            "dockerfile.v0",
            "--local",
            f"context={ctx}",
            "--local",
            f"dockerfile={ctx}",
            "--export-cache",
            f"type=local,dest={cache},mode=max,tag=second",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not _partial_ingest(cache) and build.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        partial = _partial_ingest(cache)
        if partial:
            os.kill(pid, signal.SIGKILL)
    finally:
        build.wait(timeout=120)
    return partial


@pytest.mark.slow
@needs_buildkit
def test_an_export_killed_mid_layer_leaves_an_ingest_gc_removes_and_the_cache_still_imports(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    with daemon(tmp_path / "bk") as bk:
        first = bk.build(
            _context(tmp_path, 1), "--export-cache", f"type=local,dest={cache},mode=max,tag=first"
        )
        assert first.returncode == 0, first.stderr[-2000:]
        before = json.loads((cache / "index.json").read_text())
        digest = before["manifests"][0]["digest"]

        pid = int((bk.workdir / "buildkitd.pid").read_text())
        partial: list[Path] = []
        for attempt in range(2, 5):  # (a new layer each time, should an export outrun the watch)
            partial = _kill_mid_layer(bk.buildctl, bk.host, _context(tmp_path, attempt), cache, pid)
            if partial:
                break
            before = json.loads((cache / "index.json").read_text())  # (that export landed)
    if not partial:
        pytest.skip("BuildKit ended each export (3) before its layer's write could be caught")
    assert json.loads((cache / "index.json").read_text()) == before  # the killed export named nothing
    names = {f"ingest/{p.name}" for p in _partial_ingest(cache)}
    assert names, "the partial write is gone"

    check = json_of("check", str(cache))
    assert check["ok"] is True
    findings = check["findings"]
    assert isinstance(findings, list)
    stale = {f["file"] for f in findings if f["code"] == "stale-ingest"}
    assert stale == names
    assert all(f["severity"] in ("note", "warning") for f in findings), findings

    history = json_of("history", str(cache))
    exports = history["exports"]
    assert isinstance(exports, list)
    named = {m["digest"] for m in before["manifests"]}  # ("first", and any export that outran a kill)
    assert digest in named
    assert {e["digest"] for e in exports if e["current"]} == named

    du = json_of("du", str(cache))
    categories = du["categories"]
    assert isinstance(categories, list)
    ingest = next(c for c in categories if c["category"] == "ingest")
    assert ingest["files"] >= len(names) and ingest["bytes"] > 0

    # Under the default grace the write is recent: BuildKit may still be writing it. Kept.
    dry = json_of("gc", str(cache), "--dry-run")
    assert dry["ingest"] == []

    gc = json_of("gc", str(cache), "--grace", "0")
    assert {f"ingest/{i['name']}" for i in gc["ingest"]} == names
    assert not any((cache / n).exists() for n in names)
    assert {e["digest"] for e in gc["kept"]} == named
    assert json.loads((cache / "index.json").read_text()) == before
    after = json_of("check", str(cache))
    assert after["ok"] is True
    assert [f for f in after["findings"] if f["severity"] != "note"] == []

    with daemon(tmp_path / "fresh") as fresh:
        r = fresh.build(tmp_path / "ctx-1", "--import-cache", f"type=local,src={cache},digest={digest}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert cached_steps(r.stderr) == STEPS, r.stderr[-3000:]
