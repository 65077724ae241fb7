"""The typer app: global options, command registration, and the one error boundary."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import typer

from ocicache import __version__
from ocicache.errors import EXIT_USAGE, OcicacheError

EXIT_INTERNAL = 70  # a bug in ocicache (EX_SOFTWARE); rerun with --debug for the traceback

app = typer.Typer(
    name="ocicache",
    help="Inspect, garbage-collect, pin and check BuildKit type=local cache directories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ocicache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """ocicache: see what a BuildKit local cache holds, reclaim space, pin and check it."""
    _state["debug"] = debug


def now() -> datetime:
    """The time `now` for relative times in tables (the library takes it as a parameter)."""
    return datetime.now(UTC)


def warn(lines: list[str]) -> None:
    """Warnings go to stderr; stdout carries data only."""
    for line in lines:
        typer.echo(f"ocicache: warning: {line}", err=True)


def echo(text: str) -> None:
    typer.echo(text)


def _register() -> None:
    # One module per command family; each adds its commands to `app`.
    from ocicache.commands import check, diff, gc, inspect, pin

    inspect.register(app)
    gc.register(app)
    pin.register(app)
    check.register(app)
    diff.register(app)


_register()


def main() -> None:
    """Console entry point: run the app, turning OcicacheError into one line and an exit code."""
    try:
        app()
    except OcicacheError as e:
        if _state["debug"]:
            raise
        typer.echo(f"ocicache: error: {e}", err=True)
        if e.hint:
            typer.echo(f"hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("ocicache: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:
        if _state["debug"]:
            raise
        typer.echo(f"ocicache: internal error: {type(e).__name__}: {e} (rerun with --debug)",
                   err=True)
        sys.exit(EXIT_INTERNAL)


__all__ = ["EXIT_USAGE", "app", "echo", "main", "now", "warn"]
