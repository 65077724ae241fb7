"""Where ocicache keeps what it learns between runs: $XDG_CACHE_HOME/ocicache, never inside DIR.

Its own module (no model imports) so that a kept answer (memo.py) is found without importing
the reader.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")


def cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/ocicache (default ~/.cache/ocicache); None when OCICACHE_NO_CACHE is set."""
    if os.environ.get("OCICACHE_NO_CACHE", "").strip().lower() in _TRUE:
        return None
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not base or not os.path.isabs(base):  # the XDG spec: relative paths are ignored
        home = os.path.expanduser("~")
        if home == "~":
            return None
        base = os.path.join(home, ".cache")
    return Path(base) / "ocicache"


def _inside(directory: Path, root: Path | None) -> bool:
    """True when `directory` is `root` or below it (the cache must never live inside DIR)."""
    if root is None:
        return False
    try:
        d = os.path.realpath(directory)
        r = os.path.realpath(root)
        return os.path.commonpath([d, r]) == r
    except (OSError, ValueError):
        return True
