"""Console entry point: plain command lines run without importing typer.

Importing typer (and the click, pydantic and rich it brings) takes ~0.2 s, more than reading
a 50k-blob cache warm. A command line made only of `history|show|blobs|du|gc|check`, its
directory (and REF for show) and that command's own flags (`--json`, `--no-trunc`,
`--all`, `--unreferenced`, `--apparent-size`, `--dry-run`, `--quick`; gc only as a dry run with the
default policy, check without `-j`; a leading `--debug`) is run here directly, with the same
output, messages and exit codes as the typer app in cli.py (both end in output.run, the one
error boundary). Anything else (help, --version, other commands, policy or
unknown or malformed options, missing or extra arguments) goes to the typer app unchanged.

`history --json`, `du` and `gc --dry-run --json` answers are kept between runs (memo.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ocicache.store.listing import Listing

_FLAGS = {
    "history": frozenset({"--json", "--no-trunc", "--all"}),
    "show": frozenset({"--json", "--no-trunc"}),
    "blobs": frozenset({"--json", "--no-trunc", "--unreferenced"}),
    "du": frozenset({"--json", "--apparent-size"}),
    # gc with the default policy (any policy option goes to typer)
    "gc": frozenset({"--dry-run", "--json", "--no-trunc"}),
    "check": frozenset({"--json", "--quick", "--no-trunc"}),  # -j/--jobs N goes to typer
}
_POSITIONALS = {"history": (1, 1), "show": (1, 2), "blobs": (1, 1), "du": (1, 1), "gc": (1, 1),
                "check": (1, 1)}
EXIT_PROBLEMS = 1  # as errors.EXIT_PROBLEMS (check found integrity problems)


class _Plain:
    """A command line the fast path understands."""

    def __init__(self, debug: bool, command: str, args: list[str], flags: set[str]) -> None:
        self.debug = debug
        self.command = command
        self.args = args
        self.flags = flags


def parse(argv: list[str]) -> _Plain | None:
    """The plain command line in `argv`, or None when typer must handle it."""
    debug = False
    if argv[:1] == ["--debug"]:
        debug = True
        argv = argv[1:]
    if not argv or argv[0] not in _FLAGS:
        return None
    command, rest = argv[0], argv[1:]
    allowed = _FLAGS[command]
    args: list[str] = []
    flags: set[str] = set()
    for token in rest:
        if token.startswith("-"):
            if token not in allowed:
                return None
            flags.add(token)
        elif token:
            args.append(token)
        else:
            return None
    low, high = _POSITIONALS[command]
    if not low <= len(args) <= high:
        return None
    if command == "gc" and "--dry-run" not in flags:
        # A real gc keeps typer's start: tests/test_gc_races.py::test_concurrent_exporter_survives
        # failed ~2 in 13 runs with the 0.2 s faster start (an exporter re-using old layers
        # meets gc's deletions in a window gc cannot see); reported, not changed here.
        return None
    return _Plain(debug, command, args, flags)


def _echo(text: str) -> None:
    from ocicache.cli.output import out

    out(text)


def _warn(lines: list[str]) -> None:
    from ocicache.cli.output import warn

    warn(lines)


_NOW_MARK = "\0now\0"  # in a kept gc answer, where `now` goes (JSON text never holds a NUL)


def _memo_tag(p: _Plain) -> str | None:
    """The memo tag of a command line whose answer depends only on DIR (and, for a dry run,
    on the clock in a way gc_plan.stable_until bounds), else None."""
    if p.command == "du" or (p.command == "history" and "--json" in p.flags):
        return " ".join([p.command, *sorted(p.flags)])
    if p.command == "gc" and {"--dry-run", "--json"} <= p.flags:
        # The JSON names DIR as given (made absolute, not normalized).
        return " ".join([p.command, *sorted(p.flags), str(Path(p.args[0]).absolute())])
    return None


def _now_line(now_ns: int) -> str:
    from ocicache.base.timefmt import format_rfc3339

    return f'\n  "now": "{format_rfc3339(now_ns)}",\n'


def _run(p: _Plain) -> None:
    tag = _memo_tag(p)
    memo = None
    listing = None
    if p.command != "check" and _looks_like_cache_dir(p.args[0]):
        # GNU find lists DIR on the other core (listing.py); unless a kept answer may be
        # printed at once, this one loads the command's modules meanwhile.
        from ocicache.store.listing import Listing

        if tag is None:
            listing = Listing(p.args[0])
            _import_command(p.command)
        else:
            import time

            from ocicache.store.memo import Memo, begin

            listing = begin(p.args[0])
            slot = Memo.slot(p.args[0], tag)
            if slot is None or not slot.exists():
                _import_command(p.command)
            now_ns = time.time_ns()
            memo = Memo.open(p.args[0], tag, listing)
            hit = memo.load(now_ns) if memo is not None else None
            if hit is not None:
                _warn(hit[1])
                _echo(hit[0].replace(_NOW_MARK, _now_line(now_ns)))
                return
    if memo is None:
        _run_command(p, _echo, _warn, listing)
        return
    out: list[str] = []
    warned: list[str] = []

    def warn(lines: list[str]) -> None:
        warned.extend(lines)
        _warn(lines)

    def echo(text: str) -> None:
        out.append(text)
        _echo(text)

    window = _run_command(p, echo, warn, listing)
    # A read failure is a state of the moment (permissions aside, which the key holds): an
    # answer that met one is not kept.
    if len(out) != 1 or any("cannot " in w for w in warned):
        return
    text = out[0]
    if window is not None:
        line = _now_line(window[0])
        if text.count(line) != 1:
            return
        text = text.replace(line, _NOW_MARK)
    memo.save(text, warned, window)


def _looks_like_cache_dir(directory: str) -> bool:
    """DIR holds index.json or blobs/ (else Layout says what is wrong; nothing is listed)."""
    import os

    return (os.path.isdir(os.path.join(directory, "blobs"))
            or os.path.isfile(os.path.join(directory, "index.json")))


def _import_command(command: str) -> None:
    """Load the modules `command` runs on (what _run_command imports)."""
    if command == "gc":
        import ocicache.cli.gc_run
    elif command != "check":
        import ocicache.cli.inspect_run  # noqa: F401


def _run_command(p: _Plain, _echo: Callable[[str], None],
                 _warn: Callable[[list[str]], None],
                 listing: Listing | None = None) -> tuple[int, int] | None:
    """Run the command; for a gc dry run, the time window in which its plan holds."""
    directory = Path(p.args[0])
    json, no_trunc = "--json" in p.flags, "--no-trunc" in p.flags
    if p.command == "check":
        from ocicache.cli import check_run
        from ocicache.cli.output import err

        if not check_run.check(directory, json, "--quick" in p.flags, 0, no_trunc, _echo, err):
            sys.exit(EXIT_PROBLEMS)
        return None
    if p.command == "gc":
        from ocicache.cli import gc_run

        result = gc_run.gc(directory, "--dry-run" in p.flags, json, no_trunc, _echo, _warn,
                           listing)
        if result.stable_until_ns is None:
            return None
        return result.plan.now_ns, result.stable_until_ns
    from ocicache.cli import inspect_run as run

    if p.command == "history":
        run.history(directory, json, no_trunc, _echo, _warn, listing=listing,
                    show_all="--all" in p.flags)
    elif p.command == "show":
        ref = p.args[1] if len(p.args) > 1 else "~0"
        run.show(directory, ref, json, no_trunc, _echo, _warn, listing=listing)
    elif p.command == "blobs":
        run.blobs(directory, json, no_trunc, "--unreferenced" in p.flags, _echo, _warn,
                  listing=listing)
    else:
        run.du(directory, json, _echo, _warn, listing, "--apparent-size" in p.flags)
    return None


def main() -> None:
    """Run a plain command line directly, anything else through the typer app."""
    # A short-lived process that builds ~100k small objects (one per blob and descriptor):
    # the cyclic GC would only re-walk them, again and again as they pile up (they hold no
    # cycles that matter); reference counting frees them. Measured: ~10-30 % of a 50k read.
    import gc

    gc.disable()
    plain = parse(sys.argv[1:])
    if plain is None:
        from ocicache.cli.app import main as typer_main

        typer_main()
        return
    from ocicache.cli import output

    output.guard_fds()
    output.run(lambda: _run(plain), lambda: plain.debug)
