"""The body of `check`, free of typer (entry.py runs plain `check` command lines directly)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from ocicache import api
from ocicache.cli import render
from ocicache.store.hashing import Progress

# Below this many seconds no progress is drawn at all: short runs stay quiet.
_QUIET_FOR = 1.0
# When stderr is not a terminal, one plain line every this many seconds (CI logs).
_LOG_EVERY = 10.0


class ProgressBar:
    """Draws hashing progress on stderr: a redrawn bar on a TTY, an occasional line otherwise."""

    def __init__(self, tty: bool | None = None, width: int = 24) -> None:
        self.tty = _stderr_is_tty() if tty is None else tty
        self.width = width
        self.drawn = False
        self.last_log = 0.0

    def __call__(self, p: Progress) -> None:
        if p.elapsed < _QUIET_FOR:
            return
        if not self.tty:
            if p.elapsed - self.last_log < _LOG_EVERY:
                return
            self.last_log = p.elapsed
        _draw(("\r" if self.tty else "") + self.line(p) + ("" if self.tty else "\n"))
        self.drawn = True

    def line(self, p: Progress) -> str:
        frac = p.done_bytes / p.total_bytes if p.total_bytes else 1.0
        filled = int(frac * self.width)
        rate = p.done_bytes / p.elapsed if p.elapsed > 0 else 0.0
        left = (p.total_bytes - p.done_bytes) / rate if rate > 0 else 0.0
        return (f"hashing [{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} "
                f"{render.size(p.done_bytes)} / {render.size(p.total_bytes)} "
                f"({p.done_blobs}/{p.total_blobs} blobs) {render.size(int(rate))}/s"
                f"{f', {left:.0f} s left' if left >= 1 else ''}")

    def finish(self) -> None:
        if self.drawn and self.tty:
            _draw("\r\x1b[K")


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (OSError, ValueError):
        return False


def _draw(text: str) -> None:
    """Progress on stderr, best effort (a closed or full stderr only loses the bar)."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def check(directory: Path, json: bool, quick: bool, jobs: int, no_trunc: bool,
          echo: Callable[[str], None], err: Callable[[str], None]) -> bool:
    """Run check and print its report; True when DIR is intact (exit 0), else False (exit 1)."""
    bar = ProgressBar()
    started = time.monotonic()
    try:
        result = api.check(directory, quick=quick, workers=jobs or None, progress=bar)
    finally:
        bar.finish()
    elapsed = time.monotonic() - started
    if json:
        echo(render.dumps(render.check_json(result)))
    else:
        echo(render.check_text(result, no_trunc))
        if result.hashed and elapsed >= _QUIET_FOR:
            rate = result.hashed_bytes / elapsed
            err(f"hashed {render.size(result.hashed_bytes)} in {elapsed:.1f} s "
                f"({render.size(int(rate))}/s)")
    return result.ok
