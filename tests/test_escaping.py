"""Names from DIR or the command line (tags, file names, REFs, specs, DIR itself) are printed
inert in every human-readable output: no control character reaches the terminal, no name can
forge a line (`error: ...` in `check`). JSON keeps the exact values."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from clirun import Run, run_inprocess

from ocicache.cli.textsafe import safe, safe_text
from ocicache.synth import Builder

FORGED = "error: forged"
# A newline that forges a line, a screen clear, an OSC title, a CR, C1 CSI, DEL, bidi, NUL.
EVIL = f"x\n{FORGED}\x1b[2J\x1b]0;pwned\x07\r\x9b31m\x7f\u202e\u2028y"
ONE_LINE = EVIL.replace("\n", "")  # what a single-line spec may hold
# In output: nothing of C0 but the newline, no DEL, no C1, no line separator, no bidi control.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def test_safe_escapes_every_control() -> None:
    assert safe("plain tag, µ and 日本") == "plain tag, µ and 日本"
    assert safe("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert safe("\x1b[2J\x00\x7f\x9b") == "\\x1b[2J\\x00\\x7f\\x9b"
    assert safe("\u202eevil\u2028") == "\\u202eevil\\u2028"
    assert safe(os.fsdecode(b"\xff\xfename")) == "\\xff\\xfename"  # undecodable bytes
    assert safe(safe(EVIL)) == safe(EVIL)  # idempotent: a backslash is left alone
    assert not UNSAFE.search(safe(EVIL)) and "\n" not in safe(EVIL)
    assert safe_text("one\x1b\ntwo") == "one\\x1b\ntwo"


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache (its own path hostile too) with a hostile tag on an older export, a blob file
    name and an ingest entry name holding controls and undecodable bytes."""
    root = tmp_path_factory.mktemp("esc") / f"dir{EVIL}"
    b = Builder(root)
    layers = [b.layer(f"l{i}") for i in range(3)]
    b.export(layers[:2], tag=EVIL)
    b.export(layers)
    sha = root / "blobs" / "sha256"
    (sha / f"name{EVIL}").write_bytes(b"stray")
    (sha / os.fsdecode(b"\xff\x1b[2J\x9b")).write_bytes(b"stray")
    ingest = root / "ingest" / f"ing{EVIL}"
    ingest.mkdir(parents=True)
    (ingest / "data").write_bytes(b"\0" * 10)
    return root


def _assert_inert(r: Run, what: str) -> None:
    text = r.out + r.err
    assert "internal error" not in text and "Traceback" not in text, f"{what}:\n{text}"
    bad = UNSAFE.search(text)
    assert bad is None, f"{what}: raw {bad.group()!r} in\n{text!r}"
    for line in text.splitlines():
        assert not line.startswith(FORGED), f"{what}: a forged line: {line!r}"


def _human_lines(d: str) -> list[tuple[str, ...]]:
    return [
        ("history", d),
        ("history", d, "--no-trunc"),
        ("show", d, "~1"),
        ("show", d),
        ("blobs", d),
        ("du", d),
        ("du", d, "--apparent-size"),
        ("check", d),
        ("check", d, "--quick"),
        ("gc", d, "--dry-run"),
        ("gc", d, "--dry-run", "--grace", "0"),
        ("gc", d, "--dry-run", "--keep-last", "1"),
        ("ref", d),
        ("ref", d, "~1"),
        ("ref", d, "--all"),
        ("ref", d, "~1", "--format", "buildx"),
        ("ref", d, "--format", "bake"),
        ("ref", d, "--format", "gha"),
        ("ref", d, "--format", "buildctl"),
        ("show", d, EVIL),
        ("show", d, "nosuch" + EVIL),
        ("ref", d, EVIL),
        ("ref", "--explain", f"type=local,src={d},tag={EVIL}"),
        ("ref", "--explain", f"type=local,{EVIL}=1,src={d}"),
        ("ref", "--explain", f"type=local,src={d},tag={ONE_LINE}"),
        ("ref", "--explain", f"type=local,{ONE_LINE}=1,src={d},digest=sha256:1234567"),
        ("history", d + "/missing" + EVIL),
        ("gc", d, "--keep", EVIL, "--dry-run"),
        ("unpin", d, EVIL),
        ("pin", d, EVIL, "x"),
    ]


def test_every_human_output_is_inert(evil: Path) -> None:
    for line in _human_lines(str(evil)):
        r = run_inprocess(*line)
        _assert_inert(r, " ".join(map(repr, line))[:200])
        assert r.code in (0, 1, 2, 3, 5, 6), (line, r.code, r.err)


def test_tags_stay_in_their_cell(evil: Path) -> None:
    r = run_inprocess("history", str(evil))
    rows = [x for x in r.out.splitlines() if not x.startswith("* ")]  # a footnote may follow
    assert len(rows) == 2 + 2  # header, rule, two exports: no name broke a line
    assert safe(EVIL) in r.out
    show = run_inprocess("show", str(evil), EVIL).out  # the tag as REF finds the export
    assert f"tags      {safe(EVIL)}" in show


def test_json_keeps_exact_values(evil: Path) -> None:
    doc = json.loads(run_inprocess("history", str(evil), "--json").out)
    assert [e["tags"] for e in doc["exports"]] == [["latest"], [EVIL]]
    assert doc["directory"] == str(evil)


def test_writers_and_repair_output_inert(evil: Path, tmp_path: Path) -> None:
    root = tmp_path / f"w{EVIL}"
    shutil.copytree(evil, root)
    for line in (
        ("pin", str(root), "~1", "kept"),
        ("unpin", str(root), "kept"),
        ("gc", str(root), "--grace", "0"),
    ):
        r = run_inprocess(*line)
        _assert_inert(r, line[0])
        assert r.code == 0, r.err
    # repair: a torn index.json whose first (readable) entry has the hostile tag
    data = (evil / "index.json").read_bytes()
    (root / "index.json").write_bytes(data[: data.index(b"}},") + 3])
    for line in (("repair", "--dry-run", str(root)), ("repair", str(root))):
        r = run_inprocess(*line)
        _assert_inert(r, " ".join(line[:2]))
        assert r.code == 0, r.err
        assert "keep    sha256:" in r.out + r.err
