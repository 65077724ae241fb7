"""Every command in README.md works: the set-up command in a fresh venv, every example as shown.

Console blocks are run line by line (`$ ocicache ...` through `python -m ocicache`, other lines
through bash) in a scratch folder holding a copy of fixtures/ (so that where and how the
repository was cloned cannot matter: modes as with umask 022, see conftest.copy_tree), with
/tmp/ocicache-* paths moved into a folder of the test's own. Lines that state a relative time
("2 hours ago") are compared by shape; every other line must match exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, copy_tree

README = (ROOT / "README.md").read_text()
SETUP = re.findall(r"```sh\n(.*?)\n```", README, re.S)
BLOCKS = re.findall(r"```console\n(.*?)\n```", README, re.S)
TIME_WORDS = re.compile(r"\b(ago|now|from now)\b")


def _steps(block: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _normalise(line: str) -> str:
    """Column widths follow the longest cell (a relative time), so compare cells, not spaces;
    a line stating a relative time, or a table rule, by its number of cells only."""
    cells = line.split()
    if TIME_WORDS.search(line) or (cells and set(line.strip()) <= {"-", " "}):
        return f"<{len(cells)} cells>"
    return " ".join(cells)


def test_readme_has_the_two_setup_commands() -> None:
    assert len(SETUP) >= 2
    install, tests = SETUP[0], SETUP[1]
    assert "pip install" in install and "ocicache history fixtures/" in install
    # CI runs the README's test command (the same install and the same pytest call)
    ci = (ROOT / ".ci" / "run").read_text()
    for piece in (".venv/bin/pip install -q '.[test]'", ".venv/bin/python -m pytest -q"):
        assert piece in ci and piece in tests


def test_every_console_example_runs_as_shown(tmp_path: Path) -> None:
    assert BLOCKS
    work = tmp_path / "work"  # the examples' working directory: fixtures/ as a clean clone has it
    copy_tree(ROOT / "fixtures", work / "fixtures")
    scratch = tmp_path / "scratch"  # where the examples' /tmp/ocicache-* go
    scratch.mkdir()
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OCICACHE_NO_CACHE": "1", "XDG_CACHE_HOME": str(tmp_path / "xdg"),
           "PYTHONPATH": python_path}
    ran = 0
    for block in BLOCKS:
        for command, shown in _steps(block):
            real = command.replace("/tmp/ocicache-", f"{scratch}/ocicache-")
            if command.startswith("ocicache "):
                argv = [sys.executable, "-m", "ocicache", *shlex.split(real)[1:]]
                r = subprocess.run(argv, capture_output=True, text=True, cwd=work, env=env,
                                   timeout=120)
            else:
                r = subprocess.run(["bash", "-c", real], capture_output=True, text=True,
                                   cwd=work, env=env, timeout=120)
            assert r.returncode in (0, 1), (command, r.stderr)
            out = (r.stdout + r.stderr).replace(f"{scratch}/ocicache-", "/tmp/ocicache-")
            got = sorted(map(_normalise, out.rstrip().splitlines()))
            want = sorted(map(_normalise, shown))
            assert got == want, f"README example differs: $ {command}"
            ran += 1
    assert ran >= 15


def test_install_command_works_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", ".pytest_cache", ".hypothesis",
        ".mypy_cache", ".ruff_cache"))
    result = subprocess.run(SETUP[0], shell=True, cwd=src, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sha256:" in result.stdout and "latest" in result.stdout
