#!/usr/bin/env python3
"""Time ocicache's command lines on a big BuildKit-shaped cache directory against baselines
measured in the same run, and check them against the issue's targets.

    PYTHONPATH=. python benchmarks/bench.py                 # 50.7k blobs, 5 repetitions
    PYTHONPATH=. python benchmarks/bench.py --quick         # 5k-blob smoke run
    python benchmarks/bench.py --ocicache-cmd "ocicache"    # another ocicache
    PYTHONPATH=. python benchmarks/bench.py --repeat 3 --keep /tmp/ocb --json figures.json

The directory (gen.py) has the issue's shape: 300 exports x 200 layers (100 new per export)
with BuildKit's annotations + 20k orphans = 50,700 blobs of 64-512 bytes; --blobs scales it.
Every figure is a ratio to a baseline timed in the same run, interleaved with what it divides:

- first run (an empty, fresh $XDG_CACHE_HOME each repetition; warm page cache) of every read
  command line <= 8x a warm `find DIR -type f -printf '%s\\n'` timed just before it; the
  repeated run (the same cache home again) <= 3x that `find`;
- peak RSS < 150 MB (10^6 bytes; /usr/bin/time's %M) for every command line, real gc included;
- a real `gc --grace 0`, on a fresh `cp -a` copy each time (copying not timed; in /dev/shm
  unless --copies says otherwise: the shared disk's other writers swamp unlink times), <= 1.25x the
  unlink floor (`find COPY/blobs -type f`, filtered to exactly the files that gc deleted, piped
  to `xargs rm -f`, on another fresh copy) and no slower than `umoci gc --layout COPY`;
- linear: the first run of `history --json` and `gc --dry-run --json` on 4x the blobs
  (50.7k vs 12.75k) <= 5x the time;
- `check` hashing >= 1.7x one `sha256sum` process over the same files (a separate directory of
  8 MiB layers, --hash-mb).

Medians of --repeat repetitions. A command that fails is reported (exit code, stderr's last
line), never a crash; the exit status is 1 if any did.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen import FULL_BLOBS, Shape, generate, generate_big_layers, shape_for  # noqa: E402
from report import Target, mb, pct, ratio, row, secs, targets_table, verdict  # noqa: E402
from runner import RSS_EXACT, Result, Samples, files_under, real_copy, rmtree, run  # noqa: E402

# The read command lines (DIR goes right after the subcommand).
READ_LINES = (
    "history",
    "history --json",
    "show ~5",
    "show ~5 --json",
    "blobs",
    "blobs --json",
    "blobs --unreferenced --json",
    "du",
    "du --json",
    "gc --dry-run",
    "gc --dry-run --json",
    "gc --dry-run --keep-last 3 --grace 0 --json",
    "gc --dry-run --keep-within 1h --max-size 1GB --json",
)
CHECK_LINE = "check --json"  # exit 1 (problems found) is not a failure
GC_LINE = "gc --grace 0"
LINEAR_LINES = ("history --json", "gc --dry-run --json")

FIRST_MAX = 8.0  # x warm find
REPEAT_MAX = 3.0  # x warm find
RSS_MAX_MB = 150.0
GC_FLOOR_MAX = 1.25  # x unlink floor
LINEAR_MAX = 5.0  # time ratio at 4x the blobs
HASH_MIN = 1.7  # x sha256sum throughput
PARTS = ("reads", "linear", "gc", "check", "hash", "floor")  # what --skip can leave out


@dataclass
class Line:
    """A command line's repetitions: the warm `find` timed before each, first and repeated."""

    find: Samples = field(default_factory=Samples)
    first: Samples = field(default_factory=Samples)
    repeat: Samples = field(default_factory=Samples)

    @property
    def failure(self) -> str | None:
        return self.first.failure or self.repeat.failure

    @property
    def first_x(self) -> float:
        return self.first.median / self.find.median

    @property
    def repeat_x(self) -> float:
        return self.repeat.median / self.find.median

    @property
    def peak_mb(self) -> float:
        return max(self.first.peak_mb, self.repeat.peak_mb)

    def as_dict(self) -> dict[str, object]:
        return {
            "find": self.find.as_dict(),
            "first": self.first.as_dict(),
            "repeat": self.repeat.as_dict(),
            "failure": self.failure,
            "first_x_find": _r(self.first_x),
            "repeat_x_find": _r(self.repeat_x),
            "peak_rss_mb": _r(self.peak_mb),
        }


