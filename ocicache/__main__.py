"""Entry point for `python -m ocicache`."""

from ocicache.cli import main

main()
