"""Kept answers (memo.py): reused only for an unchanged directory, never wrong, never in DIR."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ocicache.store.memo import Memo

REPO = Path(__file__).parent.parent
FIXTURE = REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags"
LINES = [("du", "--json"), ("history", "--json"), ("du",)]

pytestmark = pytest.mark.skipif(not any(os.access(f, os.X_OK) for f in
                                        ("/usr/bin/find", "/bin/find")), reason="no find")


def _cli(d: Path, *args: str, cache: bool = True) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if cache:
        env.pop("OCICACHE_NO_CACHE", None)
    else:
        env["OCICACHE_NO_CACHE"] = "1"
    proc = subprocess.run([sys.executable, "-m", "ocicache", args[0], str(d), *args[1:]],
                          capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "cache"
    shutil.copytree(FIXTURE, d)
    return d


def _plant(d: Path, line: tuple[str, ...]) -> None:
    """Store a fake answer under the directory's current key (as if an earlier run wrote it)."""
    memo = Memo.open(str(d), " ".join([line[0], *sorted(line[1:])]))
    assert memo is not None
    memo.save("FAKE", ["planted"])


def _blob(d: Path) -> Path:
    return sorted((d / "blobs" / "sha256").iterdir())[0]


def _add(d: Path) -> None:
    data = b"\x1f\x8b new layer bytes"
    (d / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)


def _remove(d: Path) -> None:
    _blob(d).unlink()


def _resize(d: Path) -> None:
    b = _blob(d)
    st = b.stat()
    os.chmod(b, 0o644)
    with open(b, "ab") as f:
        f.write(b"x")
    os.chmod(b, st.st_mode)
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))


def _touch(d: Path) -> None:
    for b in (d / "blobs" / "sha256").iterdir():
        st = b.stat()
        os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))


def _rewrite_index(d: Path) -> None:
    """Other bytes, same size, same mtime: only the bytes tell."""
    p = d / "index.json"
    st = p.stat()
    data = p.read_bytes()
    assert b'"latest"' in data or b"org.opencontainers.image.ref.name" in data
    new = data.replace(b"latest", b"lattes", 1) if b"latest" in data else data[::-1]
    assert len(new) == len(data) and new != data
    p.write_bytes(new)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def _chmod(d: Path) -> None:
    os.chmod(_blob(d), 0o600)


@pytest.mark.parametrize("line", LINES)
def test_repeated_run_reuses_and_matches(tmp_path: Path, line: tuple[str, ...]) -> None:
    d = _copy(tmp_path)
    fresh = _cli(d, *line, cache=False)
    assert _cli(d, *line) == fresh  # first run: computed, kept
    assert _cli(d, *line) == fresh  # repeated: the kept answer, the same bytes
    _plant(d, line)
    assert _cli(d, *line) == (0, "FAKE\n", "ocicache: warning: planted\n")  # it is used


@pytest.mark.parametrize("change", [_add, _remove, _resize, _touch, _rewrite_index, _chmod])
@pytest.mark.parametrize("line", LINES)
def test_any_change_gives_a_fresh_answer(tmp_path: Path, line: tuple[str, ...],
                                         change: Callable[[Path], None]) -> None:
    d = _copy(tmp_path)
    _cli(d, *line)
    _plant(d, line)
    change(d)
    got = _cli(d, *line)
    assert "FAKE" not in got[1]
    assert got == _cli(d, *line, cache=False)
    assert _cli(d, *line) == got  # and that is what is kept now


def test_damaged_answer_files_are_ignored(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    fresh = _cli(d, "du", "--json", cache=False)
    _cli(d, "du", "--json")
    answers = list((Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / "answers").iterdir())
    assert answers
    for junk in (b"", b"OCA1\0\0\0\0garbage", os.urandom(300)):
        for a in answers:
            a.write_bytes(junk)
        assert _cli(d, "du", "--json") == fresh
    for a in answers:  # a valid file, one flipped byte: the checksum rejects it
        data = bytearray(a.read_bytes())
        data[-3] ^= 0xFF
        a.write_bytes(bytes(data))
        assert _cli(d, "du", "--json") == fresh


def test_never_inside_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(d / "xdg"))
    assert Memo.open(str(d), "du") is None
    before = sorted(p.name for p in d.rglob("*"))
    _cli(d, "du", "--json")
    _cli(d, "du", "--json")
    assert sorted(p.name for p in d.rglob("*")) == before


def test_text_history_is_not_kept(tmp_path: Path) -> None:
    """The history table holds relative times ("2 hours ago"): computed every run."""
    d = _copy(tmp_path)
    _cli(d, "history")
    assert not (Path(os.environ["XDG_CACHE_HOME"]) / "ocicache" / "answers").exists()


GC = ("gc", "--dry-run", "--json")


def _gc_tag(d: Path) -> str:
    return " ".join(["gc", "--dry-run", "--json", str(d)])


def _no_now(result: tuple[int, str, str]) -> tuple[int, str, str]:
    code, out, err = result
    return code, "\n".join(x for x in out.splitlines() if not x.startswith('  "now": ')), err


