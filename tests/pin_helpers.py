"""Helpers shared by test_ref.py and test_pin.py: run the CLI in-process, copy fixtures."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from conftest import copy_tree

from ocicache.cli import app as cli

FIXTURES = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `ocicache ARGS` through the real entry point (error boundary included)."""
    with mock.patch.object(sys, "argv", ["ocicache", *args]):
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            gc.enable()  # main turns the cyclic GC off for its short-lived process
    out, err = capsys.readouterr()
    return code, out, err


def copy_case(case: str, dest: Path) -> Path:
    """A writable copy of a fixture (never modify fixtures/ in place)."""
    copy_tree(FIXTURES / case, dest)
    return dest


def groundtruth(case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{case}.groundtruth.json").read_text())
    return data
