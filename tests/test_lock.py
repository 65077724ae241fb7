"""BuildKit's index.json lock: shared for readers, exclusive for writers, removed after use."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ocicache.errors import BusyError, RefusedError
from ocicache.lock import index_lock
from ocicache.synth import Builder


@pytest.fixture
def root_fd(tmp_path: Path):  # type: ignore[no-untyped-def]
    Builder(tmp_path)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_shared_locks_coexist_and_the_file_is_removed(tmp_path: Path, root_fd: int) -> None:
    with index_lock(root_fd, shared=True):
        assert (tmp_path / "index.json.lock").exists()
        # a second reader (as BuildKit's TryRLock) is not blocked
        other = os.open(tmp_path / "index.json.lock", os.O_RDWR)
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        os.close(other)
    assert not (tmp_path / "index.json.lock").exists()


def test_a_held_lock_makes_us_busy_not_hang(tmp_path: Path, root_fd: int) -> None:
    holder = os.open(tmp_path / "index.json.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with pytest.raises(BusyError), index_lock(root_fd, timeout=0.2):
            pass
    finally:
        os.close(holder)
    with index_lock(root_fd, timeout=0.2):
        pass


def test_a_symlinked_lock_file_is_refused(tmp_path: Path, root_fd: int) -> None:
    target = tmp_path.parent / (tmp_path.name + "-outside")
    os.symlink(target, tmp_path / "index.json.lock")
    with pytest.raises(RefusedError), index_lock(root_fd, timeout=0.2):
        pass
    assert not target.exists()
