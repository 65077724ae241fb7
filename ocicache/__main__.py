"""Entry point for `python -m ocicache`."""

from ocicache.cli.entry import main

main()
