"""The typer-free start of plain listing command lines: same output, errors and exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ocicache.entry import parse

REPO = Path(__file__).parent.parent
FIXTURE = REPO / "fixtures" / "buildkit-v0.32.2" / "f-tags"


@pytest.mark.parametrize("argv", [
    ["history", "D"], ["history", "D", "--json"], ["--debug", "du", "--json", "D"],
    ["show", "D"], ["show", "D", "alpha", "--no-trunc"], ["blobs", "--unreferenced", "D"],
])
def test_plain_lines_take_the_fast_path(argv: list[str]) -> None:
    assert parse(argv) is not None


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["--help"], ["history"], ["history", "-h"], ["history", "D", "E"],
    ["du", "D", "--no-trunc"], ["history", "--debug", "D"], ["history", "D", "--json=1"],
    ["show", "D", "a", "b"], ["gc", "D"], ["history", "--", "D"], ["history", ""],
    ["history", "D", "-"],
])
def test_everything_else_goes_to_typer(argv: list[str]) -> None:
    assert parse(argv) is None


def _run(args: list[str], fast: bool, tmp_path: Path) -> tuple[int, str, str]:
    code = ("from ocicache.entry import main; main()" if fast
            else "from ocicache.cli import main; main()")
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
