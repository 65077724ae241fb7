"""The console script and `python -m ocicache`: begins the listing of a read command's DIR
(store/listing.begin_early, a guess that typer's parse confirms or drops), then runs the typer
app (app.main). Imports nothing else first: typer and the commands load while the listing's
child stats the blobs."""

from __future__ import annotations

import sys


def main() -> None:
    from ocicache.store.listing import begin_early

    begin_early(sys.argv[1:])
    from ocicache.cli.app import main as run

    run()
