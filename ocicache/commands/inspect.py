"""`history`, `show`, `blobs`, `du`: the read-only inspection commands."""

from __future__ import annotations

from pathlib import Path

import typer

from ocicache import api, render

DirArg = typer.Argument(..., help="The cache directory (--cache-to type=local,dest=DIR).",
                        show_default=False)
JsonOpt = typer.Option(False, "--json", help="Print a versioned JSON document.")
NoTruncOpt = typer.Option(False, "--no-trunc", help="Print full digests.")


def register(app: typer.Typer) -> None:
    from ocicache.cli import echo, now, warn

    @app.command()
    def history(directory: Path = DirArg, json: bool = JsonOpt,
                no_trunc: bool = NoTruncOpt) -> None:
        """Every export in DIR, newest first: the current one of each tag and every older one."""
        snap = api.history(directory)
        warn(snap.warnings)
        echo(render.dumps(render.history_json(snap)) if json
             else render.history_table(snap, now(), no_trunc))

    @app.command()
    def show(directory: Path = DirArg,
             ref: str = typer.Argument("~0", help="Tag, digest, digest prefix (7+ hex) or ~N."),
             json: bool = JsonOpt, no_trunc: bool = NoTruncOpt) -> None:
        """One export: its layers in stack order, with sizes, times, diffIDs and origins."""
        result = api.show(directory, ref)
        warn(result.snapshot.warnings)
        echo(render.dumps(render.show_json(result)) if json
             else render.show_text(result, now(), no_trunc))

    @app.command()
    def blobs(directory: Path = DirArg, json: bool = JsonOpt, no_trunc: bool = NoTruncOpt,
              unreferenced: bool = typer.Option(False, "--unreferenced",
                                                help="Only blobs no export references.")) -> None:
        """Every blob: size, kind, how many exports reference it; unreferenced ones marked."""
        snap, rows = api.blobs(directory)
        if unreferenced:
            rows = [r for r in rows if not r.exports and not r.from_index]
        warn(snap.warnings)
        echo(render.dumps(render.blobs_json(snap, rows)) if json
             else render.blobs_table(snap, rows, now(), no_trunc))

    @app.command()
    def du(directory: Path = DirArg, json: bool = JsonOpt) -> None:
        """Where the bytes are: index.json's exports, older exports, nothing, ingest/."""
        snap, usage = api.du(directory)
        warn(snap.warnings)
        echo(render.dumps(render.du_json(snap, usage)) if json
             else render.du_table(snap, usage))
