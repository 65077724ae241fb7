"""The arguments and options every typer command shares (one definition, one help text)."""

from __future__ import annotations

import typer

DIR_HELP = "The cache directory (--cache-to type=local,dest=DIR)."

# Every argument names its metavar: typer's default prints `{directory}` in the usage line.
DirArg = typer.Argument(..., help=DIR_HELP, show_default=False, metavar="DIR")
JsonOpt = typer.Option(False, "--json", help="Print a versioned JSON document.")
NoTruncOpt = typer.Option(False, "--no-trunc", help="Print full digests.")
