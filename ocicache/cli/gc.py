"""`gc`: reclaim disk space, keeping what index.json references and what the retention rules say."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime
from typing import TYPE_CHECKING

import typer

from ocicache.base.errors import OutputError, UsageError
from ocicache.base.units import MAX_COUNT, parse_duration_ns, parse_size
from ocicache.cli import output
from ocicache.cli.options import DirArg, InsecureOpt, JsonOpt, NoTruncOpt, StorageOpt, names, now, target
from ocicache.store.listing import begin

if TYPE_CHECKING:
    from ocicache.ops.gc_apply import GcResult


def gc(
    directory: str = DirArg,
    insecure: bool = InsecureOpt,
    registry_storage: str | None = StorageOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; change nothing."),
    keep_last: int = typer.Option(
        0, "--keep-last", min=0, max=MAX_COUNT, metavar="N", help="Also keep the N newest older exports."
    ),
    keep_within: str | None = typer.Option(
        None, "--keep-within", metavar="DURATION", help="Also keep exports newer than this (36h, 7d, 90m)."
    ),
    keep: list[str] = typer.Option(  # noqa: B008  (typer's idiom)
        [], "--keep", metavar="REF", help="Also keep this export (tag, digest, prefix, ~N); repeatable."
    ),
    max_size: str | None = typer.Option(
        None,
        "--max-size",
        metavar="SIZE",
        help="Then drop the oldest older exports until DIR fits (5GB, 500MiB).",
    ),
    grace: str = typer.Option(
        "1h",
        "--grace",
        metavar="DURATION",
        help="Never delete a blob younger than this; keep every manifest younger than "
        "this with all it references (0 allowed).",
    ),
    expire_tags: str | None = typer.Option(
        None,
        "--expire-tags",
        metavar="AGE",
        help="Drop every tag whose export is older than AGE (7d, 36h), unless it is a pin or "
        "matches --keep-tag: its index.json entry (a registry: the tag). Its export then "
        "counts as older.",
    ),
    keep_tag: list[str] = typer.Option(  # noqa: B008  (typer's idiom)
        [],
        "--keep-tag",
        metavar="GLOB",
        help="A tag --expire-tags never drops (main, release-*); repeatable.",
    ),
    all_: bool = typer.Option(
        False,
        "--all",
        help="index.json names nothing on disk (no entries, or only missing manifests): "
        "delete everything it does not name anyway (else gc refuses).",
    ),
    json: bool = JsonOpt,
    no_trunc: bool = NoTruncOpt,
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="Print nothing but errors: no report, no warnings (the exit code says how it went).",
    ),
) -> None:
    """Delete what no kept export needs: older exports, unreferenced blobs, stale ingest/."""
    directory = target(directory, insecure, registry_storage)
    if quiet and json:
        raise UsageError("--quiet and --json: choose one")
    keep_within_ns = None if keep_within is None else parse_duration_ns(keep_within, "--keep-within")
    size_limit = None if max_size is None else parse_size(max_size, "--max-size")
    grace_ns = parse_duration_ns(grace, "--grace")
    expire_ns = None if expire_tags is None else parse_duration_ns(expire_tags, "--expire-tags")
    if keep_tag and expire_ns is None:
        raise UsageError("--keep-tag goes with --expire-tags")
    # Only a dry run takes the listing (a real gc stats every blob itself, under its rules).
    with begin(directory) if dry_run else nullcontext() as listing:
        from ocicache import api
        from ocicache.core.gc_plan import Policy

        policy = Policy(
            keep_last=keep_last,
            keep_within_ns=keep_within_ns,
            keep_refs=tuple(keep),
            max_size=size_limit,
            grace_ns=grace_ns,
            allow_empty_index=all_,
            expire_tags_ns=expire_ns,
            keep_tags=tuple(keep_tag),
        )
        result = api.gc(directory, policy, dry_run=dry_run, listing=listing, use_cache=True)
    report(result, directory, json, no_trunc, quiet, now())


def report(
    result: GcResult, directory: object, json: bool, no_trunc: bool, quiet: bool, when: datetime
) -> None:
    """gc's warnings and report (none with `quiet`). When the report of a real gc cannot be
    written (OutputError: stdout closed or full), what was deleted goes to stderr first."""
    if quiet:
        return
    from ocicache.cli import render
    from ocicache.cli.gc_report import deleted_lines, gc_json, gc_text

    output.warn(list(result.warnings))
    try:
        output.out(
            render.dumps(gc_json(result, *names(directory))) if json else gc_text(result, when, no_trunc)
        )
    except OutputError:
        if not result.dry_run:
            for line in deleted_lines(result):
                output.err(line)
        raise
