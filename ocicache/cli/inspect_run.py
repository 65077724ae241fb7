"""The bodies of `history`, `show`, `blobs`, `du`, free of typer so that they can start fast.

`commands/inspect.py` declares them to typer; `entry.py` runs them directly for the plain
command lines (most runs), skipping the ~0.2 s it takes to import typer (and what it pulls in).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ocicache import api
from ocicache.cli import render

if TYPE_CHECKING:
    from ocicache.store.listing import Listing

Echo = Callable[[str], None]
Warn = Callable[[list[str]], None]
Clock = Callable[[], datetime]


def now() -> datetime:
    """The time `now` for relative times in tables (the library takes it as a parameter)."""
    return datetime.now(UTC)


def history(directory: Path, json: bool, no_trunc: bool, echo: Echo, warn: Warn,
            clock: Clock | None = None, listing: Listing | None = None,
            show_all: bool = False) -> None:
    snap = api.history(directory, listing)
    warn(snap.warnings)
    echo(render.dumps(render.history_json(snap)) if json
         else render.history_table(snap, (clock or now)(), no_trunc, show_all))


def show(directory: Path, ref: str, json: bool, no_trunc: bool, echo: Echo, warn: Warn,
         clock: Clock | None = None, listing: Listing | None = None) -> None:
    result = api.show(directory, ref, listing)
    warn(result.snapshot.warnings)
    echo(render.dumps(render.show_json(result)) if json
         else render.show_text(result, (clock or now)(), no_trunc))


def blobs(directory: Path, json: bool, no_trunc: bool, unreferenced: bool, echo: Echo,
          warn: Warn, clock: Clock | None = None, listing: Listing | None = None) -> None:
    snap, rows = api.blobs(directory, listing)
    if unreferenced:
        rows = [r for r in rows if not r.exports and not r.from_index]
    warn(snap.warnings)
    echo(render.dumps(render.blobs_json(snap, rows)) if json
         else render.blobs_table(snap, rows, (clock or now)(), no_trunc))


def du(directory: Path, json: bool, echo: Echo, warn: Warn,
       listing: Listing | None = None, apparent: bool = False) -> None:
    snap, usage = api.du(directory, listing)
    warn(snap.warnings)
    echo(render.dumps(render.du_json(snap, usage)) if json
         else render.du_table(snap, usage, apparent))
