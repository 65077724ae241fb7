"""The typer-free start of plain listing command lines: same output, errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import copy_tree

from ocicache.cli.entry import parse

REPO = Path(__file__).parent.parent
FIXTURE = REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags"


@pytest.mark.parametrize("argv", [
    ["history", "D"], ["history", "D", "--json"], ["--debug", "du", "--json", "D"],
    ["show", "D"], ["show", "D", "alpha", "--no-trunc"], ["blobs", "--unreferenced", "D"],
    ["gc", "--dry-run", "D", "--json"], ["--debug", "gc", "D", "--no-trunc", "--dry-run"],
    ["check", "D"], ["check", "D", "--json", "--quick"], ["check", "--no-trunc", "D"],
])
def test_plain_lines_take_the_fast_path(argv: list[str]) -> None:
    assert parse(argv) is not None


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["--help"], ["history"], ["history", "-h"], ["history", "D", "E"],
    ["du", "D", "--no-trunc"], ["history", "--debug", "D"], ["history", "D", "--json=1"],
    ["show", "D", "a", "b"], ["history", "--", "D"], ["history", ""],
    ["gc", "D"], ["gc", "D", "--json"], ["gc", "D", "--dry-run", "--keep-last", "3"],
    ["gc", "D", "--keep-last", "3"], ["gc", "D", "--grace=0"], ["gc", "D", "--grace", "0"],
    ["gc", "D", "-n"], ["gc", "D", "--keep", "x"], ["gc", "--dry-run"], ["gc", "D", "E"],
    ["check", "D", "-j", "2"], ["check", "D", "--jobs=2"], ["repair", "D"],
    ["history", "D", "-"],
])
def test_everything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


def _run(args: list[str], fast: bool, tmp_path: Path) -> tuple[int, str, str]:
    code = ("from ocicache.cli.entry import main; main()" if fast
            else "from ocicache.cli.app import main; main()")
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args", [
    ["history", str(FIXTURE), "--json"],
    ["du", str(FIXTURE)],
    ["blobs", str(FIXTURE), "--json", "--unreferenced"],
    ["show", str(FIXTURE), "alpha", "--json"],
    ["show", str(FIXTURE), "nosuch"],
    ["history", "/nonexistent/dir"],
])
def test_fast_path_matches_typer(args: list[str], tmp_path: Path) -> None:
    assert _run(args, True, tmp_path) == _run(args, False, tmp_path)


def _no_now(result: tuple[int, str, str]) -> tuple[int, str, str]:
    """gc's JSON states the time it planned at: the one line two runs cannot share."""
    code, out, err = result
    return code, "\n".join(x for x in out.splitlines() if not x.startswith('  "now": ')), err


@pytest.mark.parametrize("args", [
    ["gc", "{}", "--dry-run", "--json"],
    ["gc", "{}", "--dry-run"],
    ["gc", "{}", "--dry-run", "--no-trunc", "--json"],
    ["gc", "{}", "--json"],
    ["gc", "{}"],
    ["gc", "/nonexistent/dir", "--dry-run"],
])
def test_gc_fast_path_matches_typer(args: list[str], tmp_path: Path) -> None:
    got = []
    for fast in (True, False):
        d = tmp_path / f"cache-{fast}"
        copy_tree(FIXTURE, d)
        argv = [str(d) if a == "{}" else a for a in args]
        code, out, err = _run(argv, fast, tmp_path)
        got.append(_no_now((code, out.replace(str(d), "DIR"), err.replace(str(d), "DIR"))))
    assert got[0] == got[1]


def test_gc_refusal_matches_typer(tmp_path: Path) -> None:
    d = tmp_path / "cache"
    copy_tree(FIXTURE, d)
    (d / "index.json").write_text("{torn")
    fast = _run(["gc", str(d), "--dry-run", "--json"], True, tmp_path)
    assert fast[0] != 0 and fast == _run(["gc", str(d), "--dry-run", "--json"], False, tmp_path)


@pytest.mark.parametrize("args", [
    ["check", "{}", "--json"], ["check", "{}"], ["check", "{}", "--quick", "--no-trunc"],
    ["check", "/nonexistent/dir"],
])
@pytest.mark.parametrize("damage", [False, True])
def test_check_fast_path_matches_typer(args: list[str], damage: bool, tmp_path: Path) -> None:
    d = tmp_path / "cache"
    copy_tree(FIXTURE, d)
    if damage:  # a blob whose content no longer matches its name: exit 1
        blob = sorted((d / "blobs" / "sha256").iterdir())[-1]
        os.chmod(blob, 0o644)
        blob.write_bytes(blob.read_bytes()[:-1] + b"!")
    argv = [str(d) if a == "{}" else a for a in args]
    fast = _run(argv, True, tmp_path)
    assert fast == _run(argv, False, tmp_path)
    if "{}" in args and "--quick" not in args:
        assert fast[0] == (1 if damage else 0)
