"""store/registry/record.py: what ocicache saw of a repository's tags, kept under
$XDG_CACHE_HOME/ocicache/registry: round trips, merging, bad files, a cache it cannot write, limits."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from ocicache.base.errors import UsageError
from ocicache.store.registry import record
from ocicache.store.registry.record import Seen, forget, load, record_path, update

HOST = "127.0.0.1:5101"
REPO = "myorg/app-cache"


def _d(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache home that does not exist yet (update creates it)."""
    home = tmp_path / "xdg" / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.delenv("OCICACHE_NO_CACHE", raising=False)
    return home


def _file(cache: Path, host: str = HOST, repo: str = REPO) -> Path:
    key = hashlib.sha256(f"{host}/{repo}".encode()).hexdigest()[:32]
    return cache / "ocicache" / "registry" / f"{key}.json"


def test_round_trip(cache: Path) -> None:
    assert load(HOST, REPO) == {}
    assert not cache.exists()
    got = update(HOST, REPO, {"cache": _d(1), "latest": _d(9)}, 100)
    assert got == {"cache": (Seen(_d(1), 100, 100),), "latest": (Seen(_d(9), 100, 100),)}
    path = _file(cache)
    assert record_path(HOST, REPO) == path
    assert load(HOST, REPO) == got
    assert json.loads(path.read_text()) == {
        "host": HOST,
        "repo": REPO,
        "tags": {
            "cache": [{"digest": _d(1), "first_seen_ns": 100, "last_seen_ns": 100}],
            "latest": [{"digest": _d(9), "first_seen_ns": 100, "last_seen_ns": 100}],
        },
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (cache, cache / "ocicache", cache / "ocicache" / "registry"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    # no temporary file left; the lock file stays (its name is the record's, plus .lock)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".lock"]


def test_merging(cache: Path) -> None:
    update(HOST, REPO, {"cache": _d(1), "other": _d(5)}, 100)
    assert update(HOST, REPO, {"cache": _d(1)}, 200)["cache"] == (Seen(_d(1), 100, 200),)
    update(HOST, REPO, {"cache": _d(2)}, 300)
    got = update(HOST, REPO, {"cache": _d(1)}, 400)  # back to an older digest: a new entry
    assert got["cache"] == (Seen(_d(1), 100, 200), Seen(_d(2), 300, 300), Seen(_d(1), 400, 400))
    assert got["other"] == (Seen(_d(5), 100, 100),)  # no longer seen: kept
    assert update(HOST, REPO, {"cache": _d(1)}, 350)["cache"][-1] == Seen(_d(1), 400, 400)  # clock back
    assert load(HOST, REPO) == update(HOST, REPO, {}, 500)
    assert list(load(HOST, REPO)) == ["cache", "other"]


def test_one_file_per_host_and_repository(cache: Path) -> None:
    update(HOST, REPO, {"a": _d(1)}, 1)
    update("registry.example.com", REPO, {"a": _d(2)}, 2)
    update(HOST, "app", {"a": _d(3)}, 3)
    assert load(HOST, REPO)["a"][0].digest == _d(1)
    assert load("registry.example.com", REPO)["a"][0].digest == _d(2)
    assert load(HOST, "app")["a"][0].digest == _d(3)
    assert len([p for p in (cache / "ocicache" / "registry").iterdir() if p.suffix == ".json"]) == 3


def test_no_cache_dir(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCICACHE_NO_CACHE", "1")
    assert record_path(HOST, REPO) is None
    assert update(HOST, REPO, {"a": _d(1)}, 1) == {"a": (Seen(_d(1), 1, 1),)}
    assert load(HOST, REPO) == {}
    forget(HOST, REPO, {_d(1)})
    assert not cache.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff\xfe garbage",
        b"[1, 2]",
        b'{"host": "127.0.0.1:5101", "repo": "myorg/app-cache"}',
        b'{"host": "127.0.0.1:5101", "repo": "myorg/app-cache", "tags": []}',
        b'{"host": "elsewhere", "repo": "myorg/app-cache", "tags": {}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"host": "127.0.0.1:5101", "repo": "myorg/app-cache", "tags": {"a": [' + b" " * (4 << 20) + b"]}}",
    ],
)
def test_corrupt_file_reads_as_nothing(cache: Path, content: bytes) -> None:
    path = _file(cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert load(HOST, REPO) == {}
    assert update(HOST, REPO, {"a": _d(1)}, 1) == {"a": (Seen(_d(1), 1, 1),)}  # and replaced
    assert load(HOST, REPO) == {"a": (Seen(_d(1), 1, 1),)}


def test_bad_entries_are_dropped(cache: Path) -> None:
    good = {"digest": _d(1), "first_seen_ns": 1, "last_seen_ns": 2}
    bad = [
        {"digest": "sha256:xyz", "first_seen_ns": 1, "last_seen_ns": 2},
        {"digest": _d(2), "first_seen_ns": True, "last_seen_ns": 2},
        {"digest": _d(2), "first_seen_ns": 1.5, "last_seen_ns": 2},
        {"digest": _d(2), "first_seen_ns": -1, "last_seen_ns": 2},
        {"digest": _d(2), "first_seen_ns": 3, "last_seen_ns": 2},
        {"digest": _d(2)},
        "sha256:" + "0" * 64,
        None,
    ]
    doc = {"host": HOST, "repo": REPO, "tags": {"ok": [*bad, good], "../x": [good], "empty": bad, "n": 5}}
    path = _file(cache)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))
    assert load(HOST, REPO) == {"ok": (Seen(_d(1), 1, 2),)}