@dataclass
class Gc:
    """Real gc on fresh copies: gc with an empty cache home, gc again with that cache home,
    the unlink floor and umoci, and how many files each deleted."""

    first: Samples = field(default_factory=Samples)
    repeat: Samples = field(default_factory=Samples)
    floor: Samples = field(default_factory=Samples)
    umoci: Samples = field(default_factory=Samples)
    deleted: list[int] = field(default_factory=list)
    umoci_deleted: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "first": self.first.as_dict(),
            "repeat": self.repeat.as_dict(),
            "unlink_floor": self.floor.as_dict(),
            "umoci": self.umoci.as_dict(),
            "files_deleted": self.deleted,
            "umoci_files_deleted": self.umoci_deleted,
            "notes": self.notes,
        }


def _r(x: float) -> float | None:
    return None if x != x else round(x, 3)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measured_env(environ: Mapping[str, str], cmd: list[str], pycache: Path) -> dict[str, str]:
    """The environment every measured ocicache command runs in: as this one's, but
    - PYTHONPATH only for a `... -m ocicache` command (a checkout): an installed console script
      runs its own installed code, not a checkout that PYTHONPATH names;
    - bytecode always written and read, in `pycache` (PYTHONPYCACHEPREFIX), whatever
      PYTHONDONTWRITEBYTECODE says: a run never pays for compiling the modules it imports
      (`warm_up` compiles them once), as an installed package never does;
    - no OCICACHE_NO_CACHE (the repeated runs are what the kept read is for)."""
    env = own_code_env(environ, cmd)
    env.pop("OCICACHE_NO_CACHE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def own_code_env(environ: Mapping[str, str], cmd: list[str]) -> dict[str, str]:
    """`environ`, without PYTHONPATH unless `cmd` is a `... -m ocicache` command (a checkout)."""
    env = dict(environ)
    if ["-m", "ocicache"] not in [list(pair) for pair in itertools.pairwise(cmd)]:
        env.pop("PYTHONPATH", None)
    return env


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.cmd = args.ocicache_cmd
        self.env = measured_env(os.environ, self.cmd, work / "pycache")
        self.timeout = args.timeout
        self.n_xdg = 0
        where = args.copies or default_copies()
        self.copies = (
            work if where is None else Path(tempfile.mkdtemp(prefix="ocicache-bench-copies-", dir=where))
        )

    def run(
        self,
        cmd: list[str],
        env: dict[str, str] | None = None,
        ok: tuple[int, ...] = (0,),
        cwd: Path | None = None,
    ) -> Result:
        return run(cmd, env or self.env, ok, cwd, self.timeout)

    def argv(self, line: str, d: Path) -> list[str]:
        sub, *rest = shlex.split(line)
        return [*self.cmd, sub, str(d), *rest]

    def fresh_xdg(self) -> Path:
        self.n_xdg += 1
        return Path(tempfile.mkdtemp(prefix=f"xdg{self.n_xdg}-", dir=self.work))

    def with_cache(self, xdg: Path) -> dict[str, str]:
        return {**self.env, "XDG_CACHE_HOME": str(xdg)}

    def warm_up(self, d: Path, lines: Iterable[str]) -> None:
        """Each command line once on `d` (and a real gc on a copy of it), not timed: every
        module any of them imports is compiled into the measured environment's bytecode
        folder before the first timed run."""
        xdg = self.fresh_xdg()
        copy = self.copies / "warm-up"
        try:
            for line in lines:
                self.run(self.argv(line, d), self.with_cache(xdg), ok=(0, 1))
            real_copy(d, copy)
            self.run(self.argv(GC_LINE, copy), self.with_cache(xdg))
        finally:
            rmtree(xdg)
            rmtree(copy)

    def find(self, d: Path) -> Result:
        return self.run(["find", str(d), "-type", "f", "-printf", "%s\n"])

    def read_line(self, d: Path, line: str, s: Line, ok: tuple[int, ...] = (0,)) -> None:
        """One repetition: warm `find`, then the first run (fresh cache home), then again."""
        if s.failure:
            return  # failed before: reported, not re-run
        s.find.add(self.find(d))
        xdg = self.fresh_xdg()
        try:
            env = self.with_cache(xdg)
            if s.first.add(self.run(self.argv(line, d), env, ok)):
                s.repeat.add(self.run(self.argv(line, d), env, ok))
        finally:
            rmtree(xdg)

    def gc_rep(self, d: Path, g: Gc, before: set[str]) -> None:
        """One repetition of real gc, its unlink floor and umoci, each on a fresh copy."""
        copy = self.copies / "copy"
        xdg = self.fresh_xdg()
        try:
            env = self.with_cache(xdg)
            deleted: list[str] | None = None
            if not g.first.failure:
                self._copy(d, copy)
                if g.first.add(self.run(self.argv(GC_LINE, copy), env)):
                    gone = before - files_under(copy)
                    deleted = sorted(gone)
                    g.deleted.append(len(gone))
            if deleted is not None and not g.floor.failure:
                listing = self.work / "gc-deleted.txt"
                listing.write_text("".join(p + "\n" for p in deleted))
                self._copy(d, copy)
                # find lists what is there, awk keeps exactly gc's deletions, rm unlinks.
                script = (
                    f"find blobs -type f | awk 'NR == FNR {{ d[$0]; next }} ($0 in d)' "
                    f"{shlex.quote(str(listing))} - | xargs -r -d '\\n' rm -f"
                )
                g.floor.add(self.run(["sh", "-c", script], cwd=copy))
                removed = before - files_under(copy)
                if removed != set(deleted):
                    g.notes.append(f"the unlink floor removed {len(removed)} files, gc {len(deleted)}")
            if g.first.times and not g.repeat.failure:
                self._copy(d, copy)  # the same content again, with the first gc's cache home
                g.repeat.add(self.run(self.argv(GC_LINE, copy), env))
            umoci = shutil.which("umoci")
            if umoci and not g.umoci.failure:
                self._copy(d, copy)
                if g.umoci.add(self.run([umoci, "gc", "--layout", str(copy)])):
                    g.umoci_deleted.append(len(before - files_under(copy)))
        finally:
            rmtree(xdg)
            rmtree(copy)
            os.sync()

    def _copy(self, src: Path, dst: Path) -> None:
        real_copy(src, dst)
        os.sync()  # no writeback of the copy during the timed command


class _Skipped(Exception):
    pass


def read_floor_lists(d: Path) -> tuple[list[str], list[str]]:
    """(blobs sniffed, blobs read whole) by ocicache's reader on DIR with no blob cache, in this
    process (the ocicache that `import ocicache` finds)."""
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


def ensure_dir(path: Path, shape: Shape) -> Path:
    marker = path.parent / f".{path.name}.shape"  # beside DIR: gc and umoci see only DIR
    want = shape.describe()
    if path.exists() and marker.exists() and marker.read_text() == want:
        return path
    rmtree(path)
    progress(f"generating {path}: {want}")
    generate(path, shape)
    marker.write_text(want)
    return path


def ensure_hash_dir(path: Path, megabytes: int) -> Path:
    marker = path.parent / f".{path.name}.shape"
    want = f"one export of {megabytes} MiB in 8 MiB layers"
    if path.exists() and marker.exists() and marker.read_text() == want:
        return path
    rmtree(path)
    progress(f"generating {path}: {want}")
    generate_big_layers(path, megabytes)
    marker.write_text(want)
    return path


def blob_list(d: Path, out: Path) -> int:
    """Write every blob file of DIR, NUL-separated, to `out`; their total size."""
    files = sorted((d / "blobs" / "sha256").iterdir())
    out.write_bytes(b"\0".join(str(f).encode() for f in files))
    return sum(f.stat().st_size for f in files)


def default_copies() -> Path | None:
    """/dev/shm when it is a writable tmpfs with room (gc's copies are small), else None."""
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    if _fs_type(shm) != "tmpfs" or not os.access(shm, os.W_OK) or st.f_bavail * st.f_frsize < 2 << 30:
        return None
    return shm


def default_ocicache_cmd() -> list[str]:
    found = shutil.which("ocicache")
    return [found] if found else [sys.executable, "-m", "ocicache"]


def line_table(title: str, lines: dict[str, Line], targets: bool) -> list[str]:
    out = [
        title,
        row(
            "command line (ocicache SUB DIR ...)",
            f"{'find':>8}",
            f"{'first':>8}",
            f"{'x find':>8}",
            f"{'<=8x':>5}",
            f"{'repeat':>8}",
            f"{'x find':>8}",
            f"{'<=3x':>5}",
            f"{'peak RSS':>11}",
            f"{'<150':>5}",
            f"{'spread':>7}",
        ),
    ]
    for name, s in lines.items():
        if s.failure:
            out.append(row(name, f"  FAILED ({s.failure})"))
            continue
        t = targets and name in READ_LINES
        out.append(
            row(
                name,
                secs(s.find.median),
                secs(s.first.median),
                ratio(s.first_x),
                verdict(s.first_x <= FIRST_MAX) if t else " " * 5,
                secs(s.repeat.median),
                ratio(s.repeat_x),
                verdict(s.repeat_x <= REPEAT_MAX) if t else " " * 5,
                " " + mb(s.peak_mb),
                verdict(s.peak_mb < RSS_MAX_MB),
                " " + pct(max(s.first.spread, s.repeat.spread)),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--blobs", type=int, help=f"blobs in the directory (default {FULL_BLOBS}; 5000 with --quick)"
    )
    p.add_argument("--repeat", type=int, help="repetitions; medians are printed (default 5; 3 with --quick)")
    p.add_argument("--quick", action="store_true", help="a 5k-blob smoke run (64 MiB hashing)")
    p.add_argument(
        "--ocicache-cmd",
        type=shlex.split,
        default=None,
        help="how to run ocicache, e.g. 'python -m ocicache' (PYTHONPATH as set: only a "
        "`-m ocicache` command is given PYTHONPATH, an installed `ocicache` runs its own code); "
        "default: `ocicache` when on PATH, else this Python's -m ocicache",
    )
    p.add_argument(
        "--linear-factor",
        type=int,
        default=4,
        help="the linearity check compares DIR with DIR/FACTOR blobs (0: skip)",
    )
    p.add_argument(
        "--hash-mb",
        type=int,
        help="MiB of 8 MiB layers for the hashing check (default 512; 64 with --quick; 0: skip)",
    )
    p.add_argument(
        "--skip",
        type=lambda v: {x for x in v.split(",") if x},
        default=set(),
        help="comma-separated parts to leave out: " + ",".join(PARTS),
    )
    p.add_argument(
        "--copies",
        type=Path,
        help="where gc's fresh copies go (default: /dev/shm "
        "when it is a tmpfs: a shared disk's other writers make unlink times swing "
        "10x; give e.g. /var/tmp to time gc on disk)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per command run")
    p.add_argument("--keep", type=Path, help="generate into (and reuse) this folder")
    p.add_argument("--json", type=Path, help="also write every figure to this file")
    args = p.parse_args(argv)
    if args.blobs is None:
        args.blobs = 5000 if args.quick else FULL_BLOBS
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.hash_mb is None:
        args.hash_mb = 64 if args.quick else 512
    if args.ocicache_cmd is None:
        args.ocicache_cmd = default_ocicache_cmd()
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.skip - set(PARTS):
        p.error(
            f"--skip: unknown part(s) {','.join(sorted(args.skip - set(PARTS)))}; "
            f"choose from {','.join(PARTS)}"
        )
    if "reads" in args.skip or "linear" in args.skip:  # linear compares read lines
        args.linear_factor = 0
    if "hash" in args.skip:
        args.hash_mb = 0
    args.no_gc = "gc" in args.skip
    args.no_check = "check" in args.skip

    try:
        probe = subprocess.run(  # (the code the measured runs will run)
            [*args.ocicache_cmd, "--version"],
            capture_output=True,
            text=True,
            timeout=120,
            env=own_code_env(os.environ, args.ocicache_cmd),
        )
        problem = (
            ""
            if probe.returncode == 0
            else f"exit {probe.returncode}: {(probe.stderr.strip().splitlines() or [''])[-1]}"
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = str(e)
    if problem:
        print(
            f"cannot run {shlex.join(args.ocicache_cmd)} ({problem}): install ocicache, set "
            "PYTHONPATH to a checkout, or pass --ocicache-cmd",
            file=sys.stderr,
        )
        return 2
    version = probe.stdout.strip()

    work = Path(tempfile.mkdtemp(prefix="ocicache-bench-"))
    base = args.keep or work
    base.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        bench = Bench(args, work)
        R = args.repeat
        shape = shape_for(args.blobs)
        big = ensure_dir(base / f"cache-{shape.blobs}", shape)
        small_shape = shape_for(args.blobs // args.linear_factor) if args.linear_factor > 1 else None
        small = ensure_dir(base / f"cache-{small_shape.blobs}", small_shape) if small_shape else None
        hash_d = ensure_hash_dir(base / f"hash-{args.hash_mb}", args.hash_mb) if args.hash_mb > 0 else None
        umoci = shutil.which("umoci")
        umoci_version = ""
        if umoci:
            umoci_version = subprocess.run(
                [umoci, "--version"], capture_output=True, text=True
            ).stdout.strip()

        header = [
            f"ocicache: {shlex.join(args.ocicache_cmd)} ({version}); "
            f"PYTHONPATH={bench.env.get('PYTHONPATH', '')!r} (bytecode: {bench.env['PYTHONPYCACHEPREFIX']})",
            f"cpus: {os.cpu_count()}  repeat: {R} (medians)  load average at start: "
            f"{_loadavg()}  first run = empty fresh XDG_CACHE_HOME, warm page cache",
            f"umoci: {umoci_version or 'not installed (apt-get install umoci): not compared'}",
        ]
        if not RSS_EXACT:
            header.append("note: no /usr/bin/time: peak RSS from wait4, which may count this process's pages")
        print("\n".join(header), flush=True)

        lines = {} if "reads" in args.skip else {name: Line() for name in READ_LINES}
        if not args.no_check:
            lines[CHECK_LINE] = Line()
        small_lines = {name: Line() for name in LINEAR_LINES} if small else {}
        py, sha_small, floor = Samples(), Samples(), Samples()
        sha_list = work / "blob-files"
        sha_bytes = blob_list(big, sha_list)
        sha_cmd = ["sh", "-c", f"xargs -0 sha256sum < {shlex.quote(str(sha_list))} >/dev/null"]
        floor_script: list[str] | None = None
        floor_counts = (0, 0)
        try:
            if "floor" in args.skip:
                raise _Skipped
            heads, docs = read_floor_lists(big)
            heads_f, docs_f = work / "floor-heads", work / "floor-docs"
            heads_f.write_bytes(b"\0".join(str(big / r).encode() for r in heads))
            docs_f.write_bytes(b"\0".join(str(big / r).encode() for r in docs))
            floor_script = [
                "sh",
                "-c",
                f"xargs -0 head -q -c 64 < {shlex.quote(str(heads_f))} >/dev/null;"
                f" xargs -0 cat < {shlex.quote(str(docs_f))} > /dev/null",
            ]
            floor_counts = (len(heads), len(docs))
        except _Skipped:
            floor.failure = "not measured (--skip floor)"
        except Exception as e:  # an info row only: never stops the benchmark
            floor.failure = f"not measured ({type(e).__name__}: {e})"
        gc = Gc()
        gc_before = files_under(big)
        if not umoci:
            gc.notes.append("umoci is not installed: not compared")
        hash_sha, hash_check = Samples(), Samples()
        hash_bytes = 0
        hash_cmd: list[str] = []
        if hash_d:
            hash_list = work / "hash-files"
            hash_bytes = blob_list(hash_d, hash_list)
            hash_cmd = ["sh", "-c", f"xargs -0 sha256sum < {shlex.quote(str(hash_list))} >/dev/null"]

        progress("warm-up: every command line once, bytecode compiled (not timed)")
        bench.warm_up(small or big, [*lines, CHECK_LINE])
        # Repetition-major: a burst of noise from the shared machine lands on every line
        # alike rather than on one line's repetitions.
        for rep in range(R):
            progress(f"[{rep + 1}/{R}] read command lines at {shape.blobs} blobs")
            for name, s in lines.items():
                if name in small_lines:  # the linearity pair, side by side
                    bench.read_line(small, name, small_lines[name])
                bench.read_line(big, name, s, ok=(0, 1) if name == CHECK_LINE else (0,))
            py.add(bench.run([sys.executable, "-c", "pass"]))
            sha_small.add(bench.run(sha_cmd))
            if floor_script:
                floor.add(bench.run(floor_script))
            if not args.no_gc:
                progress(f"[{rep + 1}/{R}] real gc, unlink floor, umoci (fresh copies)")
                bench.gc_rep(big, gc, gc_before)
            if hash_d:
                progress(f"[{rep + 1}/{R}] hashing")
                hash_sha.add(bench.run(hash_cmd))
                xdg = bench.fresh_xdg()
                hash_check.add(bench.run(bench.argv(CHECK_LINE, hash_d), bench.with_cache(xdg), ok=(0, 1)))
                rmtree(xdg)

        # ---- the tables
        find_all = Samples(times=[t for s in lines.values() for t in s.find.times])
        out: list[str] = [""]
        if lines:
            out += line_table(f"== {shape.blobs:,} blobs: {shape.describe()}", lines, True)
        else:
            out.append(f"== {shape.blobs:,} blobs: {shape.describe()}")
        out.append(row("baselines, same run:"))
        out.append(
            row(
                f"  find DIR -type f -printf '%s\\n' (warm, all {len(find_all.times)})",
                secs(find_all.median),
                f"  spread {find_all.spread:.0%}",
            )
        )
        out.append(
            row(
                "  python -c pass (interpreter start)",
                secs(py.median) if not py.failure else f"  FAILED ({py.failure})",
            )
        )
        out.append(
            row(
                f"  sha256sum, one process, every blob ({sha_bytes / 1e6:.1f} MB)",
                secs(sha_small.median) if not sha_small.failure else f"  FAILED ({sha_small.failure})",
            )
        )
        if floor.failure:
            out.append(row("  read floor", f"  {floor.failure}"))
        else:
            out.append(
                row(
                    f"  read floor: head -c 64 x {floor_counts[0]:,}, cat x {floor_counts[1]:,} docs (C)",
                    secs(floor.median),
                    "  (what a first run sniffs and parses)",
                )
            )
        if small:
            out.append("")
            out += line_table(f"== {small_shape.blobs:,} blobs: {small_shape.describe()}", small_lines, False)
            out.append("")
            growth = shape.blobs / small_shape.blobs
            out.append(
                f"== linear: {small_shape.blobs:,} -> {shape.blobs:,} blobs "
                f"({growth:.2f}x), first runs, medians"
            )
            out.append(
                row("", f"{small_shape.blobs:>10,}", f"{shape.blobs:>10,}", f"{'ratio':>8}", f"{'<=5x':>5}")
            )
            sfind = Samples(times=[t for s in small_lines.values() for t in s.find.times])
            bfind = Samples(times=[t for n in LINEAR_LINES for t in lines[n].find.times])
            out.append(
                row(
                    "find DIR -type f (warm)",
                    f"{sfind.median:10.3f}",
                    f"{bfind.median:10.3f}",
                    ratio(bfind.median / sfind.median),
                )
            )
            for name in LINEAR_LINES:
                a, b = small_lines[name], lines[name]
                if a.failure or b.failure:
                    out.append(row(name, f"  FAILED ({a.failure or b.failure})"))
                    continue
                x = b.first.median / a.first.median
                out.append(
                    row(
                        name,
                        f"{a.first.median:10.3f}",
                        f"{b.first.median:10.3f}",
                        ratio(x),
                        verdict(x <= LINEAR_MAX),
                    )
                )
        if not args.no_gc:
            out.append("")
            out += gc_table(gc, shape.blobs, bench.copies)
        if hash_d:
            out.append("")
            if hash_sha.failure or hash_check.failure:
                out.append(f"== hashing: FAILED ({hash_sha.failure or hash_check.failure})")
            else:
                x = hash_sha.median / hash_check.median
                out.append(
                    f"== hashing {hash_bytes / 1e6:.0f} MB of 8 MiB layers: sha256sum (one "
                    f"process) {hash_sha.median:.3f} s = {hash_bytes / hash_sha.median / 1e6:.0f}"
                    f" MB/s; {CHECK_LINE} (first run) {hash_check.median:.3f} s = "
                    f"{hash_bytes / hash_check.median / 1e6:.0f} MB/s: {x:.2f}x sha256sum "
                    f"(>= {HASH_MIN}x:{verdict(x >= HASH_MIN)})"
                )
        targets = evaluate(lines, small_lines, gc, hash_sha, hash_check, args, umoci)
        out.append("")
        out.append(f"== targets at {shape.blobs:,} blobs (load average at end: {_loadavg()})")
        out += targets_table(targets)
        print("\n".join(out), flush=True)

        failed = any(s.failure for s in [*lines.values(), *small_lines.values()]) or any(
            x.failure for x in (gc.first, gc.repeat, gc.floor, gc.umoci, hash_sha, hash_check)
        )
        if args.json:
            results = {
                "ocicache_cmd": args.ocicache_cmd,
                "ocicache_version": version,
                "pythonpath": os.environ.get("PYTHONPATH", ""),
                "cpus": os.cpu_count(),
                "repeat": R,
                "umoci": umoci_version or None,
                "rss_exact": RSS_EXACT,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "sizes": {
                    str(shape.blobs): {
                        "shape": shape.describe(),
                        "lines": {n: s.as_dict() for n, s in lines.items()},
                    },
                },
                "baselines": {
                    "find_all": find_all.as_dict(),
                    "python_pass": py.as_dict(),
                    "sha256sum_blobs": {**sha_small.as_dict(), "bytes": sha_bytes},
                    "read_floor": {**floor.as_dict(), "heads": floor_counts[0], "documents": floor_counts[1]},
                },
                "gc": None if args.no_gc else gc.as_dict(),
                "hashing": None
                if not hash_d
                else {
                    "bytes": hash_bytes,
                    "sha256sum": hash_sha.as_dict(),
                    "check": hash_check.as_dict(),
                    "ratio": _r(hash_sha.median / hash_check.median),
                },
                "targets": [t.as_dict() for t in targets],
            }
            for n in READ_LINES if lines else ():
                s = lines[n]
                results["sizes"][str(shape.blobs)]["lines"][n]["met"] = (
                    None
                    if s.failure
                    else {
                        "first": s.first_x <= FIRST_MAX,
                        "repeat": s.repeat_x <= REPEAT_MAX,
                        "rss": s.peak_mb < RSS_MAX_MB,
                    }
                )
            if small:
                results["sizes"][str(small_shape.blobs)] = {
                    "shape": small_shape.describe(),
                    "lines": {n: s.as_dict() for n, s in small_lines.items()},
                }
                results["linear"] = {
                    n: {
                        "blobs": [small_shape.blobs, shape.blobs],
                        "first_s": [_r(small_lines[n].first.median), _r(lines[n].first.median)],
                        "ratio": _r(lines[n].first.median / small_lines[n].first.median),
                    }
                    for n in LINEAR_LINES
                }
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        rmtree(work)
        if "bench" in locals() and bench.copies != work:
            rmtree(bench.copies)
    return 1 if failed else 0


def gc_table(g: Gc, blobs: int, where: Path) -> list[str]:
    out = [
        f"== real `{GC_LINE}` at {blobs:,} blobs, each run on a fresh `cp -a` copy "
        f"(copying not timed) in {where} ({_fs_type(where)})",
        row(
            "",
            f"{'time':>8}",
            f"{'x floor':>8}",
            f"{'<=1.25':>7}",
            f"{'x umoci':>8}",
            f"{'<=1x':>5}",
            f"{'peak RSS':>11}",
            f"{'<150':>5}",
            f"{'spread':>7}",
        ),
    ]
    n = g.deleted[0] if g.deleted else 0
    if g.floor.failure:
        out.append(row("unlink floor", f"  FAILED ({g.floor.failure})"))
    elif g.floor.times:
        out.append(
            row(
                f"unlink floor: find|awk|xargs rm -f, {n:,} files",
                secs(g.floor.median),
                " " * 28,
                " " + mb(g.floor.peak_mb),
            )
        )
    if g.umoci.failure:
        out.append(row("umoci gc --layout COPY", f"  FAILED ({g.umoci.failure})"))
    elif g.umoci.times:
        un = g.umoci_deleted[0] if g.umoci_deleted else 0
        out.append(
            row(
                f"umoci gc --layout COPY ({un:,} files deleted)",
                secs(g.umoci.median),
                " " * 28,
                " " + mb(g.umoci.peak_mb),
            )
        )
    for label, s in (
        (f"{GC_LINE} (empty cache home)", g.first),
        (f"{GC_LINE} (again: the first gc's cache home)", g.repeat),
    ):
        if s.failure:
            out.append(row(label, f"  FAILED ({s.failure})"))
            continue
        if not s.times:
            continue
        xf = s.median / g.floor.median if g.floor.times else float("nan")
        xu = s.median / g.umoci.median if g.umoci.times else float("nan")
        target = s is g.first
        out.append(
            row(
                label,
                secs(s.median),
                ratio(xf),
                f"{verdict(xf <= GC_FLOOR_MAX) if target and xf == xf else '':>7}",
                ratio(xu),
                f"{verdict(xu <= 1) if target and xu == xu else '':>5}",
                " " + mb(s.peak_mb),
                verdict(s.peak_mb < RSS_MAX_MB),
                " " + pct(s.spread),
            )
        )
    if len(set(g.deleted)) > 1:
        g.notes.append(f"gc deleted different numbers of files across repetitions: {g.deleted}")
    for note in g.notes:
        out.append(f"note: {note}")
    return out


def evaluate(
    lines: dict[str, Line],
    small_lines: dict[str, Line],
    g: Gc,
    hash_sha: Samples,
    hash_check: Samples,
    args: argparse.Namespace,
    umoci: str | None,
) -> list[Target]:
    t: list[Target] = []
    reads = {n: lines[n] for n in READ_LINES if n in lines}

    def group(name: str, values: dict[str, float | None], ok, fmt) -> None:  # type: ignore[no-untyped-def]
        measured = {n: v for n, v in values.items() if v is not None and v == v}
        if not measured:
            t.append(Target(name, "failed or not measured", None))
            return
        met = [n for n, v in measured.items() if ok(v)]
        worst = max(measured, key=lambda n: measured[n])
        missing = len(values) - len(measured)
        text = (
            f"{fmt(min(measured.values()))}-{fmt(max(measured.values()))}, worst "
            f"`{worst}`; {len(met)}/{len(values)} met" + (f" ({missing} failed)" if missing else "")
        )
        t.append(Target(name, text, len(met) == len(values)))

    group(
        f"first run <= {FIRST_MAX:g}x warm find ({len(reads)} read lines)",
        {n: (None if s.failure else s.first_x) for n, s in reads.items()},
        lambda v: v <= FIRST_MAX,
        lambda v: f"{v:.1f}x",
    )
    group(
        f"repeated run <= {REPEAT_MAX:g}x warm find ({len(reads)} read lines)",
        {n: (None if s.failure else s.repeat_x) for n, s in reads.items()},
        lambda v: v <= REPEAT_MAX,
        lambda v: f"{v:.1f}x",
    )
    rss: dict[str, float | None] = {n: (None if s.failure else s.peak_mb) for n, s in lines.items()}
    if not args.no_gc:
        rss[GC_LINE] = None if g.first.failure else max(g.first.peak_mb, g.repeat.peak_mb)
    group(
        f"peak RSS < {RSS_MAX_MB:g} MB ({len(rss)} command lines"
        f"{', real gc included' if not args.no_gc else ''})",
        rss,
        lambda v: v < RSS_MAX_MB,
        lambda v: f"{v:.0f} MB",
    )
    if not args.no_gc:
        if g.first.times and g.floor.times:
            x = g.first.median / g.floor.median
            t.append(
                Target(
                    f"real {GC_LINE} <= {GC_FLOOR_MAX:g}x unlink floor",
                    f"{x:.2f}x ({g.first.median:.2f} s vs {g.floor.median:.2f} s)",
                    x <= GC_FLOOR_MAX,
                )
            )
        else:
            t.append(Target(f"real {GC_LINE} <= {GC_FLOOR_MAX:g}x unlink floor", "failed", None))
        if not umoci:
            t.append(Target(f"real {GC_LINE} <= umoci gc", "umoci not installed", None))
        elif g.first.times and g.umoci.times:
            x = g.first.median / g.umoci.median
            t.append(
                Target(
                    f"real {GC_LINE} <= umoci gc",
                    f"{x:.2f}x ({g.first.median:.2f} s vs {g.umoci.median:.2f} s)",
                    x <= 1.0,
                )
            )
        else:
            t.append(Target(f"real {GC_LINE} <= umoci gc", "failed", None))
    for name in LINEAR_LINES:
        label = f"linear: {name} first run, {args.linear_factor}x blobs <= {LINEAR_MAX:g}x"
        if not small_lines:
            continue
        a, b = small_lines[name], lines[name]
        if a.failure or b.failure or not a.first.times or not b.first.times:
            t.append(Target(label, "failed", None))
            continue
        x = b.first.median / a.first.median
        t.append(
            Target(label, f"{x:.2f}x ({a.first.median:.2f} s -> {b.first.median:.2f} s)", x <= LINEAR_MAX)
        )
    if args.hash_mb > 0:
        label = f"check hashing >= {HASH_MIN:g}x sha256sum (one process)"
        if hash_sha.times and hash_check.times:
            x = hash_sha.median / hash_check.median
            t.append(
                Target(
                    label, f"{x:.2f}x ({hash_check.median:.2f} s vs {hash_sha.median:.2f} s)", x >= HASH_MIN
                )
            )
        else:
            t.append(Target(label, "failed", None))
    return t


def _fs_type(path: Path) -> str:
    try:
        return (
            subprocess.run(
                ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True
            ).stdout.strip()
            or "?"
        )
    except OSError:
        return "?"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
