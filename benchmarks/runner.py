"""Running one command for the benchmark: wall time, peak RSS, and failures that do not crash.

Peak RSS comes from `/usr/bin/time -f %M` (GNU time: the command's own ru_maxrss, in KiB). The
rusage `os.wait4` gives for a child forked straight from this Python process is not used when
/usr/bin/time exists: on Linux a vfork()ed child's peak counts the pages of the (bigger)
benchmark process it was started from. Without /usr/bin/time, wait4's figure is used and
`RSS_EXACT` is False (the report says so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
RSS_EXACT = TIME is not None


@dataclass(frozen=True)
class Result:
    """One run: wall seconds, peak RSS (KiB), exit code, and stderr's last line on failure."""

    seconds: float
    rss_kib: int
    rc: int
    ok: bool
    err: str = ""

    def failure(self) -> str:
        if self.rc == -9 and self.err.startswith("timeout"):
            return self.err
        return f"exit {self.rc}: {self.err or '(no stderr)'}"


def run(
    cmd: list[str],
    env: dict[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
    cwd: Path | None = None,
    timeout: float = 600.0,
) -> Result:
    """Run `cmd` (stdout to /dev/null); never raises for the command's own failure."""
    with tempfile.NamedTemporaryFile("r", prefix="rss-") as rss_file:
        wrapped = [TIME, "-q", "-f", "%M", "-o", rss_file.name, *cmd] if TIME else cmd
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(
                wrapped,
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            return Result(0.0, 0, 127, False, f"cannot start {cmd[0]}: {e}")
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stderr is not None
            err = proc.stderr.read()  # stdout is /dev/null: nothing else can fill up
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            proc.stderr.close()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        if TIME:
            words = rss_file.read().split()
            rss = int(words[-1]) if words and words[-1].isdigit() else 0
        else:
            rss = usage.ru_maxrss
    if timed_out.is_set():
        return Result(elapsed, 0, -9, False, f"timeout after {timeout:.0f} s")
    rc = proc.returncode
    lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
    return Result(elapsed, rss, rc, rc in ok, lines[-1].strip()[:300] if lines else "")


@dataclass
class Samples:
    """Repetitions of one thing: wall times (s), peak RSS (KiB), the first failure if any."""

    times: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    failure: str | None = None

    def add(self, r: Result) -> bool:
        """Record `r`; False (and the failure kept) if it failed."""
        if not r.ok:
            if self.failure is None:
                self.failure = r.failure()
            return False
        self.times.append(r.seconds)
        self.rss_kib.append(r.rss_kib)
        return True

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
    def peak_mb(self) -> float:
        """Peak RSS over the repetitions, MB (10^6 bytes)."""
        return max(self.rss_kib) * 1024 / 1e6 if self.rss_kib else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "times_s": [round(t, 4) for t in self.times],
            "median_s": _num(self.median),
            "spread": round(self.spread, 3),
            "rss_kib": self.rss_kib,
            "peak_rss_mb": _num(self.peak_mb),
            "failure": self.failure,
        }


def _num(x: float) -> float | None:
    return None if x != x else round(x, 4)


def rmtree(path: Path) -> None:
    """Remove a tree whose folders may be read-only (blobs are 0444, folders may be too)."""
    if not path.exists():
        return
    for root, dirs, _ in os.walk(path):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, name), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def real_copy(src: Path, dst: Path) -> None:
    """A real copy (`cp -a`: new inodes, mtimes and modes kept; no hard links, which would
    change what gc sees: a link count of 2, and the original losing nothing)."""
    rmtree(dst)
    subprocess.run(["cp", "-a", "--reflink=never", str(src), str(dst)], check=True)


def files_under(root: Path) -> set[str]:
    """Every non-directory under root, as paths relative to it."""
    out = set()
    for dirpath, _, names in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for n in names:
            out.add(n if rel == "." else f"{rel}/{n}")
    return out
