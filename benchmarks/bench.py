#!/usr/bin/env python3
"""Time ocicache on big synthetic cache directories against `find` and `sha256sum` baselines.

    python benchmarks/bench.py                       # 50k blobs, scales 1,4,16, 5 repetitions
    python benchmarks/bench.py --blobs 5000 --repeat 3 --scales 1,4
    python benchmarks/bench.py --drop-caches         # root only: first runs with cold page cache

Sizes: `--blobs` is the LARGEST directory; the scales divide it (1,4,16 with 50k blobs times
3.1k, 12.5k and 50k blobs). Each directory has the issue's shape scaled (300 exports x 200
layers, each export adding 98 new layers and sharing the rest, + 20k orphans at 50k), every
blob 64-512 bytes (see gen.py). Baselines are measured in the same run on the same directory:
`find DIR -type f -printf '%s\\n'` (the floor for commands that need no blob contents) and
`sha256sum` over every blob file in one process (the floor for hashing).

Every command runs as a subprocess (`python -m ocicache` from this checkout), so interpreter
start-up counts. "first" = empty $XDG_CACHE_HOME (a fresh temporary one each repetition;
with --drop-caches the page cache is dropped too, and `find` is then timed cold as well);
"repeat" = the same command again with the cache it wrote. `gc` deletes, so each of its
repetitions runs on a fresh copy (cp -a). `gc` and `check` are timed only when this ocicache
has them. Hashing throughput is measured on a separate directory of large layers (--hash-mb).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from gen import Shape, generate, shape_for  # noqa: E402

TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None


@dataclass
class Timing:
    """Wall times (s) and peak RSS (KiB) of repetitions of one command."""

    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repetitions were."""
        if len(self.times) < 2:
            return 0.0
        return (max(self.times) - min(self.times)) / self.median

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_kib) / 1024 if self.rss_kib else float("nan")


def run(cmd: list[str], env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,),
        stdout: int | None = subprocess.DEVNULL) -> tuple[float, int]:
    """Run `cmd`; its wall time and peak RSS (KiB, from wait4's rusage)."""
    # /usr/bin/time reports the command's own peak RSS; wait4's rusage of a child forked
    # from this (bigger) Python process would count the parent's pages too.
    with tempfile.NamedTemporaryFile("r") as rss_file:
        wrapped = [TIME, "-f", "%M", "-o", rss_file.name, *cmd] if TIME else cmd
        start = time.perf_counter()
        proc = subprocess.Popen(wrapped, env=env, stdout=stdout, stderr=subprocess.PIPE)
        _, err = proc.communicate()
        elapsed = time.perf_counter() - start
        if proc.returncode not in ok:
            raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: "
                               f"{err.decode()[-500:]}")
        text = rss_file.read().strip().splitlines()
    return elapsed, int(text[-1]) if text and text[-1].isdigit() else 0


