"""The smaller UX contract: usage errors in ocicache's own format, plain usage lines, a bounded
TAGS cell, gc --quiet, a hint that names `unpin`, and du/gc counting what files take on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from clirun import REPO, Run, run_inprocess
from conftest import FIXTURES, copy_tree

from ocicache.format.model import ANN_REF_NAME
from ocicache.format.schema import validate
from ocicache.store.layout import Layout
from ocicache.store.listing import Listing
from ocicache.synth import Builder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return copy_tree(FIXTURES / "f-tags", tmp_path / "f-tags")


# -- usage errors ------------------------------------------------------------------------------
BAD_LINES = [
    ("history", "DIR", "--bogus"),
    ("history",),
    ("history", "DIR", "extra"),
    ("bogus",),
    ("gc", "DIR", "--keep-last", "x"),
    ("gc", "DIR", "--keep-last", "-1"),
    ("gc", "DIR", "-z"),
    ("gc", "DIR", "--grace"),
    ("check", "DIR", "-j", "-3"),
    ("show",),
    ("pin", "DIR", "~0"),
    ("unpin", "DIR"),
    ("ref", "DIR", "--format", "nope"),
    ("du", "DIR", "--no-such"),
    ("--no-such-global",),
    ("gc", "DIR", "--quiet", "--json"),
    ("repair",),
]


@pytest.mark.parametrize("line", BAD_LINES, ids=" ".join)
def test_usage_errors_are_ocicache_errors(cache: Path, line: tuple[str, ...]) -> None:
    args = [str(cache) if a == "DIR" else a for a in line]
    r = run_inprocess(*args)
    assert r.code == 2, (line, r.code, r.err)
    assert r.out == ""
    first = r.err.splitlines()[0]
    assert first.startswith("ocicache: error: "), r.err
    for click_style in ("Usage:", "Try '", "\nError:", "Error: "):
        assert click_style not in r.err, r.err
    assert all(x.startswith(("ocicache: error: ", "hint: ")) for x in r.err.splitlines())


def test_usage_error_in_a_real_process(cache: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run(
        [sys.executable, "-m", "ocicache", "gc", str(cache), "--keep-last", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("ocicache: error: Invalid value for '--keep-last'"), p.stderr
    assert p.stderr.splitlines()[-1] == "hint: `ocicache gc --help` shows the usage"


def test_no_arguments_prints_the_help_on_stderr() -> None:
    r = run_inprocess()
    assert r.code == 2 and r.out == "" and r.err.startswith("Usage: ocicache [OPTIONS] COMMAND")


COMMANDS = ["history", "show", "blobs", "du", "gc", "ref", "pin", "unpin", "check", "repair"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_arguments_plainly(command: str) -> None:
    r = run_inprocess(command, "--help")
    assert r.code == 0, r.err
    usage = r.out.splitlines()[0]
    assert usage.startswith(f"Usage: ocicache {command} [OPTIONS]"), usage
    assert "{" not in r.out and "directory" not in usage
    assert "DIR" in usage
    want = {"show": "DIR [REF]", "ref": "[DIR] [REF]", "pin": "DIR REF NAME", "unpin": "DIR NAME"}.get(
        command, "DIR"
    )
    assert usage.endswith(want), usage


# -- the TAGS cell -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_tags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export that 10,000 index.json entries tag (and an older one nothing tags)."""
    root = tmp_path_factory.mktemp("tags") / "cache"
    b = Builder(root)
    layers = [b.layer(f"l{i}") for i in range(2)]
    b.export(layers[:1], tag=None)
    b.export(layers, tag="t00000")
    entry = b.entries[0]
    b.entries = [{**entry, "annotations": {ANN_REF_NAME: f"t{i:05d}"}} for i in range(10_000)]
    b.write_index()
    return root


