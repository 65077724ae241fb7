"""`check` and `repair`: verify a cache directory; rebuild a torn or missing index.json."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import typer

from ocicache.base.errors import EXIT_PROBLEMS, UsageError
from ocicache.base.units import MAX_JOBS
from ocicache.cli import output
from ocicache.cli.options import DirArg, InsecureOpt, JsonOpt, NoTruncOpt, StorageOpt, target
from ocicache.cli.textsafe import safe

if TYPE_CHECKING:
    from ocicache.store.hashing import Progress

# Below this many seconds no progress is drawn at all: short runs stay quiet.
_QUIET_FOR = 1.0
# When stderr is not a terminal, one plain line every this many seconds (CI logs).
_LOG_EVERY = 10.0


class ProgressBar:
    """Draws progress (hashing, copying) on stderr: a redrawn bar on a TTY, an occasional line
    otherwise."""

    def __init__(self, tty: bool | None = None, width: int = 24, label: str = "hashing") -> None:
        self.tty = _stderr_is_tty() if tty is None else tty
        self.label = label
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
        from ocicache.cli.render import size

        return (
            f"{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} "
            f"{size(p.done_bytes)} / {size(p.total_bytes)} "
            f"({p.done_blobs}/{p.total_blobs} blobs) {size(int(rate))}/s"
            f"{f', {left:.0f} s left' if left >= 1 else ''}"
        )

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


def check(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    json: bool = JsonOpt,
    quick: bool = typer.Option(False, "--quick", help="Skip re-hashing blobs (sizes and documents only)."),
    deep: bool = typer.Option(
        False,
        "--deep",
        help="A registry: also download and hash every layer (else each blob is HEADed: "
        "existence and size). A directory is hashed unless --quick.",
    ),
    jobs: int = typer.Option(
        0, "--jobs", "-j", min=0, max=MAX_JOBS, help="Hashing threads (default: one per core)."
    ),
    no_trunc: bool = NoTruncOpt,
) -> None:
    """Verify DIR: documents, digests and sizes, missing blobs, leftovers.

    Exit 0 when every export is intact (leftovers are notes), 1 on integrity problems.
    """
    directory = target(directory, insecure, registry_storage)
    from ocicache import api
    from ocicache.cli import render
    from ocicache.store.targets import RegistrySource

    if isinstance(directory, RegistrySource):
        if quick and deep:
            raise UsageError("--quick and --deep: choose one")
        quick = not deep
    bar = ProgressBar()
    started = time.monotonic()
    try:
        result = api.check(directory, quick=quick, workers=jobs or None, progress=bar)
    finally:
        bar.finish()
    elapsed = time.monotonic() - started
    if json:
        output.out(render.dumps(render.check_json(result)))
    else:
        output.out(render.check_text(result, no_trunc))
        if result.hashed and elapsed >= _QUIET_FOR:
            rate = result.hashed_bytes / elapsed
            output.err(
                f"hashed {render.size(result.hashed_bytes)} in {elapsed:.1f} s ({render.size(int(rate))}/s)"
            )
    if not result.ok:
        raise typer.Exit(EXIT_PROBLEMS)


def repair(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    dry_run: bool = typer.Option(
        False, "--dry-run", "-n", help="Print the index.json repair would write; change nothing."
    ),
) -> None:
    """Rebuild a torn, invalid or missing index.json from blobs/ (try --dry-run first).

    Keeps every entry that is still readable and whose manifest is on disk, and adds the
    newest complete cache manifest as `latest` unless a kept entry has that tag. Other tag
    names cannot be recovered: blobs do not record them. Also fixes an index.json that
    names nothing on disk; refuses to write one that would name nothing while blobs/ holds
    blobs.
    """
    directory = target(directory, insecure, registry_storage)
    from ocicache import api
    from ocicache.format.model import ANN_REF_NAME

    plan = api.repair(directory, dry_run=dry_run)
    if not plan.needed:
        output.err(f"{plan.reason}; nothing to repair")
        return
    lines = [f"index.json: {plan.reason}"]
    lines += [
        f"keep    {e['digest']} {(e.get('annotations') or {}).get(ANN_REF_NAME, '(no tag)')}"
        for e in plan.kept
    ]
    if plan.dropped:
        lines.append(
            f"drop    {plan.dropped} readable "
            f"entr{'y' if plan.dropped == 1 else 'ies'} whose manifest is missing"
        )
    if plan.added is not None and plan.added_missing:
        lines.append(
            f"add     {plan.added['digest']} latest (no export is complete: the "
            f"newest importable one, {plan.added_missing} blob(s) missing; "
            "those steps rebuild)"
        )
    elif plan.added is not None:
        lines.append(f"add     {plan.added['digest']} latest (the newest complete cache manifest in blobs/)")
    elif not plan.kept:
        lines.append("no importable cache manifest in blobs/: the index will be empty")
    lines.append("other tags cannot be recovered from blobs/; re-export to restore them")
    lines = [safe(line) for line in lines]
    if dry_run:
        for line in lines:
            output.err(line)
        output.err("dry run: index.json not changed; it would become:")
        output.out(plan.data.decode())
    else:
        for line in lines:
            output.out(line)
        n = len(plan.kept) + (plan.added is not None)
        output.out(f"wrote index.json ({n} entr{'y' if n == 1 else 'ies'})")