def test_a_symlink_or_directory_is_not_read(cache: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    entry = {"digest": _d(1), "first_seen_ns": 1, "last_seen_ns": 1}
    elsewhere.write_text(json.dumps({"host": HOST, "repo": REPO, "tags": {"a": [entry]}}))
    path = _file(cache)
    path.parent.mkdir(parents=True)
    os.symlink(elsewhere, path)
    assert load(HOST, REPO) == {}
    path.unlink()
    path.mkdir()
    assert load(HOST, REPO) == {}
    assert update(HOST, REPO, {"a": _d(2)}, 5) == {"a": (Seen(_d(2), 5, 5),)}  # cannot replace a dir
    assert path.is_dir()


def test_read_only_cache_dir(cache: Path) -> None:
    update(HOST, REPO, {"a": _d(1)}, 1)
    directory = _file(cache).parent
    before = _file(cache).read_bytes()
    if os.geteuid() != 0:  # root writes anyway
        directory.chmod(0o500)
        try:
            assert update(HOST, REPO, {"a": _d(2)}, 2) == {"a": (Seen(_d(1), 1, 1), Seen(_d(2), 2, 2))}
            forget(HOST, REPO, {_d(1)})
            assert _file(cache).read_bytes() == before
        finally:
            directory.chmod(0o700)
    # a file where the directory belongs: nothing can be created below it, for root too
    for p in directory.iterdir():
        p.unlink()
    directory.rmdir()
    directory.write_text("in the way")
    assert update(HOST, REPO, {"a": _d(3)}, 3) == {"a": (Seen(_d(3), 3, 3),)}
    forget(HOST, REPO, {_d(3)})
    assert load(HOST, REPO) == {}
    assert directory.read_text() == "in the way"


def test_failed_replace_keeps_the_old_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    update(HOST, REPO, {"a": _d(1)}, 1)
    before = _file(cache).read_bytes()

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(record.os, "replace", fail)
    assert update(HOST, REPO, {"a": _d(2)}, 2)["a"][-1] == Seen(_d(2), 2, 2)
    assert _file(cache).read_bytes() == before
    names = sorted(p.name for p in _file(cache).parent.iterdir())
    assert names == [_file(cache).name, _file(cache).name + ".lock"]  # temp removed


def test_forget(cache: Path) -> None:
    update(HOST, REPO, {"a": _d(1), "b": _d(3)}, 1)
    update(HOST, REPO, {"a": _d(2), "b": _d(3)}, 2)
    forget(HOST, REPO, {_d(1), _d(3)})
    assert load(HOST, REPO) == {"a": (Seen(_d(2), 2, 2),)}
    mtime = _file(cache).stat().st_mtime_ns
    forget(HOST, REPO, {_d(7)})  # nothing to drop: not written
    forget(HOST, REPO, set())
    assert _file(cache).stat().st_mtime_ns == mtime
    forget(HOST, "app", {_d(2)})  # no record: nothing happens
    assert not _file(cache, repo="app").exists()


def test_bad_arguments(cache: Path) -> None:
    for host, repo in (("", REPO), ("a/b", REPO), ("a b", REPO), (HOST, "../x"), (HOST, "A"), (HOST, "")):
        with pytest.raises(UsageError):
            load(host, repo)
        with pytest.raises(UsageError):
            update(host, repo, {}, 1)
        with pytest.raises(UsageError):
            forget(host, repo, {_d(1)})
    for current in ({"bad tag": _d(1)}, {"a": "sha256:abc"}, {"a": "latest"}):
        with pytest.raises(UsageError):
            update(HOST, REPO, current, 1)
    for now in (-1, 1.5, True):
        with pytest.raises(UsageError):
            update(HOST, REPO, {"a": _d(1)}, now)  # type: ignore[arg-type]
    assert not cache.exists()


def test_entries_per_tag_are_capped(cache: Path) -> None:
    for i in range(record.MAX_PER_TAG + 20):
        got = update(HOST, REPO, {"a": _d(i), "b": _d(0)}, i)
    assert len(got["a"]) == record.MAX_PER_TAG
    assert got["a"][0] == Seen(_d(20), 20, 20)  # the oldest dropped
    assert got["a"][-1].digest == _d(record.MAX_PER_TAG + 19)
    assert got["b"] == (Seen(_d(0), 0, record.MAX_PER_TAG + 19),)
    assert load(HOST, REPO) == got


def test_tags_are_capped(cache: Path) -> None:
    old = {f"old-{i:04d}": _d(i) for i in range(record.MAX_TAGS)}
    update(HOST, REPO, old, 1)
    new = {f"new-{i}": _d(i) for i in range(50)}
    got = update(HOST, REPO, new, 2)
    assert len(got) == record.MAX_TAGS
    assert set(new) <= set(got)  # the tags seen now are kept, older ones dropped
    assert load(HOST, REPO) == got


def test_file_size_is_capped(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "MAX_FILE", 40_000)
    for i in range(60):
        got = update(HOST, REPO, {f"t{t}": _d(1000 * t + i) for t in range(10)}, i)
    size = _file(cache).stat().st_size
    assert 36_000 < size <= 40_000  # as many entries as fit
    assert load(HOST, REPO) == got  # what is written is read back
    assert all(h[-1] == Seen(_d(1000 * int(t[1:]) + 59), 59, 59) for t, h in got.items())  # newest kept
    assert 10 < sum(len(h) for h in got.values()) < 600


def test_two_processes_recording_at_once_both_keep_what_they_saw(cache: Path) -> None:
    """update reads, merges and writes under the record's lock file: another process's update
    that waits for it reads what the holder wrote, and adds to it (without the lock its write,
    made from what it read before, would drop the holder's tag)."""
    import fcntl
    import subprocess
    import sys
    import time

    update(HOST, REPO, {"a": _d(1)}, 10)
    lock = _file(cache).with_name(_file(cache).name + ".lock")
    assert lock.is_file() and stat.S_IMODE(lock.stat().st_mode) == 0o600
    script = (
        "import sys\n"
        "from ocicache.store.registry.record import update\n"
        "print('ready', flush=True)\n"
        f"update({HOST!r}, {REPO!r}, {{'c': {_d(3)!r}}}, 30)\n"
    )
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert other.stdout is not None
        assert other.stdout.readline() == "ready\n"
        # The other process is now waiting for the lock (LOCK_WAIT_S): what this one records
        # meanwhile is what it will read.
        time.sleep(0.3)
        body = json.loads(_file(cache).read_bytes())
        body["tags"]["b"] = [{"digest": _d(2), "first_seen_ns": 20, "last_seen_ns": 20}]
        _file(cache).write_text(json.dumps(body))
    finally:
        os.close(fd)
    assert other.wait(timeout=60) == 0
    assert set(load(HOST, REPO)) == {"a", "b", "c"}


def test_a_lock_it_cannot_take_does_not_stop_the_record(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock held past LOCK_WAIT_S (or a lock file that cannot be opened) delays the update,
    never loses it."""
    import fcntl

    monkeypatch.setattr(record, "LOCK_WAIT_S", 0.05)
    update(HOST, REPO, {"a": _d(1)}, 10)
    lock = _file(cache).with_name(_file(cache).name + ".lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        update(HOST, REPO, {"b": _d(2)}, 20)
    finally:
        os.close(fd)
    lock.unlink()
    lock.symlink_to(cache / "elsewhere")
    update(HOST, REPO, {"c": _d(3)}, 30)
    assert set(load(HOST, REPO)) == {"a", "b", "c"}
    assert not (cache / "elsewhere").exists()


def test_forgetting_with_nothing_recorded_makes_nothing(cache: Path) -> None:
    """gc on a repository no run recorded: no cache folder, no lock file."""
    forget(HOST, REPO, {_d(1)})
    assert not cache.exists()