def test_gc_dry_run_is_kept_with_a_fresh_now(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    fresh = _cli(d, *GC, cache=False)
    first, again = _cli(d, *GC), _cli(d, *GC)
    assert _no_now(first) == _no_now(again) == _no_now(fresh)
    assert first[1] != again[1]  # the time line is the time of each run
    memo = Memo.open(str(d), _gc_tag(d))
    assert memo is not None and memo.load(time.time_ns()) is not None


@pytest.mark.parametrize("window, used", [((0, 1 << 62), True), ((0, 1), False),
                                          ((1 << 61, 1 << 62), False)])
def test_gc_answer_only_inside_its_window(tmp_path: Path, window: tuple[int, int],
                                          used: bool) -> None:
    d = _copy(tmp_path)
    memo = Memo.open(str(d), _gc_tag(d))
    assert memo is not None
    memo.save("FAKE", [], window)
    assert ("FAKE" in _cli(d, *GC)[1]) is used


@pytest.mark.parametrize("change", [_add, _remove, _resize, _touch, _rewrite_index, _chmod])
def test_gc_any_change_gives_a_fresh_answer(tmp_path: Path,
                                            change: Callable[[Path], None]) -> None:
    d = _copy(tmp_path)
    _cli(d, *GC)
    memo = Memo.open(str(d), _gc_tag(d))
    assert memo is not None
    memo.save("FAKE", [], (0, 1 << 62))
    change(d)
    got = _cli(d, *GC)
    assert "FAKE" not in got[1]
    assert _no_now(got) == _no_now(_cli(d, *GC, cache=False))


def test_stable_until_is_when_grace_runs_out(tmp_path: Path) -> None:
    from ocicache import api
    from ocicache.core.gc_plan import Policy, make_plan, stable_until

    d = _copy(tmp_path)
    now = time.time_ns()
    for f in d.rglob("*"):
        os.utime(f, ns=(now, now - 10 * 86400 * 10**9), follow_symlinks=False)
    young = _blob(d)
    os.utime(young, ns=(now, now - 600 * 10**9))  # 10 minutes old
    hour = 3600 * 10**9
    policy = Policy(keep_last=0, keep_within_ns=None, keep_refs=(), max_size=None, grace_ns=hour)
    snap = api.read(d, use_cache=False)
    until = stable_until(snap.inventory, snap.exports, policy, now)
    assert until == now - 600 * 10**9 + hour
    plan = make_plan(snap.inventory, snap.exports, policy, now)
    later = make_plan(snap.inventory, snap.exports, policy, until - 1)
    assert (plan.kept, plan.blobs, plan.ingest) == (later.kept, later.blobs, later.ingest)
    # Without keep_within and with every blob older than grace: forever.
    old = Policy(keep_last=0, keep_within_ns=None, keep_refs=(), max_size=None, grace_ns=0)
    assert stable_until(snap.inventory, snap.exports, old, now) == 1 << 62


def _same_bytes_index(d: Path) -> None:
    """index.json written again with the very bytes it had (BuildKit rewrites it in place)."""
    p = d / "index.json"
    p.write_bytes(p.read_bytes())


def _new_ingest(d: Path) -> None:
    (d / "ingest" / "deadbeef").mkdir(parents=True)


@pytest.mark.parametrize("change", [_add, _remove, _same_bytes_index, _new_ingest])
def test_a_change_while_reading_is_not_kept(tmp_path: Path,
                                            change: Callable[[Path], None]) -> None:
    """The fence: an answer computed while DIR changed is never stored (even when the change
    leaves the same listing key behind, as rewriting index.json with the same bytes does)."""
    d = _copy(tmp_path)
    (d / "ingest").mkdir(exist_ok=True)
    memo = Memo.open(str(d), "du --json")
    assert memo is not None
    change(d)  # between the listing and the end of the read
    memo.save("FAKE", [])
    assert not memo.path.exists()
    again = Memo.open(str(d), "du --json")
    assert again is not None
    again.save("FAKE", [])  # nothing changed this time: kept
    assert again.load() == ("FAKE", [])


def test_listing_begun_early_is_the_same_key(tmp_path: Path) -> None:
    from ocicache.store.listing import Listing
    from ocicache.store.memo import begin

    d = _copy(tmp_path)
    a = Memo.open(str(d), "du", begin(str(d)))
    b = Memo.open(str(d), "du")
    assert a is not None and b is not None and a.key == b.key
    c = Memo.open(str(d), "du", begin(str(tmp_path)))  # of another directory: not used
    assert c is not None and c.key == a.key
    assert Memo.open(str(d), "du", Listing(str(d))) is None  # no fence taken before it: no memo


def test_an_answer_other_code_kept_is_not_used(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The key holds the SHA-256 of ocicache's sources: an answer is what that code printed
    (a change to how answers are computed misses, whatever the version number says)."""
    from ocicache.store import memo as memo_module

    d = _copy(tmp_path)
    _plant(d, ("history", "--json"))
    memo = Memo.open(str(d), "history --json")
    assert memo is not None and memo.load() == ("FAKE", ["planted"])
    code = memo_module._code()
    assert len(code) == 64 and code == memo_module._code()
    monkeypatch.setattr(memo_module, "_code", lambda: "0" * 64)
    other = Memo.open(str(d), "history --json")
    assert other is not None and other.load() is None
