"""`diff`: two exports side by side, step by step: where B's chain of steps left A's."""

from __future__ import annotations

import typer

from ocicache.cli import output
from ocicache.cli.options import DirArg, InsecureOpt, JsonOpt, NoTruncOpt, StorageOpt, now, target
from ocicache.store.listing import begin

_REF = "Tag, digest, digest prefix (7+ hex) or ~N"
AArg = typer.Argument(
    None,
    help=f"{_REF}; default: the export before B on its tag, else the one before it in history.",
    show_default=False,
)
BArg = typer.Argument(None, help=f"{_REF}; default: the newest export.", show_default=False)


def diff(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    a: str | None = AArg,
    b: str | None = BArg,
    json: bool = JsonOpt,
    no_trunc: bool = NoTruncOpt,
) -> None:
    """Why did the cache miss? Two exports' steps side by side: shared, changed, rebuilt, new."""
    directory = target(directory, insecure, registry_storage)
    with begin(directory) as listing:
        from ocicache import api
        from ocicache.cli import render, render_diff

        snap, result = api.diff(directory, a, b, listing, use_cache=True)
    output.warn(snap.warnings)
    output.out(
        render.dumps(render_diff.diff_json(snap.directory, result, snap.warnings, snap.target))
        if json
        else render_diff.diff_text(result, now(), no_trunc)
    )