def test_tags_cell_is_bounded(many_tags: Path) -> None:
    r = run_inprocess("history", str(many_tags))
    assert r.code == 0, r.err
    assert max(map(len, r.out.splitlines())) < 200
    assert "t00000, t00001, t00002, +9997 more" in r.out
    gc = run_inprocess("gc", str(many_tags), "--dry-run")
    assert max(map(len, gc.out.splitlines())) < 200 and "+9997 more" in gc.out
    full = run_inprocess("history", str(many_tags), "--no-trunc")
    assert "t09999" in full.out and "more" not in full.out
    doc = json.loads(run_inprocess("history", str(many_tags), "--json").out)
    assert len(doc["exports"][0]["tags"]) == 10_000
    show = run_inprocess("show", str(many_tags)).out
    assert max(map(len, show.splitlines())) < 200 and "+9990 more" in show


# -- gc --quiet ----------------------------------------------------------------------------------
def test_gc_quiet(tmp_path: Path) -> None:
    root = copy_tree(FIXTURES / "k-interrupted-export", tmp_path / "k")
    (root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"x")  # a warning, normally
    loud = run_inprocess("gc", str(root), "--dry-run", "--grace", "0")
    assert "warning" in loud.err and loud.out
    r = run_inprocess("gc", str(root), "--quiet", "--grace", "0")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert not (root / "ingest").exists() or not any((root / "ingest").iterdir())
    again = run_inprocess("gc", str(root), "-q", "--grace", "0", "--dry-run")
    assert (again.code, again.out, again.err) == (0, "", "")
    broken = copy_tree(FIXTURES / "f-tags", tmp_path / "torn")
    (broken / "index.json").write_text("{torn")
    refused = run_inprocess("gc", str(broken), "--quiet")
    assert refused.code == 6 and refused.err.startswith("ocicache: error: ")  # errors still say
    assert "--quiet" in run_inprocess("gc", "--help").out


# -- a missing manifest: the hint names unpin ----------------------------------------------------
def test_missing_manifest_hint_names_unpin(cache: Path) -> None:
    index = json.loads((cache / "index.json").read_text())
    entry = index["manifests"][0]
    tag, digest = entry["annotations"][ANN_REF_NAME], entry["digest"]
    (cache / "blobs" / "sha256" / digest[7:]).unlink()
    hint = f"re-export, or `ocicache unpin {cache} {tag} --force` to remove the entry"
    gc = run_inprocess("gc", str(cache), "--dry-run")
    assert gc.code == 6 and f"hint: {hint}" in gc.err.splitlines(), gc.err
    check = run_inprocess("check", "--quick", str(cache))
    assert hint in check.out
    history = run_inprocess("history", str(cache))
    assert hint in history.err
    ref = run_inprocess("ref", str(cache), tag)
    assert ref.code == 6 and f"hint: {hint}" in ref.err.splitlines()
    # following the hint works: gc runs again
    assert run_inprocess("unpin", str(cache), tag, "--force").code == 0
    assert run_inprocess("gc", str(cache), "--dry-run").code == 0


# -- du and gc: what the files take on disk ------------------------------------------------------
def _sparse_ok(path: Path) -> bool:
    with open(path, "wb") as f:
        f.truncate(1 << 30)
    return path.stat().st_blocks * 512 < (1 << 20)


def _categories(r: Run) -> dict[str, dict[str, int]]:
    doc = json.loads(r.out)
    assert validate(doc, "du") == []
    return {c["category"]: c for c in doc["categories"]} | {"total": doc["total"]}


