"""`gc`: reclaim disk space, keeping what index.json references and what the retention rules say."""

from __future__ import annotations

from pathlib import Path

import typer

from ocicache import api
from ocicache.base.errors import UsageError
from ocicache.base.units import MAX_COUNT, parse_duration_ns, parse_size
from ocicache.cli import gc_run
from ocicache.cli.options import DirArg, JsonOpt, NoTruncOpt
from ocicache.core.gc_plan import Policy


def register(app: typer.Typer) -> None:
    from ocicache.cli.app import echo, now, warn

    @app.command()
    def gc(
        directory: Path = DirArg,
        dry_run: bool = typer.Option(False, "--dry-run",
                                     help="Print the plan; change nothing."),
        keep_last: int = typer.Option(0, "--keep-last", min=0, max=MAX_COUNT, metavar="N",
                                      help="Also keep the N newest older exports."),
        keep_within: str | None = typer.Option(
            None, "--keep-within", metavar="DURATION",
            help="Also keep exports newer than this (36h, 7d, 90m)."),
        keep: list[str] = typer.Option(  # noqa: B008  (typer's idiom)
            [], "--keep", metavar="REF",
            help="Also keep this export (tag, digest, prefix, ~N); repeatable."),
        max_size: str | None = typer.Option(
            None, "--max-size", metavar="SIZE",
            help="Then drop the oldest older exports until DIR fits (5GB, 500MiB)."),
        grace: str = typer.Option(
            "1h", "--grace", metavar="DURATION",
            help="Never delete a blob younger than this; keep every manifest younger than "
                 "this with all it references (0 allowed)."),
        all_: bool = typer.Option(
            False, "--all",
            help="index.json names nothing on disk (no entries, or only missing manifests): "
                 "delete everything it does not name anyway (else gc refuses)."),
        json: bool = JsonOpt,
        no_trunc: bool = NoTruncOpt,
        quiet: bool = typer.Option(
            False, "--quiet", "-q",
            help="Print nothing but errors: no report, no warnings (the exit code says how it "
                 "went)."),
    ) -> None:
        """Delete what no kept export needs: older exports, unreferenced blobs, stale ingest/."""
        if quiet and json:
            raise UsageError("--quiet and --json: choose one")
        policy = Policy(
            keep_last=keep_last,
            keep_within_ns=None if keep_within is None
            else parse_duration_ns(keep_within, "--keep-within"),
            keep_refs=tuple(keep),
            max_size=None if max_size is None else parse_size(max_size, "--max-size"),
            grace_ns=parse_duration_ns(grace, "--grace"),
            allow_empty_index=all_,
        )
        result = api.gc(directory, policy, dry_run=dry_run)
        gc_run.report(result, directory, json, no_trunc, echo, warn, quiet, now())
