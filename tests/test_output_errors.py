"""A stdout that cannot take the output (closed, full, a reader that went away) is exit 8 with
one line that says so (nothing for a broken pipe, like other Unix tools), never a traceback or
exit 70, for every command; a real gc whose report is lost says on stderr what it deleted."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import REPO, Run
from conftest import FIXTURES, copy_tree

from ocicache.base.errors import EXIT_OUTPUT

HOW = ["closed", "full", "broken-pipe"]


def run_to(how: str, *args: str) -> Run:
    """`python -m ocicache ARGS` with stdout closed (`>&-`), /dev/full, or a pipe whose reader
    is gone; stdout discarded, stderr kept."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "ocicache", *args]
    if how == "closed":
        p = subprocess.run(
            ["sh", "-c", 'exec "$@" >&-', "sh", *argv],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=120,
            cwd="/",
        )
    elif how == "full":
        with open("/dev/full", "w") as full:
            p = subprocess.run(
                argv, stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=120, cwd="/"
            )
    else:
        r, w = os.pipe()
        os.close(r)
        try:
            p = subprocess.run(
                argv, stdout=w, stderr=subprocess.PIPE, text=True, env=env, timeout=120, cwd="/"
            )
        finally:
            os.close(w)
    return Run(p.returncode, "", p.stderr)


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(FIXTURES / "f-tags", tmp_path_factory.mktemp("out") / "f-tags")


# Read lines (the listing begun), other commands, and what click prints itself (--help).
LINES = [
    ("history", "DIR"),
    ("history", "DIR", "--json"),
    ("show", "DIR", "alpha"),
    ("blobs", "DIR"),
    ("du", "DIR"),
    ("du", "DIR", "--json"),
    ("check", "DIR", "--quick"),
    ("check", "DIR"),
    ("gc", "DIR", "--dry-run"),
    ("gc", "DIR", "--dry-run", "--json"),
    ("gc", "DIR", "--dry-run", "--keep-last", "1"),
    ("history", "DIR", "--no-trunc", "--json"),
    ("ref", "DIR"),
    ("ref", "DIR", "--all"),
    ("ref", "--explain", "type=local,src=DIR"),
    ("--version",),
    ("gc", "--help"),
    ("--help",),
]


def _lines_for(how: str) -> list[object]:
    marks = [needs_dev_full] if how == "full" else []
    return [pytest.param(how, line, id=f"{how}: {' '.join(line)}", marks=marks) for line in LINES]


def _assert_output_error(r: Run, how: str, what: str) -> None:
    assert r.code == EXIT_OUTPUT, f"{what}: exit {r.code}\n{r.err}"
    assert "Traceback" not in r.err and "internal error" not in r.err, f"{what}:\n{r.err}"
    assert "Exception ignored" not in r.err, f"{what}:\n{r.err}"
    if how == "broken-pipe":
        assert r.err == "", f"{what}: a broken pipe is quiet\n{r.err}"
    else:
        want = "stdout is closed" if how == "closed" else "No space left on device"
        assert r.err == f"ocicache: error: stdout: cannot write the output: {want}\n", r.err


@pytest.mark.slow  # 54 real processes: half a second each
@pytest.mark.parametrize(("how", "line"), [p for h in HOW for p in _lines_for(h)])
def test_unwritable_stdout_is_exit_8(cache: Path, how: str, line: tuple[str, ...]) -> None:
    args = [a.replace("DIR", str(cache)) for a in line]
    _assert_output_error(run_to(how, *args), how, " ".join(line))


def test_nothing_to_write_is_not_an_error(cache: Path, tmp_path: Path) -> None:
    """gc --quiet writes nothing: a closed stdout does not matter."""
    r = run_to("closed", "gc", str(cache), "--dry-run", "--quiet")
    assert (r.code, r.err) == (0, "")


@pytest.mark.parametrize("how", [pytest.param(h, marks=[needs_dev_full] if h == "full" else []) for h in HOW])
def test_real_gc_says_what_it_deleted_when_its_report_is_lost(tmp_path: Path, how: str) -> None:
    root = copy_tree(FIXTURES / "k-interrupted-export", tmp_path / "k")
    before = {p.name for p in (root / "blobs" / "sha256").iterdir()}
    r = run_to(how, "gc", str(root), "--grace", "0")
    assert r.code == EXIT_OUTPUT, r.err
    assert "Traceback" not in r.err and "Exception ignored" not in r.err, r.err
    after = {p.name for p in (root / "blobs" / "sha256").iterdir()}
    gone = before - after
    assert gone, "the fixture has an unreferenced blob gc deletes"
    lines = r.err.splitlines()
    assert lines[0].startswith("ocicache: gc removed 1 blob and 1 ingest entry"), r.err
    named = set(re.findall(r"^removed \S+ blobs/sha256/([0-9a-f]{64}) ", r.err, re.M))
    assert named == gone
    assert any(x.startswith("removed ingest/") for x in lines)
    assert not (root / "ingest").exists() or not any((root / "ingest").iterdir())
    if how != "broken-pipe":
        assert lines[-1].startswith("ocicache: error: stdout: cannot write the output: ")


def test_closed_stderr_too(cache: Path) -> None:
    """Both closed: still exit 8 (nobody to tell), no crash on the way."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for line in (("history", str(cache)), ("gc", str(cache), "--dry-run", "--keep-last", "1")):
        p = subprocess.run(
            ["sh", "-c", 'exec "$@" >&- 2>&-', "sh", sys.executable, "-m", "ocicache", *line],
            env=env,
            timeout=120,
            cwd="/",
        )
        assert p.returncode == EXIT_OUTPUT


def test_full_stderr_does_not_crash(cache: Path) -> None:
    """Warnings and errors to a full stderr are lost, not a crash: the exit code stands."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    broken = cache.parent / "torn"
    if not broken.exists():
        shutil.copytree(cache, broken)
        (broken / "index.json").write_text("{torn")
    for line, code in (
        (("history", str(broken)), 4),
        (("show", str(cache), "nosuch"), 5),
        (("history", str(cache)), 0),
    ):
        with open("/dev/full", "w") as full:
            p = subprocess.run(
                [sys.executable, "-m", "ocicache", *line],
                stdout=subprocess.PIPE,
                stderr=full,
                env=env,
                timeout=120,
                cwd="/",
            )
        assert p.returncode == code, line