def test_du_counts_allocated_blocks_and_each_inode_once(tmp_path: Path) -> None:
    root = copy_tree(FIXTURES / "k-interrupted-export", tmp_path / "k")
    data = next((root / "ingest").iterdir()) / "data"
    if not _sparse_ok(tmp_path / "probe"):
        pytest.skip("this filesystem has no sparse files")
    data.unlink()
    with open(data, "wb") as f:
        f.truncate(1 << 30)  # an interrupted 1 GiB write that wrote nothing: sparse
    blob = max((root / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    os.link(blob, root / "blobs" / "sha256" / "hard-link-of-a-blob")  # a stray, same inode
    before = _categories(run_inprocess("du", "--json", str(root)))
    for attempt in ("first", "again"):  # with the blob facts the runs before kept
        cats = _categories(run_inprocess("du", "--json", str(root)))
        assert cats == before, attempt
    ingest, stray, index = before["ingest"], before["stray"], before["index"]
    assert ingest["bytes"] >= 1 << 30 and ingest["allocatedBytes"] < 1 << 20
    assert stray["files"] == 1 and stray["bytes"] == blob.stat().st_size
    assert stray["allocatedBytes"] == 0  # its inode is already counted as the blob
    assert index["allocatedBytes"] >= blob.stat().st_blocks * 512
    assert before["total"]["allocatedBytes"] == sum(
        c["allocatedBytes"] for k, c in before.items() if k != "total"
    )
    table = run_inprocess("du", str(root)).out
    assert "ON DISK" in table.splitlines()[0]
    assert "ON DISK" not in run_inprocess("du", "--apparent-size", str(root)).out


def test_gc_freed_counts_disk_space_given_back(tmp_path: Path) -> None:
    if not _sparse_ok(tmp_path / "probe"):
        pytest.skip("this filesystem has no sparse files")
    root = copy_tree(FIXTURES / "a-history-min", tmp_path / "a")
    elsewhere = tmp_path / "backup"  # a `cp -al` copy of the blobs: deleting frees nothing
    elsewhere.mkdir()
    for blob in (root / "blobs" / "sha256").iterdir():
        os.link(blob, elsewhere / blob.name)
    entry = root / "ingest" / ("a" * 64)  # an interrupted 1 GiB write that wrote nothing
    entry.mkdir(parents=True)
    (entry / "total").write_text(str(1 << 30))
    with open(entry / "data", "wb") as f:
        f.truncate(1 << 30)
    args = ("gc", str(root), "--keep-last", "1", "--grace", "0")
    dry = json.loads(run_inprocess(*args, "--dry-run", "--json").out)
    assert validate(dry, "gc") == []
    assert dry["freedBytes"] >= 1 << 30
    assert dry["freedAllocatedBytes"] < 1 << 20  # hard-linked blobs: 0; the sparse file: ~0
    text = run_inprocess(*args, "--dry-run").out
    assert " on disk); " in text
    real = json.loads(run_inprocess(*args, "--json").out)
    assert real["freedAllocatedBytes"] < 1 << 20 and real["freedBytes"] == dry["freedBytes"]
    shutil.rmtree(elsewhere)


@pytest.mark.alone  # (the listing forks only in a process without other threads)
def test_listing_gives_the_same_blocks_and_links(tmp_path: Path) -> None:
    root = copy_tree(FIXTURES / "f-tags", tmp_path / "f")
    blobs = sorted((root / "blobs" / "sha256").iterdir())
    os.link(blobs[0], tmp_path / "outside")
    os.link(blobs[1], root / "blobs" / "sha256" / "dup")
    with Layout(root) as layout:
        plain = layout.scan_blobs()
    with Layout(root) as layout:
        listed = layout.scan_from_columns(Listing(str(root)).take() or b"")
    assert listed == plain
    linked = [b for b in plain.blobs.values() if b.links > 1]
    assert {b.name for b in linked} == {blobs[0].name, blobs[1].name}
    assert all(b.inode for b in linked) and all(b.allocated > 0 for b in plain.blobs.values())


@pytest.mark.parametrize("command", ["show", "ref", "pin", "diff"])
def test_a_ref_the_shell_expanded_says_to_quote_it(cache: Path, command: str) -> None:
    """bash and zsh turn an unquoted `~0` into the current directory (and `~N` into an entry
    of `dirs`): ocicache gets a path, which no tag or digest can be, and its hint says to quote
    it; a REF that is only unknown keeps the usual hint."""
    expanded = os.getcwd()
    extra = {"pin": ["keep"], "diff": ["~0"]}.get(command, [])
    r = run_inprocess(command, str(cache), expanded, *extra)
    assert r.code == 5, (r.code, r.err)
    assert f"ocicache: error: {expanded}: no export with this tag or digest" in r.err
    assert "hint: no tag or digest starts with `/`: if you typed ~N, your shell expanded it" in r.err
    assert "quote it: '~N'" in r.err
    plain = run_inprocess(command, str(cache), "no-such-tag", *extra)
    assert plain.code == 5
    assert (
        plain.err.splitlines()[-1] == "hint: REF is a tag, a digest, a digest prefix of 7+ hex digits, or ~N"
    )
