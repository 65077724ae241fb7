"""Run the ocicache CLI in tests: in-process (fast, an alarm against hangs) or as a subprocess."""

from __future__ import annotations

import gc
import io
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Every exit code the README documents; 70 (internal error) is deliberately not among them.
DOCUMENTED = {0, 1, 2, 3, 4, 5, 6, 7, 8}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


class Hang(Exception):
    pass


@contextmanager
def _alarm(seconds: int) -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Hang(f"command did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_inprocess(*args: str, timeout: int = 30) -> Run:
    """`ocicache ARGS` through app.main (the console script: the real error boundary), stdout
    and stderr captured."""
    from ocicache.cli import app as cli

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["ocicache", *args]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err), _alarm(timeout):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
        cli._state["debug"] = False
        gc.enable()  # main turns the cyclic GC off for its short-lived process
    return Run(code, out.getvalue(), err.getvalue())


def json_of(*args: str, code: int = 0) -> dict[str, Any]:
    """`ocicache ARGS --json` in-process: its document, once the exit code is `code`."""
    r = run_inprocess(*args, "--json")
    assert r.code == code, r.err
    doc: dict[str, Any] = json.loads(r.out)
    return doc


def run_subprocess(*args: str, timeout: float = 60, prefix: tuple[str, ...] = ()) -> Run:
    """`python -m ocicache ARGS` in a child process; a hang fails the test after `timeout`."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [*prefix, sys.executable, "-m", "ocicache", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )
    return Run(p.returncode, p.stdout, p.stderr)


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """(mode, size, mtime_ns) of every entry below root, symlinks not followed."""
    out: dict[str, tuple[int, int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            out[str(p.relative_to(root))] = (st.st_mode, size, st.st_mtime_ns)
    st = root.lstat()
    out["."] = (st.st_mode, 0, st.st_mtime_ns)
    return out
