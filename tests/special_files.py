"""Something other than a regular file at a path (the tests of item 7: index.json.lock)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def make_special(path: Path, kind: str, target: Path) -> None:
    """A FIFO, a directory, a bound UNIX socket, or a symlink to `target`, at `path`."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        cwd = os.getcwd()
        os.chdir(path.parent)  # a socket path is short: bind by name, from its folder
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path.name)
            s.close()
        finally:
            os.chdir(cwd)
    else:
        path.symlink_to(target)
