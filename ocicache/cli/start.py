"""The console script and `python -m ocicache`: begins the listing of a read command's DIR
(store/listing.begin_early, a guess that typer's parse confirms or drops), then runs the typer
app (app.main). Imports nothing else first: typer and the commands load while the listing's
child stats the blobs.

On the way out it flushes stdout and stderr and leaves at once (os._exit): the interpreter's
teardown would free a big read's ~300k objects one by one (~50 ms at 50k blobs) after the answer
is already out. Everything ocicache writes is closed, and every child reaped, by then."""

from __future__ import annotations

import os
import sys


def main() -> None:
    from ocicache.store.listing import begin_early, stop_early

    begin_early(sys.argv[1:])
    from ocicache.cli.app import main as run

    try:
        run()  # (under --debug an exception goes on up: Python prints it and exits as usual)
    except SystemExit as e:
        code = e.code
        stop_early()
        _leave(code)


def _leave(code: object) -> None:
    """Exit with `code` as Python would (None is 0, a number is itself, anything else is printed
    and 1), without the teardown."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            try:
                stream.flush()
            except (OSError, ValueError):  # (app.main already reported a stdout that failed)
                status = status or 120
    os._exit(status & 0xFF)
