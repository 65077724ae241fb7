"""Every command in README.md works: the set-up command in a fresh venv, every example as shown."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from conftest import ROOT, run_cli

README = (ROOT / "README.md").read_text()
SETUP = re.findall(r"```sh\n(.*?)\n```", README, re.S)
EXAMPLES = re.findall(r"```console\n\$ (ocicache [^\n]*)\n(.*?)\n```", README, re.S)


def test_readme_has_the_two_setup_commands() -> None:
    assert len(SETUP) >= 2
    install, tests = SETUP[0], SETUP[1]
    assert "pip install" in install and "ocicache history fixtures/" in install
    assert "pytest" in tests
    # CI runs the README's test command (the same install and the same pytest call)
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pip install -q '.[test]'" in ci and ".venv/bin/python -m pytest -q" in ci
    assert ".venv/bin/pip install -q '.[test]'" in tests and ".venv/bin/python -m pytest -q" in tests


def test_every_console_example_runs_and_matches_its_shape() -> None:
    assert EXAMPLES
    for command, shown in EXAMPLES:
        args = shlex.split(command)[1:]
        expect_fail = "# exit" in command
        result = run_cli(*args)
        if not expect_fail:
            assert result.returncode == 0, (command, result.stderr)
        out = (result.stdout + result.stderr).rstrip().splitlines()
        shown_lines = shown.rstrip().splitlines()
        # Relative times change from day to day; the first line and the number of lines do not.
        assert out[0].split() == shown_lines[0].split(), command
        assert len(out) == len(shown_lines), command


def test_install_command_works_in_a_fresh_venv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", ".pytest_cache", ".hypothesis",
        ".mypy_cache", ".ruff_cache"))
    result = subprocess.run(SETUP[0], shell=True, cwd=src, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sha256:" in result.stdout and "latest" in result.stdout
