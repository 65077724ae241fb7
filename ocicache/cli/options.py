"""What every typer command shares: arguments and options (one definition, one help text), the
clock of tables' relative times."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

DIR_HELP = "The cache directory (--cache-to type=local,dest=DIR)."

# Every argument names its metavar: typer's default prints `{directory}` in the usage line.
DirArg = typer.Argument(..., help=DIR_HELP, show_default=False, metavar="DIR")
JsonOpt = typer.Option(False, "--json", help="Print a versioned JSON document.")
NoTruncOpt = typer.Option(False, "--no-trunc", help="Print full digests.")


def now() -> datetime:
    """The time `now` for relative times in tables (the library takes it as a parameter)."""
    return datetime.now(UTC)
