"""The body of `gc` with the default policy, free of typer (entry.py runs it directly).

Same output as commands/gc.py with no policy option given.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ocicache import api, render
from ocicache.gc_apply import GcResult
from ocicache.gc_plan import Policy
from ocicache.gc_report import gc_json, gc_text
from ocicache.units import parse_duration_ns

if TYPE_CHECKING:
    from ocicache.listing import Listing

DEFAULT_GRACE = "1h"  # as commands/gc.py's --grace default


def gc(directory: Path, dry_run: bool, json: bool, no_trunc: bool,
       echo: Callable[[str], None], warn: Callable[[list[str]], None],
       listing: Listing | None = None) -> GcResult:
    policy = Policy(keep_last=0, keep_within_ns=None, keep_refs=(), max_size=None,
                    grace_ns=parse_duration_ns(DEFAULT_GRACE, "--grace"))
    result = api.gc(directory, policy, dry_run=dry_run, listing=listing)
    warn(list(result.warnings))
    echo(render.dumps(gc_json(result, str(directory.absolute()))) if json
         else gc_text(result, datetime.now(UTC), no_trunc))
    return result
