"""BuildKit's index.json lock: shared for readers, exclusive for writers, removed after use."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
from special_files import make_special

from ocicache.base.errors import BusyError, RefusedError
from ocicache.store.lock import ABSENT, BUSY, HELD, MINE, UNUSABLE, index_lock, probe_shared
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


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket", "symlink-dangling"])
def test_a_lock_path_that_is_not_a_file_is_refused_at_once(tmp_path: Path, root_fd: int, kind: str) -> None:
    """O_NONBLOCK|O_NOFOLLOW, then fstat: a FIFO never blocks the open, nothing is waited on."""
    import time

    lock = tmp_path / "index.json.lock"
    make_special(lock, kind, tmp_path / "nowhere")
    started = time.monotonic()
    for shared in (False, True):
        with (
            pytest.raises(RefusedError, match="not a regular file") as e,
            index_lock(root_fd, timeout=5, shared=shared),
        ):
            pass
        assert e.value.file == "index.json.lock"
    assert time.monotonic() - started < 2
    assert probe_shared(root_fd).state == UNUSABLE
    assert not (tmp_path / "nowhere").exists()


def test_release_never_removes_a_lock_file_that_is_not_ours(tmp_path: Path, root_fd: int) -> None:
    with index_lock(root_fd):
        (tmp_path / "index.json.lock").unlink()  # e.g. a BuildKit reader's RemoveAll
        (tmp_path / "index.json.lock").write_bytes(b"")  # a new writer's file
    assert (tmp_path / "index.json.lock").exists()


def test_readers_probe_without_creating(tmp_path: Path, root_fd: int) -> None:
    assert probe_shared(root_fd).state == ABSENT
    assert not (tmp_path / "index.json.lock").exists()
    holder = os.open(tmp_path / "index.json.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert probe_shared(root_fd).state == BUSY
        fcntl.flock(holder, fcntl.LOCK_UN)
        p = probe_shared(root_fd)
        assert p.state == HELD and p.still_held(root_fd)
        with pytest.raises(BlockingIOError):  # a writer's TryLock fails while we read
            fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        p.release()
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(holder)
    assert (tmp_path / "index.json.lock").exists()  # a reader removes nothing either
    with index_lock(root_fd, shared=True):
        assert probe_shared(root_fd).state == MINE  # our own lock: no waiting for ourselves
