"""Every command in README.md works: the set-up command in a fresh venv, every example as shown.

Console blocks are run line by line (`$ ocicache ...` through `python -m ocicache`, other lines
through bash) in a scratch folder holding a copy of fixtures/ (so that where and how the
repository was cloned cannot matter: modes as with umask 022, see conftest.copy_tree), with
/tmp/ocicache-* paths moved into a folder of the test's own. The output must be the lines shown,
in the order shown. What legitimately varies is normalised, never the order: a relative time
("2 hours ago", "an hour ago": it depends on when the checkout was made and the test runs)
becomes one placeholder, and with it the column widths that follow the longest cell (cells are
compared, not the spaces between them; a table rule by its number of cells).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, copy_tree

README = (ROOT / "README.md").read_text()
SETUP = re.findall(r"```sh\n(.*?)\n```", README, re.S)
BLOCKS = re.findall(r"```console\n(.*?)\n```", README, re.S)
# What humanize.naturaltime prints (render.py): "now", "a second ago", "12 minutes ago",
# "an hour ago", "1 year, 2 months ago", "3 days from now".
_AMOUNT = r"(?:an?|\d+) (?:second|minute|hour|day|month|year)s?"
RELATIVE_TIME = re.compile(rf"\b(?:{_AMOUNT}(?:, {_AMOUNT})? (?:ago|from now)|now)\b")


def _steps(block: str) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    return steps


def _normalise(line: str) -> str:
    """A relative time becomes `<time>`; column widths follow the longest cell (a relative
    time), so cells are compared, not the spaces between them, and a table rule by its number
    of cells."""
    cells = RELATIVE_TIME.sub("<time>", line).split()
    if cells and set(line.strip()) <= {"-", " "}:
        return f"<rule of {len(cells)} cells>"
    return " ".join(cells)


def test_readme_has_the_two_setup_commands() -> None:
    assert len(SETUP) >= 2
    install, tests = SETUP[0], SETUP[1]
    assert "pip install" in install and "ocicache history fixtures/" in install
    # CI runs the README's test command (the same install and the same pytest call)
    ci = (ROOT / ".ci" / "run").read_text()
    for piece in (".venv/bin/pip install -q '.[test]'", ".venv/bin/python -m pytest -q -n auto"):
        assert piece in ci and piece in tests


def test_every_console_example_runs_as_shown(tmp_path: Path) -> None:
    assert BLOCKS
    work = tmp_path / "work"  # the examples' working directory: fixtures/ as a clean clone has it
    copy_tree(ROOT / "fixtures", work / "fixtures")
    scratch = tmp_path / "scratch"  # where the examples' /tmp/ocicache-* go
    scratch.mkdir()
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    # stdout and stderr in one pipe, unbuffered: the lines in the order a terminal shows them
    env = {
        **os.environ,
        "OCICACHE_NO_CACHE": "1",
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": python_path,
        "PYTHONUNBUFFERED": "1",
    }
    try:
        _run_blocks(work, scratch, env)
    finally:  # a registry an example started (fixtures/registry/serve.sh) is stopped
        for pid in scratch.glob("ocicache-*/pid"):
            subprocess.run(["kill", pid.read_text().strip()], capture_output=True)


def _run_blocks(work: Path, scratch: Path, env: dict[str, str]) -> None:
    ran = 0
    for block in BLOCKS:
        if "serve.sh" in block and shutil.which("docker-registry") is None:
            continue  # the registry example needs Debian's docker-registry (.ci/run installs it)
        for command, shown in _steps(block):
            real = command.replace("/tmp/ocicache-", f"{scratch}/ocicache-")
            if command.startswith("ocicache "):
                argv = [sys.executable, "-m", "ocicache", *shlex.split(real)[1:]]
            else:
                argv = ["bash", "-c", real]
            r = subprocess.run(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=work,
                env=env,
                timeout=120,
            )
            assert r.returncode in (0, 1), (command, r.stdout)
            out = r.stdout.replace(f"{scratch}/ocicache-", "/tmp/ocicache-")
            got = [_normalise(line) for line in out.rstrip().splitlines()]
            want = [_normalise(line) for line in shown]
            assert got == want, f"README example differs: $ {command}"
            ran += 1
    assert ran >= 15


@pytest.mark.slow
def test_install_command_works_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".venv",
            ".git",
            "__pycache__",
            "*.egg-info",
            "build",
            ".pytest_cache",
            ".hypothesis",
            ".mypy_cache",
            ".ruff_cache",
        ),
    )
    result = subprocess.run(SETUP[0], shell=True, cwd=src, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sha256:" in result.stdout and "latest" in result.stdout


def test_normalising_keeps_everything_but_the_relative_time() -> None:
    """Every relative time humanize prints is one placeholder; nothing else is dropped."""
    import datetime as dt

    import humanize

    now = dt.datetime(2026, 12, 1, 12, 0, 0)
    for seconds in (
        0,
        1,
        30,
        60,
        90,
        720,
        3600,
        7200,
        86400,
        3 * 86400,
        40 * 86400,
        400 * 86400,
        3 * 365 * 86400,
        -3600,
        -3 * 86400,
    ):
        phrase = humanize.naturaltime(now - dt.timedelta(seconds=seconds), when=now)
        assert RELATIVE_TIME.fullmatch(phrase), phrase
        assert _normalise(f"~0  sha256:8519b1afbe7b  {phrase} *  7") == "~0 sha256:8519b1afbe7b <time> * 7"
    assert _normalise("~1  sha256:8107a79ea7b2  alpha") != _normalise("~1  sha256:8107a79ea7b3  alpha")
    assert _normalise("-----  ---") == _normalise("---  -------") != _normalise("---")
