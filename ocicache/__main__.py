"""Entry point for `python -m ocicache`."""

from ocicache.entry import main

main()
