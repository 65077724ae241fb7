"""benchmarks/bench.py at a tiny size, so the benchmark never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parent.parent


@pytest.mark.slow
def test_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """Every target line is measured and judged (at 1,200 blobs: 7 exports, so `show ~5`
    exists), and the figures land in the JSON file."""
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench.py"),
            "--blobs",
            "1200",
            "--repeat",
            "1",
            "--hash-mb",
            "2",
            "--ocicache-cmd",
            f"{sys.executable} -m ocicache",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert "FAILED" not in proc.stdout
    figures = json.loads(out.read_text())
    assert {"find_all", "read_floor", "sha256sum_blobs"} <= set(figures["baselines"])
    lines = next(iter(figures["sizes"].values()))["lines"]
    assert {
        "history",
        "history --json",
        "show ~5",
        "blobs --unreferenced --json",
        "gc --dry-run --keep-last 3 --grace 0 --json",
    } <= set(lines)
    targets = figures["targets"]
    assert len(targets) == 8 and all(isinstance(t["met"], bool) for t in targets)
    assert figures["gc"]["files_deleted"] and min(figures["gc"]["files_deleted"]) > 0
    assert "targets at" in proc.stdout


def _benchmark_modules() -> tuple[Any, Any]:
    """benchmarks/bench.py and benchmarks/gen.py as modules."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench
        import gen
    finally:
        sys.path.pop(0)
    return bench, gen


def test_read_floor_lists_what_the_reader_reads(tmp_path: Path) -> None:
    """The floor reads the blobs a first run sniffs (every blob nothing parsed names as a
    layer) and the JSON documents it parses (every manifest and config), no more."""
    bench, gen = _benchmark_modules()
    shape = gen.shape_for(2000)
    gen.generate(tmp_path / "c", shape)
    heads, docs = bench.read_floor_lists(tmp_path / "c")
    assert len(docs) == 2 * shape.exports  # every manifest and cache config, once
    # Sniffed: the orphans, and the manifests and configs index.json does not name.
    assert shape.orphans <= len(heads) <= shape.orphans + 2 * shape.exports
    assert len(set(heads)) == len(heads)


def test_measured_commands_run_their_own_code_compiled(tmp_path: Path) -> None:
    """An installed `ocicache` is not handed the PYTHONPATH of a checkout (it would run the
    checkout's code); `python -m ocicache` is (that is how it finds one). Bytecode is always
    written and read, in the benchmark's own folder: no timed run compiles the modules."""
    bench, _ = _benchmark_modules()
    environ = {"PYTHONPATH": "/src", "PYTHONDONTWRITEBYTECODE": "1", "OCICACHE_NO_CACHE": "1", "HOME": "/h"}
    installed = bench.measured_env(environ, ["/venv/bin/ocicache"], tmp_path)
    assert installed == {"HOME": "/h", "PYTHONPYCACHEPREFIX": str(tmp_path)}
    checkout = bench.measured_env(environ, [sys.executable, "-m", "ocicache"], tmp_path)
    assert checkout == {"HOME": "/h", "PYTHONPATH": "/src", "PYTHONPYCACHEPREFIX": str(tmp_path)}
    assert environ["PYTHONDONTWRITEBYTECODE"] == "1"  # (a copy)


def test_generator_is_deterministic(tmp_path: Path) -> None:
    _, gen = _benchmark_modules()
    shape = gen.shape_for(400)
    gen.generate(tmp_path / "a", shape)
    gen.generate(tmp_path / "b", shape)
    names = sorted(p.name for p in (tmp_path / "a" / "blobs" / "sha256").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b" / "blobs" / "sha256").iterdir())
    assert len(names) == shape.blobs
    assert (tmp_path / "a" / "index.json").read_bytes() == (tmp_path / "b" / "index.json").read_bytes()


def test_decode_benchmark_runs(tmp_path: Path) -> None:
    _, gen = _benchmark_modules()
    gen.generate(tmp_path / "d", gen.shape_for(400))
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "decode.py"), str(tmp_path / "d"), "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slow:" in proc.stdout and "fast:" in proc.stdout


def test_registry_benchmark_runs_at_a_tiny_size() -> None:
    """benchmarks/registry.py against a real docker-registry (skipped without it)."""
    from regserver import require_registry

    require_registry()
    r = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "registry.py"),
            "--exports",
            "3",
            "--layers",
            "3",
            "--repeat",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "history --registry-storage (3 exports)" in r.stdout and "x" in r.stdout.splitlines()[-1]
