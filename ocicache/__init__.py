"""ocicache: inspect, garbage-collect, pin, copy and check BuildKit cache stores (directories, registries)."""

__version__ = "0.6.5"
