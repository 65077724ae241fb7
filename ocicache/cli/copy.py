"""`copy`: move exports whole between cache stores (directories and registries)."""

from __future__ import annotations

import typer

from ocicache.base.errors import UsageError
from ocicache.cli import output
from ocicache.cli.options import InsecureOpt, JsonOpt, StorageOpt, target
from ocicache.cli.textsafe import safe

SrcArg = typer.Argument(
    ...,
    help="Where the export is: a directory, or a registry (registry://HOST[:PORT]/REPO[:TAG] or "
    "type=registry,ref=HOST/REPO:TAG).",
    show_default=False,
    metavar="SRC",
)
RestArg = typer.Argument(
    ...,
    help="The exports (REF: tag, digest, digest prefix (7+ hex) or ~N; repeatable; default: the "
    "newest export of tag `latest`, else the newest), then DST: a directory (made when missing) "
    "or a registry target.",
    show_default=False,
    metavar="[REF ...] DST",
)


def copy(
    source: str = SrcArg,
    rest: list[str] = RestArg,
    tag: str | None = typer.Option(
        None, "--tag", metavar="NAME", help="The tag the export gets at DST (default: its tags at SRC)."
    ),
    all_: bool = typer.Option(False, "--all", help="Copy every current export (each tag's), with its tags."),
    allow_missing: bool = typer.Option(
        False,
        "--allow-missing",
        help="Copy an export whose layers are missing at SRC without them (those steps then rebuild).",
    ),
    link: bool = typer.Option(
        False, "--link", help="Directory to directory on one filesystem: hard-link blobs instead of copying."
    ),
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    json: bool = JsonOpt,
) -> None:
    """Copy exports whole (manifest, cache config, every layer) from SRC to DST, moving only
    what DST lacks, every byte verified. Prints the --cache-from spec of each at DST."""
    from ocicache import api
    from ocicache.cli import render, render_copy
    from ocicache.cli.check import ProgressBar

    if not rest:
        raise UsageError("missing DST", hint="ocicache copy SRC [REF ...] DST")
    *refs, destination = rest
    src = target(source, insecure, registry_storage)
    dst = target(destination, insecure)
    bar = ProgressBar(label="copying")
    try:
        result = api.copy(
            src,
            dst,
            refs,
            tag=tag,
            all_exports=all_,
            allow_missing=allow_missing,
            link=link,
            progress=bar,
            use_cache=True,
        )
    finally:
        bar.finish()
    output.warn(result.warnings)
    for c in result.exports:
        output.warn([m.message for m in c.missing])
    if json:
        output.out(render.dumps(render_copy.copy_json(result)))
        return
    for c in result.exports:
        output.err(safe(render_copy.summary(c)))
    if len(result.exports) > 1:
        output.err(render_copy.totals_line(result))
    for c in result.exports:
        if c.spec is not None:
            output.out(safe(c.spec))