def drop_page_cache() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.python = [sys.executable, "-m", "ocicache"]
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(REPO) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.pop("OCICACHE_NO_CACHE", None)
        self.has = {c: self._has(c) for c in ("gc", "check")}
        self.cold = False
        if args.drop_caches:
            self.cold = drop_page_cache()
            if not self.cold:
                print("note: cannot drop the page cache (not root?): first runs are warm")

    def _has(self, command: str) -> bool:
        proc = subprocess.run([*self.python, command, "--help"], env=self.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return proc.returncode == 0

    def env_with_cache(self, xdg: Path) -> dict[str, str]:
        env = dict(self.env)
        env["XDG_CACHE_HOME"] = str(xdg)
        return env

    def find(self, d: Path, cold: bool) -> Timing:
        t = Timing()
        for _ in range(self.args.repeat):
            if cold:
                drop_page_cache()
            s, rss = run(["find", str(d), "-type", "f", "-printf", "%s\n"])
            t.times.append(s)
            t.rss_kib.append(rss)
        return t

    def sha256sum(self, d: Path) -> tuple[Timing, int]:
        """sha256sum over every blob, one process at a time (xargs, no -P): bytes hashed."""
        files = sorted((d / "blobs" / "sha256").iterdir())
        total = sum(f.stat().st_size for f in files)
        listing = self.work / "sha-files"
        listing.write_bytes(b"\0".join(str(f).encode() for f in files))
        t = Timing()
        for _ in range(self.args.repeat):
            s, rss = run(["sh", "-c", f"xargs -0 sha256sum < '{listing}'"])
            t.times.append(s)
            t.rss_kib.append(rss)
        return t, total

    def read_floor(self, d: Path, cold: bool) -> tuple[Timing, int, int]:
        """C tools reading exactly what ocicache's reader must read on a first run, one process
        at a time: `head -c 64` of every blob it sniffs, `cat` of every JSON document it
        parses (the lists come from running the reader here, recording its reads). A floor for
        any reader that opens no layer: what a first run cannot go below."""
        heads, docs = _reads_of_first_run(d)
        heads_file, docs_file = self.work / "floor-heads", self.work / "floor-docs"
        heads_file.write_bytes(b"\0".join(str(d / r).encode() for r in heads))
        docs_file.write_bytes(b"\0".join(str(d / r).encode() for r in docs))
        script = (f"xargs -0 head -q -c 64 < '{heads_file}' > /dev/null; "
                  f"xargs -0 cat < '{docs_file}' > /dev/null")
        t = Timing()
        for _ in range(self.args.repeat):
            if cold:
                drop_page_cache()
            s, rss = run(["sh", "-c", script])
            t.times.append(s)
            t.rss_kib.append(rss)
        return t, len(heads), len(docs)

    def ocicache(self, d: Path, argv: list[str], ok: tuple[int, ...] = (0,),
                 fresh_copy: bool = False) -> tuple[Timing, Timing]:
        """(first runs, repeated runs) of `ocicache ARGV` (DIR substituted for `{}`)."""
        first, again = Timing(), Timing()
        for i in range(self.args.repeat):
            target = d
            if fresh_copy:
                target = self.work / "gc-copy"
                if target.exists():
                    _rmtree(target)
                subprocess.run(["cp", "-a", str(d), str(target)], check=True)
            cmd = [*self.python, *[str(target) if a == "{}" else a for a in argv]]
            xdg = Path(tempfile.mkdtemp(prefix=f"xdg{i}-", dir=self.work))
            env = self.env_with_cache(xdg)
            if self.cold:
                drop_page_cache()
            s, rss = run(cmd, env, ok)
            first.times.append(s)
            first.rss_kib.append(rss)
            s, rss = run(cmd, env, ok)
            again.times.append(s)
            again.rss_kib.append(rss)
            shutil.rmtree(xdg, ignore_errors=True)
        return first, again


def _reads_of_first_run(d: Path) -> tuple[list[str], list[str]]:
    """(blobs sniffed, blobs read whole) by ocicache's reader on DIR with no blob cache."""
    sys.path.insert(0, str(REPO))
    from ocicache.ops.read import read_inventory
    from ocicache.store.layout import Layout

    heads: list[str] = []
    whole: list[str] = []

    class Recording(Layout):
        def read_blob_head(self, blob, n):  # type: ignore[no-untyped-def]
            heads.append(blob.relpath)
            return super().read_blob_head(blob, n)

        def read_blob(self, digest, limit):  # type: ignore[no-untyped-def]
            whole.append(self.blob_relpath(digest))
            return super().read_blob(digest, limit)

    with Recording(d) as layout:
        read_inventory(layout)
    return heads, whole


def _rmtree(path: Path) -> None:
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path)


def commands(has: dict[str, bool]) -> list[tuple[str, list[str], tuple[int, ...], bool]]:
    out: list[tuple[str, list[str], tuple[int, ...], bool]] = [
        ("history", ["history", "{}", "--json"], (0,), False),
        ("du", ["du", "{}", "--json"], (0,), False),
    ]
    if has["gc"]:
        out.append(("gc --dry-run", ["gc", "{}", "--dry-run", "--json"], (0,), False))
        out.append(("gc", ["gc", "{}", "--json"], (0,), True))
    if has["check"]:
        out.append(("check", ["check", "{}", "--json"], (0, 1), False))
    return out


def ensure_dir(path: Path, shape: Shape) -> Path:
    marker = path / ".bench-shape"
    want = shape.describe()
    if marker.exists() and marker.read_text() == want:
        return path
    if path.exists():
        _rmtree(path)
    generate(path, shape)
    marker.write_text(want)
    return path


