"""Entry point for `python -m ocicache`."""

from ocicache.cli.start import main

main()
