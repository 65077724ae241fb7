"""`check` and `repair`: verify a cache directory; rebuild a torn or missing index.json."""

from __future__ import annotations

from pathlib import Path

import typer

from ocicache import api
from ocicache.base.errors import EXIT_PROBLEMS
from ocicache.base.units import MAX_JOBS
from ocicache.cli import check_run
from ocicache.cli.check_run import ProgressBar
from ocicache.cli.options import DirArg, JsonOpt, NoTruncOpt
from ocicache.cli.textsafe import safe
from ocicache.format.model import ANN_REF_NAME

__all__ = ["ProgressBar", "register"]



def register(app: typer.Typer) -> None:
    from ocicache.cli.app import echo, err

    @app.command()
    def check(directory: Path = DirArg,
              json: bool = JsonOpt,
              quick: bool = typer.Option(False, "--quick",
                                         help="Skip re-hashing blobs (sizes and documents only)."),
              jobs: int = typer.Option(0, "--jobs", "-j", min=0, max=MAX_JOBS,
                                       help="Hashing threads (default: one per core)."),
              no_trunc: bool = NoTruncOpt,
              ) -> None:
        """Verify DIR: documents, digests and sizes, missing blobs, leftovers.

        Exit 0 when every export is intact (leftovers are notes), 1 on integrity problems.
        """
        ok = check_run.check(directory, json, quick, jobs, no_trunc, echo, err)
        if not ok:
            raise typer.Exit(EXIT_PROBLEMS)

    @app.command()
    def repair(directory: Path = DirArg,
               dry_run: bool = typer.Option(False, "--dry-run", "-n",
                                            help="Print the index.json repair would write; "
                                                 "change nothing."),
               ) -> None:
        """Rebuild a torn, invalid or missing index.json from blobs/ (try --dry-run first).

        Keeps every entry that is still readable and whose manifest is on disk, and adds the
        newest complete cache manifest as `latest` unless a kept entry has that tag. Other tag
        names cannot be recovered: blobs do not record them. Also fixes an index.json that
        names nothing on disk; refuses to write one that would name nothing while blobs/ holds
        blobs.
        """
        plan = api.repair(directory, dry_run=dry_run)
        if not plan.needed:
            err(f"{plan.reason}; nothing to repair")
            return
        lines = [f"index.json: {plan.reason}"]
        lines += [f"keep    {e['digest']} "
                  f"{(e.get('annotations') or {}).get(ANN_REF_NAME, '(no tag)')}"
                  for e in plan.kept]
        if plan.dropped:
            lines.append(f"drop    {plan.dropped} readable "
                         f"entr{'y' if plan.dropped == 1 else 'ies'} whose manifest is missing")
        if plan.added is not None and plan.added_missing:
            lines.append(f"add     {plan.added['digest']} latest (no export is complete: the "
                         f"newest importable one, {plan.added_missing} blob(s) missing; "
                         "those steps rebuild)")
        elif plan.added is not None:
            lines.append(f"add     {plan.added['digest']} latest "
                         "(the newest complete cache manifest in blobs/)")
        elif not plan.kept:
            lines.append("no importable cache manifest in blobs/: the index will be empty")
        lines.append("other tags cannot be recovered from blobs/; re-export to restore them")
        lines = [safe(line) for line in lines]
        if dry_run:
            for line in lines:
                err(line)
            err("dry run: index.json not changed; it would become:")
            echo(plan.data.decode())
        else:
            for line in lines:
                echo(line)
            n = len(plan.kept) + (plan.added is not None)
            echo(f"wrote index.json ({n} entr{'y' if n == 1 else 'ies'})")