def hash_dir(path: Path, megabytes: int) -> Path:
    """A small cache whose layers are big (8 MiB each): where hashing throughput shows."""
    marker = path / ".bench-shape"
    want = f"hash {megabytes} MiB"
    if marker.exists() and marker.read_text() == want:
        return path
    if path.exists():
        _rmtree(path)
    sys.path.insert(0, str(REPO))
    from ocicache.synth import Builder

    b = Builder(path)
    layer_mib = 8 if megabytes >= 8 else 1
    n = max(1, megabytes // layer_mib)
    layers = [b.layer(f"big{i}", size=layer_mib << 20) for i in range(n)]
    b.export(layers)
    marker.write_text(want)
    return path


def fmt(x: float) -> str:
    return f"{x:6.3f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blobs", type=int, default=50_000, help="blobs in the largest directory")
    p.add_argument("--scales", default="1,4,16", help="relative sizes (the largest = --blobs)")
    p.add_argument("--repeat", type=int, default=5, help="repetitions (medians are printed)")
    p.add_argument("--hash-mb", type=int, default=512,
                   help="size of the big-layer directory for hashing throughput (0: skip)")
    p.add_argument("--keep", type=Path, help="generate into (and reuse) this folder")
    p.add_argument("--drop-caches", action="store_true",
                   help="drop the page cache before each first run (root; affects the machine)")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    args = p.parse_args(argv)
    scales = sorted({int(s) for s in args.scales.split(",")})
    top = max(scales)

    work = Path(tempfile.mkdtemp(prefix="ocicache-bench-"))
    base = args.keep or work
    scale_results: dict[str, object] = {}
    results: dict[str, object] = {"cpus": os.cpu_count(), "repeat": args.repeat,
                                  "scales": scale_results}
    try:
        bench = Bench(args, work)
        for c in ("gc", "check"):
            if not bench.has[c]:
                print(f"note: this ocicache has no `{c}` command: not timed")
        print(f"cpus: {os.cpu_count()}  repeat: {args.repeat}  first run = empty "
              f"XDG cache{' + cold page cache' if bench.cold else ' (page cache warm)'}")
        per_scale: dict[int, dict[str, dict[str, float]]] = {}
        for s in scales:
            shape = shape_for(args.blobs * s // top)
            d = ensure_dir(base / f"cache-{shape.blobs}", shape)
            print(f"\n== {s}x: {shape.describe()}")
            find_warm = bench.find(d, cold=False)
            find_first = bench.find(d, cold=True) if bench.cold else find_warm
            sha, total = bench.sha256sum(d)
            row: dict[str, dict[str, float]] = {
                "find": {"first": find_first.median, "repeat": find_warm.median,
                         "spread": find_warm.spread, "rss": find_warm.peak_rss_mib},
                "sha256sum": {"first": sha.median, "repeat": sha.median, "spread": sha.spread,
                              "rss": sha.peak_rss_mib},
            }
            print(f"{'command':<14}{'first':>8}{'x find':>8}{'repeat':>8}{'x find':>8}"
                  f"{'spread':>8}{'peak RSS':>10}")
            print(f"{'find':<14}{fmt(find_first.median)}{'':>8}{fmt(find_warm.median)}{'':>8}"
                  f"{find_warm.spread:7.0%} {find_warm.peak_rss_mib:6.1f} MiB")
            floor_warm, n_heads, n_docs = bench.read_floor(d, cold=False)
            floor_first = bench.read_floor(d, cold=True)[0] if bench.cold else floor_warm
            row["read floor"] = {"first": floor_first.median, "repeat": floor_warm.median,
                                 "spread": floor_warm.spread, "rss": floor_warm.peak_rss_mib}
            print(f"{'read floor':<14}{fmt(floor_first.median)}"
                  f"{floor_first.median / find_first.median:7.1f}x{fmt(floor_warm.median)}"
                  f"{floor_warm.median / find_warm.median:7.1f}x{floor_warm.spread:7.0%} "
                  f"{floor_warm.peak_rss_mib:6.1f} MiB  (head -c 64 of the {n_heads} blobs a "
                  f"first run sniffs + cat of its {n_docs} JSON documents)")
            py = Timing()
            for _ in range(args.repeat):
                t, rss = run([sys.executable, "-c", "pass"], bench.env)
                py.times.append(t)
                py.rss_kib.append(rss)
            row["python -c pass"] = {"first": py.median, "repeat": py.median,
                                     "spread": py.spread, "rss": py.peak_rss_mib}
            print(f"{'python -c pass':<14}{'':>8}{'':>8}{fmt(py.median)}"
                  f"{py.median / find_warm.median:7.1f}x{py.spread:7.0%} "
                  f"{py.peak_rss_mib:6.1f} MiB  (interpreter start, for scale)")
            print(f"{'sha256sum':<14}{fmt(sha.median)}{'':>8}{'':>8}{'':>8}"
                  f"{sha.spread:7.0%} {sha.peak_rss_mib:6.1f} MiB  ({total / 1e6:.1f} MB)")
            for name, cmd, ok, copy in commands(bench.has):
                first, again = bench.ocicache(d, cmd, ok, fresh_copy=copy)
                row[name] = {"first": first.median, "repeat": again.median,
                             "spread": max(first.spread, again.spread),
                             "rss": max(first.peak_rss_mib, again.peak_rss_mib)}
                print(f"{name:<14}{fmt(first.median)}{first.median / find_first.median:7.1f}x"
                      f"{fmt(again.median)}{again.median / find_warm.median:7.1f}x"
                      f"{max(first.spread, again.spread):7.0%} "
                      f"{row[name]['rss']:6.1f} MiB")
            per_scale[s] = row
            scale_results[str(s)] = {"blobs": shape.blobs, "shape": shape.describe(),
                                         "figures": row}
        if len(scales) > 1:
            print("\n== growth (median time at each size / at the smallest; blobs grow "
                  + " / ".join(f"{s // scales[0]}x" for s in scales) + ")")
            names = list(per_scale[scales[0]])
            blobs = [shape_for(args.blobs * s // top).blobs for s in scales]
            for name in names:
                for kind in ("first", "repeat"):
                    if name == "python -c pass" or (name == "sha256sum" and kind == "repeat"):
                        continue
                    ts = [per_scale[s][name][kind] for s in scales]
                    growth = " ".join(f"{t / ts[0]:6.2f}x" for t in ts)
                    # Marginal cost per blob between consecutive sizes (start-up cancels
                    # out): about equal from step to step means linear growth.
                    marginal = " ".join(
                        f"{(ts[k + 1] - ts[k]) / (blobs[k + 1] - blobs[k]) * 1e6:6.2f}"
                        for k in range(len(ts) - 1))
                    print(f"{name + ' ' + kind:<22}{growth}   us/blob: {marginal}")
        if args.hash_mb and bench.has["check"]:
            d = hash_dir(base / f"hash-{args.hash_mb}", args.hash_mb)
            sha, total = bench.sha256sum(d)
            first, _ = bench.ocicache(d, ["check", "{}", "--json"], (0, 1))
            mbps_sha = total / sha.median / 1e6
            mbps_check = total / first.median / 1e6
            print(f"\n== hashing {total / 1e6:.0f} MB of 8 MiB layers: sha256sum "
                  f"{sha.median:.2f} s ({mbps_sha:.0f} MB/s), check {first.median:.2f} s "
                  f"({mbps_check:.0f} MB/s): {mbps_check / mbps_sha:.2f}x sha256sum")
            results["hashing"] = {"bytes": total, "sha256sum_s": sha.median,
                                  "check_s": first.median, "ratio": mbps_check / mbps_sha}
        elif args.hash_mb:
            print("\nnote: no `check` command: hashing throughput not measured")
        largest = per_scale[top]
        print(f"\n== targets at {shape_for(args.blobs).blobs} blobs (the issue's contract)")
        for name in ("history", "du", "gc --dry-run"):
            if name not in largest:
                print(f"{name:<14}not timed")
                continue
            f = largest[name]
            r1 = f["first"] / largest["find"]["first"]
            r_floor = f["first"] / largest["read floor"]["first"]
            r2 = f["repeat"] / largest["find"]["repeat"]
            print(f"{name:<14}first {r1:4.1f}x find (<= 5: {'met' if r1 <= 5 else 'NOT met'})"
                  f"   repeat {r2:4.1f}x find (<= 3: {'met' if r2 <= 3 else 'NOT met'})"
                  f"   peak {f['rss']:5.1f} MiB (< 150: {'met' if f['rss'] < 150 else 'NOT met'})"
                  f"   first {r_floor:4.1f}x read floor")
        floor = largest["read floor"]["first"] / largest["find"]["first"]
        print(f"{'read floor':<14}first {floor:4.1f}x find: reading only what a first run must "
              "read, in C, costs that much before any decoding")
        hashing = results.get("hashing")
        if isinstance(hashing, dict):
            ratio = hashing["ratio"]
            print(f"{'check':<14}hashing {ratio:4.2f}x sha256sum, one process "
                  f"(>= 1.7 on 2 cores: {'met' if ratio >= 1.7 else 'NOT met'}; "
                  f"{os.cpu_count()} cpus here)")
        else:
            print(f"{'check':<14}hashing not measured")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        if work.exists():
            _rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
