"""The typer app: global options, command registration, and the one error boundary."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import typer

from ocicache import __version__
from ocicache.base.errors import EXIT_USAGE, UsageError
from ocicache.cli import output
from ocicache.cli.output import EXIT_INTERNAL

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
        output.out(f"ocicache {__version__}")
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
    """Warnings go to stderr (one escaped line each); stdout carries data only."""
    output.warn(lines)


def echo(text: str) -> None:
    """Data to stdout; an unwritable stdout is an OutputError (exit 8)."""
    output.out(text)


def err(text: str) -> None:
    """A message line to stderr (best effort)."""
    output.err(text)


def _register() -> None:
    # One module per command family; each adds its commands to `app`.
    from ocicache.cli import check, diff, gc, inspect, pin

    inspect.register(app)
    gc.register(app)
    pin.register(app)
    check.register(app)
    diff.register(app)


_register()


def _click_errors() -> tuple[type[Exception], type[Exception], Any]:
    """click's UsageError, ClickException and NoArgsIsHelpError (or None), wherever this typer
    keeps click (vendored by recent typer, a dependency before): found from typer's own
    BadParameter, the one public subclass."""
    mro = typer.BadParameter.__mro__
    usage = next(c for c in mro if c.__name__ == "UsageError")
    base = next(c for c in mro if c.__name__ == "ClickException")
    no_args = getattr(sys.modules[usage.__module__], "NoArgsIsHelpError", None)
    return usage, base, no_args


def _plain_usage(group: Any) -> None:
    """Usage lines as Unix tools write them: `ocicache gc [OPTIONS] DIR`, `[REF]` when
    optional (typer writes a required argument as `{DIR}`)."""
    for command in [group, *getattr(group, "commands", {}).values()]:
        for param in command.params:
            if param.param_type_name == "argument":
                name = param.metavar or param.name.upper()
                piece = name if param.required else f"[{name}]"
                param.get_usage_pieces = lambda ctx, piece=piece: [piece]


def _run_app() -> None:
    """The typer app, with click's own error handling (its "Usage: ... Error: ..." block, exit
    codes) replaced by ours: a usage error is `ocicache: error: ...`, exit 2."""
    usage_error, click_error, no_args = _click_errors()
    command = typer.main.get_command(app)
    _plain_usage(command)
    stdout = sys.stdout
    try:
        # What click prints itself (--help) fails as our own output does (stdout closed: None).
        sys.stdout = output.GuardedStdout(stdout)
        with command.make_context("ocicache", sys.argv[1:]) as ctx:
            command.invoke(ctx)
    except typer.Exit as e:
        if e.exit_code:
            sys.exit(e.exit_code)
    except typer.Abort:
        raise KeyboardInterrupt from None
    except usage_error as e:
        if no_args is not None and isinstance(e, no_args):
            output.err(e.format_message())
            sys.exit(EXIT_USAGE)  # `ocicache` alone: the help, on stderr, exit 2
        ctx_ = getattr(e, "ctx", None)
        where = ctx_.command_path if ctx_ is not None else "ocicache"
        raise UsageError(e.format_message(),  # type: ignore[attr-defined]
                         hint=f"`{where} --help` shows the usage") from None
    except click_error as e:
        raise UsageError(e.format_message()) from None  # type: ignore[attr-defined]
    finally:
        sys.stdout = stdout


def main() -> None:
    """Console entry point: run the app; every error is one line and a documented exit code."""
    output.guard_fds()
    output.run(_run_app, lambda: _state["debug"])


__all__ = ["EXIT_INTERNAL", "EXIT_USAGE", "app", "echo", "err", "main", "now", "warn"]
