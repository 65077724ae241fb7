"""The body of `gc` with the default policy, free of typer (entry.py runs it directly).

Same output as commands/gc.py with no policy option given.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ocicache import api
from ocicache.base.errors import OutputError
from ocicache.base.units import parse_duration_ns
from ocicache.cli import render
from ocicache.cli.gc_report import deleted_lines, gc_json, gc_text
from ocicache.core.gc_plan import Policy
from ocicache.ops.gc_apply import GcResult

if TYPE_CHECKING:
    from ocicache.store.listing import Listing

DEFAULT_GRACE = "1h"  # as commands/gc.py's --grace default


def gc(directory: Path, dry_run: bool, json: bool, no_trunc: bool,
       echo: Callable[[str], None], warn: Callable[[list[str]], None],
       listing: Listing | None = None) -> GcResult:
    policy = Policy(keep_last=0, keep_within_ns=None, keep_refs=(), max_size=None,
                    grace_ns=parse_duration_ns(DEFAULT_GRACE, "--grace"))
    result = api.gc(directory, policy, dry_run=dry_run, listing=listing)
    report(result, directory, json, no_trunc, echo, warn)
    return result


def report(result: GcResult, directory: Path, json: bool, no_trunc: bool,
           echo: Callable[[str], None], warn: Callable[[list[str]], None],
           quiet: bool = False, now: datetime | None = None) -> None:
    """gc's warnings and report (none with `quiet`). When the report of a real gc cannot be
    written (OutputError: stdout closed or full), what was deleted goes to stderr first."""
    if quiet:
        return
    warn(list(result.warnings))
    try:
        echo(render.dumps(gc_json(result, str(directory.absolute()))) if json
             else gc_text(result, now or datetime.now(UTC), no_trunc))
    except OutputError:
        if not result.dry_run:
            from ocicache.cli.output import err

            for line in deleted_lines(result):
                err(line)
        raise
