"""ocicache: inspect, garbage-collect, pin and check BuildKit type=local cache directories."""

__version__ = "0.4.0"
