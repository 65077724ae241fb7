"""The command line: the typer app (global options, the commands) run inside the one error
boundary (output.py). `main` is the console script and `python -m ocicache`.

The commands are plain functions in check.py, copy.py, diff.py, gc.py, inspect.py and pin.py; they load
what reads DIR only when they run (a read command first begins the listing of DIR, listing.py).
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from ocicache import __version__
from ocicache.base.errors import EXIT_USAGE, UsageError
from ocicache.cli import check, copy, diff, gc, inspect, output, pin
from ocicache.cli.output import EXIT_INTERNAL

app = typer.Typer(
    name="ocicache",
    help="Inspect, garbage-collect, pin, copy and check BuildKit cache stores (directories, registries).",
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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """ocicache: see what a BuildKit local cache holds, reclaim space, pin and check it."""
    _state["debug"] = debug


# In the order `ocicache --help` lists them.
for _command in (
    inspect.history,
    inspect.show,
    inspect.blobs,
    inspect.du,
    gc.gc,
    pin.ref,
    pin.pin,
    pin.unpin,
    copy.copy,
    check.check,
    check.repair,
    diff.diff,
):
    app.command()(_command)


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
        raise UsageError(
            _bounded(e.format_message()),  # type: ignore[attr-defined]
            hint=f"`{where} --help` shows the usage",
        ) from None
    except click_error as e:
        raise UsageError(_bounded(e.format_message())) from None  # type: ignore[attr-defined]
    finally:
        sys.stdout = stdout


_ECHO_LIMIT = 200


def _bounded(message: str) -> str:
    """click's message with each over-long word it echoes (a 5,000-digit value) cut short."""
    words = message.split(" ")
    if all(len(w) <= _ECHO_LIMIT for w in words):
        return message
    return " ".join(w if len(w) <= _ECHO_LIMIT else f"{w[:60]}...({len(w)} characters)" for w in words)


def main() -> None:
    """Console entry point: run the app; every error is one line and a documented exit code."""
    # A short-lived process that builds ~100k small objects (one per blob and descriptor):
    # the cyclic GC would only re-walk them, again and again as they pile up (they hold no
    # cycles that matter); reference counting frees them. Measured: ~10-30 % of a 50k read.
    # Not turned back on: main always exits, and turned on after a 50k read the GC's first
    # pass over them would cost ~0.1 s on the way out (a caller that catches SystemExit, the
    # tests' in-process runs, turns it on again itself).
    import gc as cyclic_gc

    cyclic_gc.disable()
    output.guard_fds()
    output.run(_run_app, lambda: _state["debug"])


__all__ = ["EXIT_INTERNAL", "EXIT_USAGE", "app", "main"]
