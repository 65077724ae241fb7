"""A real BuildKit daemon for tests: found through $OCICACHE_BUILDKIT or ../shared/buildkit.

Tests that use it skip with a clear reason when it is absent or we are not root, so a fresh
clone without shared/ still passes. `bk-up WORKDIR` starts a private daemon (its own --root and
socket); a new WORKDIR is a daemon with an empty build cache, which is how an import is proven.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CACHED = re.compile(r"^#\d+ CACHED$", re.M)


def buildkit_dir() -> Path | None:
    env = os.environ.get("OCICACHE_BUILDKIT")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "buildkit"]:
        if (cand / "bk-up").is_file() and any(cand.glob("buildkit-*.tar.xz")):
            return cand
    return None


def skip_reason() -> str | None:
    if buildkit_dir() is None:
        return "real BuildKit not found ($OCICACHE_BUILDKIT or ../shared/buildkit)"
    if os.geteuid() != 0:
        return "real BuildKit needs root (native snapshotter, runc)"
    if not Path("/bin/busybox").exists() and shutil.which("apt-get") is None:
        return "no /bin/busybox and no apt-get to install busybox-static"
    return None


needs_buildkit = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@dataclass(frozen=True)
class Daemon:
    workdir: Path
    host: str
    buildctl: str

    def build(self, context: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """buildctl build of the Dockerfile in `context` (plain progress, output in .stderr)."""
        return subprocess.run(
            [
                self.buildctl,
                "--addr",
                self.host,
                "build",
                "--frontend",
                "dockerfile.v0",
                "--local",
                f"context={context}",
                "--local",
                f"dockerfile={context}",
                "--progress=plain",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
        )


_BINARIES = ("buildkitd", "buildctl")
_unpacked: list[Path] = []  # the bin/ that bk-up filled first in this run


def _share_binaries(workdir: Path) -> None:
    """bk-up unpacks buildkitd and buildctl into WORKDIR/bin unless they are there (1-3 s of xz
    each time): a later daemon gets hard links to (or copies of) the first one's. What makes a
    daemon fresh is its own empty --root under WORKDIR, not its own copy of the binaries."""
    if not _unpacked or not all((_unpacked[0] / name).is_file() for name in _BINARIES):
        return
    (workdir / "bin").mkdir(parents=True, exist_ok=True)
    for name in _BINARIES:
        src, dest = _unpacked[0] / name, workdir / "bin" / name
        if dest.exists():
            continue
        try:
            os.link(src, dest)
        except OSError:
            shutil.copy2(src, dest)


# Where each daemon's own directory (binaries, socket, --root: content store and snapshots) goes:
# on the disk, not on the tmpfs the tests' temporary directories may be on (conftest.py). On the
# tmpfs BuildKit's plain progress sometimes ends before a `COPY --link` step's final state line
# (test_diff_buildkit's link test failed 5 of 34 runs with everything there; none of 15 with
# everything on the disk, none of 15 with only the daemon's directory there). Removed at exit.
DAEMON_TMP = Path("/var/tmp")
_daemon_dirs: list[Path] = []


def _daemon_dir(workdir: Path) -> Path:
    if not (DAEMON_TMP.is_dir() and os.access(DAEMON_TMP, os.W_OK)):
        return workdir
    if not _daemon_dirs:
        atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _daemon_dirs])
    _daemon_dirs.append(Path(tempfile.mkdtemp(prefix=f"ocicache-bk-{workdir.name}-", dir=DAEMON_TMP)))
    return _daemon_dirs[-1]


@contextmanager
def daemon(workdir: Path) -> Iterator[Daemon]:
    """A fresh private buildkitd (empty build cache) for the duration of the block, in a
    directory of its own (_daemon_dir; `workdir` names it)."""
    bk = buildkit_dir()
    assert bk is not None
    workdir = _daemon_dir(workdir)
    _share_binaries(workdir)
    p = subprocess.run(["bash", str(bk / "bk-up"), str(workdir)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        pytest.skip(f"bk-up failed: {p.stderr.strip()[-300:]}")
    if not _unpacked:
        _unpacked.append(workdir.resolve() / "bin")
    values = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    try:
        yield Daemon(workdir, values["BUILDKIT_HOST"], values["BUILDCTL"])
    finally:
        subprocess.run(["bash", str(bk / "bk-down"), str(workdir)], capture_output=True, timeout=120)


def context(root: Path, variant: str) -> Path:
    """A build context FROM scratch with busybox and 5 steps; `variant` changes step 4's input."""
    ctx = root / f"ctx-{variant}"
    (ctx / "src").mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "src" / "a.txt").write_text(f"content {variant}\n")
    (ctx / "Dockerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        'RUN ["/bin/busybox","--install","-s","/bin"]\n'
        "RUN echo base > /base\n"
        "COPY src/ /app/src/\n"
        "RUN cat /app/src/a.txt > /out && ls / > /listing\n"
    )
    # BuildKit's context sync skips a file whose size and mtime it has already seen: each
    # variant's input gets its own mtime (fixed, so COPY layers are reproducible).
    stamp = 1_767_225_600 + sum(map(ord, variant))
    for p in (ctx / "busybox", ctx / "Dockerfile"):
        os.utime(p, (1_767_225_600, 1_767_225_600))
    for p in (ctx / "src" / "a.txt", ctx / "src"):
        os.utime(p, (stamp, stamp))
    return ctx


STEPS = 5  # COPY, RUN, RUN, COPY, RUN


def cached_steps(log: str) -> int:
    return len(CACHED.findall(log))


def loaded_steps(log: str) -> int:
    """Steps of the Dockerfile ([k/N] vertices) that came from the cache: CACHED, or pulled and
    extracted from the remote cache because the output needs their files (a step that really
    runs has no `extracting` line of its own)."""
    steps = set(re.findall(r"^#(\d+) \[\d+/\d+\]", log, re.M))
    cached = set(re.findall(r"^#(\d+) CACHED$", log, re.M))
    pulled = set(re.findall(r"^#(\d+) extracting sha256:", log, re.M))
    return len(steps & (cached | pulled))
