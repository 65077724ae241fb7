"""Entry point for `python -m ocicache`."""

from ocicache.cli.app import main

main()
