"""`history`, `show`, `blobs`, `du`: the read-only inspection commands.

Each takes the listing of DIR (listing.py: begun before typer loaded, or as soon as typer parsed
DIR), then loads the modules that read DIR while the listing's child stats it on the other core.
The CLI keeps the read between runs (`use_cache=True`: store/cache.py; OCICACHE_NO_CACHE=1
turns it off).
"""

from __future__ import annotations

import typer

from ocicache.cli import output
from ocicache.cli.options import DirArg, InsecureOpt, JsonOpt, NoTruncOpt, StorageOpt, now, target
from ocicache.store.listing import begin


def history(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    json: bool = JsonOpt,
    no_trunc: bool = NoTruncOpt,
    show_all: bool = typer.Option(
        False, "--all", help="Also list index.json's foreign entries (images, artifacts: not cache exports)."
    ),
) -> None:
    """Every export in DIR, newest first: the current one of each tag and every older one."""
    directory = target(directory, insecure, registry_storage)
    with begin(directory) as listing:
        from ocicache import api
        from ocicache.cli import render

        snap = api.history(directory, listing, use_cache=True)
    output.warn(snap.warnings)
    output.out(
        render.dumps(render.history_json(snap))
        if json
        else render.history_table(snap, now(), no_trunc, show_all)
    )


def show(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    ref: str | None = typer.Argument(
        None,
        help="Tag, digest, digest prefix (7+ hex) or ~N; default: ~0 (a registry target: its TAG).",
        metavar="REF",
        show_default=False,
    ),
    json: bool = JsonOpt,
    no_trunc: bool = NoTruncOpt,
) -> None:
    """One export: its layers in stack order, with sizes, times, diffIDs and origins."""
    directory = target(directory, insecure, registry_storage)
    with begin(directory) as listing:
        from ocicache import api
        from ocicache.cli import render

        result = api.show(directory, ref, listing, use_cache=True)
    output.warn(result.snapshot.warnings)
    output.out(render.dumps(render.show_json(result)) if json else render.show_text(result, now(), no_trunc))


def blobs(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    json: bool = JsonOpt,
    no_trunc: bool = NoTruncOpt,
    unreferenced: bool = typer.Option(False, "--unreferenced", help="Only blobs no export references."),
) -> None:
    """Every blob: size, kind, how many exports reference it; unreferenced ones marked."""
    directory = target(directory, insecure, registry_storage)
    with begin(directory) as listing:
        from ocicache import api
        from ocicache.cli import render

        snap, rows = api.blobs(directory, listing, use_cache=True)
    if unreferenced:
        rows = [r for r in rows if not r.exports and not r.from_index]
    output.warn(snap.warnings)
    output.out(
        render.dumps(render.blobs_json(snap, rows))
        if json
        else render.blobs_table(snap, rows, now(), no_trunc)
    )


def du(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    json: bool = JsonOpt,
    apparent_size: bool = typer.Option(
        False, "--apparent-size", help="Sizes only (what the files hold), not the blocks they take on disk."
    ),
) -> None:
    """Where the bytes are: index.json's exports, older exports, nothing, ingest/.

    SIZE is what the files hold; ON DISK the blocks they take (a sparse file its real
    blocks, a hard-linked file once), as `du` counts.
    """
    directory = target(directory, insecure, registry_storage)
    with begin(directory) as listing:
        from ocicache import api
        from ocicache.cli import render

        snap, usage = api.du(directory, listing, use_cache=True)
    output.warn(snap.warnings)
    output.out(
        render.dumps(render.du_json(snap, usage)) if json else render.du_table(snap, usage, apparent_size)
    )
