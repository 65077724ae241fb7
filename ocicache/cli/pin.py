"""`ref`, `pin`, `unpin`: cache-from specs for any export, and pins that gc and reset keep."""

from __future__ import annotations

import typer

from ocicache.base.errors import EXIT_WONT_IMPORT, UsageError
from ocicache.cli import output
from ocicache.cli.options import DIR_HELP, DirArg, InsecureOpt, JsonOpt, StorageOpt, names, target
from ocicache.cli.textsafe import safe
from ocicache.core import spec as spec_mod

_FORMATS = ", ".join(spec_mod.FORMATS)
OptDirArg = typer.Argument(
    None, help=DIR_HELP + " Not needed with --explain.", show_default=False, metavar="DIR"
)
OptRefArg = typer.Argument(
    None,
    help="Tag, pin, digest, digest prefix (7+ hex) or ~N; default: "
    "the newest export of tag `latest`, else the newest.",
    show_default=False,
    metavar="REF",
)
RefArg = typer.Argument(
    ..., help="The export: tag, digest, digest prefix (7+ hex) or ~N.", show_default=False, metavar="REF"
)
NameArg = typer.Argument(
    ..., help="The ref name to register (OCI ref-name grammar).", show_default=False, metavar="NAME"
)
PinNameArg = typer.Argument(..., help="The pin to remove.", show_default=False, metavar="NAME")


def ref(
    directory: str | None = OptDirArg,
    ref: str | None = OptRefArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    fmt: str = typer.Option("bare", "--format", "-f", help=f"One of: {_FORMATS}."),
    all_: bool = typer.Option(False, "--all", help="One spec per export, newest first."),
    explain: str | None = typer.Option(
        None,
        "--explain",
        metavar="SPEC",
        help="Say what BuildKit does with a --cache-from value you have, and correct it.",
    ),
    json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """Print the --cache-from spec that imports an export (type=local,src=DIR,digest=...)."""
    from ocicache import api
    from ocicache.cli import render, render_pin

    if json:
        fmt = "json"
    if fmt not in spec_mod.FORMATS:
        raise UsageError(f"--format {fmt!r}: one of {_FORMATS}")
    if explain is not None:
        if ref is not None or all_:
            raise UsageError("--explain takes a SPEC and at most DIR (used when SPEC has no src)")
        x = api.explain(explain, directory, use_cache=True)
        if fmt == "json":
            output.out(render.dumps(render_pin.explain_json(x)))
        else:
            output.out(render_pin.explain_text(x, fmt))
        if not x.works:
            raise typer.Exit(EXIT_WONT_IMPORT)
        return
    if directory is None:
        raise UsageError("missing DIR", hint="ocicache ref DIR [REF]")
    directory = target(directory, insecure, registry_storage)
    if all_:
        if ref is not None:
            raise UsageError("--all takes no REF")
        snap, results = api.ref_all(directory, use_cache=True)
        output.warn(snap.warnings)
        if fmt == "json":
            output.out(render.dumps(render_pin.refs_json(snap, results)))
            return
        for r in results:
            if r.spec is None:
                output.warn([f"~{r.position} {r.export.digest}: not importable: {r.readiness.refusal}"])
                continue
            output.warn([f"~{r.position} {r.export.digest[:19]}: {w}" for w in r.warnings])
            output.out(safe(spec_mod.render(r.spec, fmt)))
        return
    snap, result = api.ref(directory, ref, use_cache=True)
    output.warn(snap.warnings)
    output.warn(result.warnings)
    assert result.spec is not None
    if fmt == "json":
        output.out(render.dumps(render_pin.ref_json(snap, result)))
    else:
        output.out(safe(spec_mod.render(result.spec, fmt)))


def pin(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    ref: str = RefArg,
    name: str = NameArg,
    force: bool = typer.Option(
        False,
        "--force",
        help="Move NAME when it already pins another export, or "
        "replace an entry of that name BuildKit wrote.",
    ),
    fmt: str = typer.Option("bare", "--format", "-f", help=f"One of: {_FORMATS}."),
    json: bool = JsonOpt,
) -> None:
    """Register an export in index.json under NAME: cache-from tag=NAME works, gc and
    BuildKit's reset=true keep it (a registry: push tag NAME onto its manifest). Prints the
    tag spec."""
    directory = target(directory, insecure, registry_storage)
    from ocicache import api
    from ocicache.cli import render, render_pin

    if fmt not in spec_mod.FORMATS:
        raise UsageError(f"--format {fmt!r}: one of {_FORMATS}")
    result, spec = api.pin(directory, ref, name, force=force, use_cache=True)
    output.warn(
        [
            f"moved {name} from {old} to {result.export.digest}"
            for old in dict.fromkeys(result.replaced)
            if old != result.export.digest
        ]
    )
    output.warn(spec.warnings)
    root = spec.src
    if json or fmt == "json":
        local = names(directory)[0] is not None
        digest_spec = api.import_spec(directory, None, digest=result.export.digest)
        output.out(render.dumps(render_pin.pin_json(root, result, spec, digest_spec, local)))
        return
    assert spec.spec is not None
    if not result.changed:
        output.warn([f"{name} already pins {result.export.digest[:19]}; nothing changed"])
    output.out(safe(spec_mod.render(spec.spec, fmt)))


def unpin(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    name: str = PinNameArg,
    force: bool = typer.Option(False, "--force", help="Also remove an entry BuildKit wrote (a tag)."),
    json: bool = JsonOpt,
) -> None:
    """Remove the pin NAME from index.json (a registry: the tag NAME, never the manifest); gc
    may then delete that export."""
    directory = target(directory, insecure, registry_storage)
    from ocicache import api
    from ocicache.cli import render, render_pin

    result = api.unpin(directory, name, force=force)
    directory_name, root = names(directory)
    if json:
        output.out(render.dumps(render_pin.unpin_json(root, result, directory_name is not None)))
        return
    for digest, was_pin in result.removed:
        output.out(safe(f"unpinned {name} {digest}" if was_pin else f"removed tag {name} {digest}"))
