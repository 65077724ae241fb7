"""The kept reads are stamped from the code and schemas that made them, not a hand-bumped number."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import ocicache
from ocicache.store import cache

PACKAGE = Path(ocicache.__file__).parent
SCHEMAS = PACKAGE.parent / "schemas"


def _stamp_of(root: Path) -> str:
    code = "from ocicache.store.cache import read_stamp; print(read_stamp())"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(PACKAGE, root / "ocicache", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SCHEMAS, root / "schemas")
    return root


def test_the_stamp_names_the_version_and_a_hash() -> None:
    s = cache.read_stamp()
    assert s.startswith(f"ocicache-read/{ocicache.__version__}/py")
    assert len(s.rsplit("/", 1)[1]) == 64


def test_a_change_to_a_schema_or_to_the_code_changes_the_stamp(tmp_path: Path) -> None:
    root = _checkout(tmp_path)
    first = _stamp_of(root)
    assert first == _stamp_of(root)  # deterministic
    schema = next(root.glob("schemas/*.json"))
    schema.write_text(schema.read_text() + "\n")
    second = _stamp_of(root)
    assert second != first
    docs = root / "ocicache/format/documents.py"
    docs.write_text(docs.read_text() + "\n# changed\n")
    third = _stamp_of(root)
    assert third not in (first, second)
    exports = root / "ocicache/core/exports.py"  # a kept read holds the exports too
    exports.write_text(exports.read_text() + "\n# changed\n")
    assert _stamp_of(root) not in (first, second, third)
