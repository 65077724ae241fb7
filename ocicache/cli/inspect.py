"""`history`, `show`, `blobs`, `du`: the read-only inspection commands."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import typer

from ocicache.cli import inspect_run as run
from ocicache.cli.options import DirArg, JsonOpt, NoTruncOpt


def register(app: typer.Typer) -> None:
    from ocicache.cli import app as cli
    from ocicache.cli.app import echo, warn

    def clock() -> datetime:
        return cli.now()  # looked up at call time, so tests can replace cli.now

    @app.command()
    def history(directory: Path = DirArg, json: bool = JsonOpt,
                no_trunc: bool = NoTruncOpt,
                show_all: bool = typer.Option(
                    False, "--all", help="Also list index.json's foreign entries (images, "
                                         "artifacts: not cache exports).")) -> None:
        """Every export in DIR, newest first: the current one of each tag and every older one."""
        run.history(directory, json, no_trunc, echo, warn, clock, show_all=show_all)

    @app.command()
    def show(directory: Path = DirArg,
             ref: str = typer.Argument("~0", help="Tag, digest, digest prefix (7+ hex) or ~N.",
                                       metavar="REF"),
             json: bool = JsonOpt, no_trunc: bool = NoTruncOpt) -> None:
        """One export: its layers in stack order, with sizes, times, diffIDs and origins."""
        run.show(directory, ref, json, no_trunc, echo, warn, clock)

    @app.command()
    def blobs(directory: Path = DirArg, json: bool = JsonOpt, no_trunc: bool = NoTruncOpt,
              unreferenced: bool = typer.Option(False, "--unreferenced",
                                                help="Only blobs no export references.")) -> None:
        """Every blob: size, kind, how many exports reference it; unreferenced ones marked."""
        run.blobs(directory, json, no_trunc, unreferenced, echo, warn, clock)

    @app.command()
    def du(directory: Path = DirArg, json: bool = JsonOpt,
           apparent_size: bool = typer.Option(
               False, "--apparent-size",
               help="Sizes only (what the files hold), not the blocks they take on disk.")
           ) -> None:
        """Where the bytes are: index.json's exports, older exports, nothing, ingest/.

        SIZE is what the files hold; ON DISK the blocks they take (a sparse file its real
        blocks, a hard-linked file once), as `du` counts.
        """
        run.du(directory, json, echo, warn, apparent=apparent_size)
