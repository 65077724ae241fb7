"""Shared test helpers: copies of the real BuildKit fixtures, CLI runner, tree snapshots; and no
test reads or writes the user's real ~/.cache/ocicache. Temporary directories (tmp_path, the
tempfile module, the processes the tests start) are on a tmpfs when there is one (below)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from regserver import fixture_registry, registry  # noqa: F401  (the real registry fixtures)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "buildkit-v0.32.2"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _tmpfs_root() -> str | None:
    """/dev/shm when it is a usable tmpfs and nobody chose where temporary files go (TMPDIR,
    TEMP, TMP, pytest's PYTEST_DEBUG_TEMPROOT; --basetemp wins anyway). The tests write tens of
    thousands of small files: on a busy disk each costs a millisecond or more (a generated
    3,000-blob layout took 3-5 s on /tmp, 0.1 s on the tmpfs)."""
    if any(os.environ.get(v) for v in ("TMPDIR", "TEMP", "TMP", "PYTEST_DEBUG_TEMPROOT")):
        return None
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
    except OSError:
        return None
    unusable = getattr(os, "ST_RDONLY", 1) | getattr(os, "ST_NOEXEC", 8)  # BuildKit runs from it
    if st.f_flag & unusable or st.f_bavail * st.f_frsize < 4 << 30:
        return None
    return shm if os.access(shm, os.W_OK | os.X_OK) else None


_TMPFS = _tmpfs_root()
if _TMPFS is not None:
    tempfile.tempdir = _TMPFS  # tmp_path's base (pytest-of-USER/pytest-N) and tempfile's
    os.environ["TMPDIR"] = _TMPFS  # and the scratch of the processes the tests start


def groundtruth(case: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{case}.groundtruth.json").read_text())


def normalise_modes(root: Path) -> Path:
    """Modes as a clone made with umask 022 has them, whatever umask made this checkout (with
    umask 002 every blob is 0664, which `check` notes as an interrupted export's mode)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
                os.chmod(p, stat.S_IMODE(st.st_mode) & ~0o022)
    return root


def copy_tree(src: Path, dest: Path, symlinks: bool = False) -> Path:
    """A copy of part of the checkout (a fixture) that does not depend on how the repository
    was cloned: modes as with umask 022 (see normalise_modes); mtimes as in the checkout."""
    shutil.copytree(src, dest, symlinks=symlinks)
    return normalise_modes(dest)


def copy_fixture(case: str, dest: Path, restore_mtimes: bool) -> Path:
    """A writable copy of a real fixture; with restore_mtimes, blob mtimes and 0444 modes as
    BuildKit left them (git keeps neither)."""
    target = dest / case
    copy_tree(FIXTURES / case, target)
    if restore_mtimes:
        for blob in groundtruth(case)["final"]["blobs_on_disk"]:
            path = target / "blobs" / "sha256" / blob["digest"].split(":", 1)[1]
            os.utime(path, ns=(blob["mtime_ns"], blob["mtime_ns"]))
            os.chmod(path, int(blob["mode"], 8))
    return target


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m ocicache ARGS` as a user would; never hangs the suite."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("OCICACHE_NO_CACHE", "1")
    return subprocess.run(
        [sys.executable, "-m", "ocicache", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=full_env,
    )


def tree_state(root: Path) -> list[tuple[str, int, int, int]]:
    """Names, sizes, modes and mtimes of everything below root (symlinks not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            out.append(
                (
                    str(p.relative_to(root)),
                    st.st_size if not stat.S_ISDIR(st.st_mode) else 0,
                    st.st_mode,
                    st.st_mtime_ns,
                )
            )
    return sorted(out)


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_ALONE_ENV = "OCICACHE_TEST_ALONE"  # in the pytest that runs them: where their outcomes go
_alone: dict[str, list[str]] | None = None  # nodeid -> [outcome, report], from that run


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test marked `alone` needs a process with no thread but its own: a listing forks only
    then (store/listing.py), and the test is about what the listing's child does. In a process
    with other threads (a pytest-xdist worker: execnet's), the first such test runs them all in
    one pytest of its own (`_run_alone`), and each then passes, fails or skips as it did there."""
    import _thread

    if pyfuncitem.get_closest_marker("alone") is None or _thread._count() == 0 or os.environ.get(_ALONE_ENV):
        return None
    outcome, report = _run_alone(pyfuncitem.session).get(pyfuncitem.nodeid, ["not run", ""])
    if outcome == "passed":
        return True
    if outcome == "skipped":
        pytest.skip(f"skipped when run alone: {report}")
    pytest.fail(f"run alone, in a pytest without threads: {outcome}\n{report}", pytrace=False)


def _run_alone(session: pytest.Session) -> dict[str, list[str]]:
    global _alone
    if _alone is None:
        ids = [item.nodeid for item in session.items if item.get_closest_marker("alone")]
        fd, out = tempfile.mkstemp(prefix="ocicache-alone-", suffix=".json")
        os.close(fd)
        try:
            p = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *ids],
                cwd=session.config.rootpath,
                env={**os.environ, _ALONE_ENV: out},
                capture_output=True,
                text=True,
                timeout=1800,
            )
            text = Path(out).read_text()
            _alone = json.loads(text) if text else {}
        finally:
            os.unlink(out)
        if not _alone:
            _alone = {
                i: ["not run", f"exit {p.returncode}\n{p.stdout[-3000:]}{p.stderr[-2000:]}"] for i in ids
            }
    return _alone


_outcomes: dict[str, list[str]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """In the pytest `_run_alone` starts: each test's outcome (a failure in any phase fails it)."""
    if not os.environ.get(_ALONE_ENV):
        return
    got = _outcomes.setdefault(report.nodeid, ["passed", ""])
    if report.failed and got[0] != "failed":
        _outcomes[report.nodeid] = ["failed", report.longreprtext[-6000:]]
    elif report.skipped and got[0] == "passed":
        _outcomes[report.nodeid] = [
            "skipped",
            str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else ""),
        ]


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(_ALONE_ENV)
    if path and os.path.exists(path):
        Path(path).write_text(json.dumps(_outcomes))


@pytest.fixture(autouse=True)
def _private_xdg_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    monkeypatch.delenv("OCICACHE_NO_CACHE", raising=False)
    # Registry credentials: none, unless a test writes a config.json of its own there.
    monkeypatch.setenv("DOCKER_CONFIG", str(path / "docker-config"))
    # gc's settle time before its final re-read (3 s by default) only waits for exports that
    # may land; the tests that need a landing force it at that point (test_gc_quarantine.py),
    # and the real-BuildKit test runs with the default. Elsewhere it would only add seconds.
    monkeypatch.setenv("OCICACHE_GC_SETTLE", "0.05")
    return path
