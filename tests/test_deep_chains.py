"""Deep user data never meets Python's recursion limit: a cache config whose layer chain is
3,000 deep and a chain of 3,000 nested image indexes (three times the default recursion limit),
through every command, run after run (the second with the blob facts the first kept). Every
walk over user data is iterative."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clirun import Run, run_inprocess

from ocicache import api
from ocicache.core.gc_plan import _depths
from ocicache.format import mediatypes as mt
from ocicache.synth import Builder, compact

DEPTH = 3 * sys.getrecursionlimit()  # 3,000: a recursive walk fails a third of the way


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One export whose DEPTH layers form one chain (each the parent of the next), a layer
    near the root missing, and an older 2-layer export that gc drops."""
    root = tmp_path_factory.mktemp("deep") / "cache"
    b = Builder(root)
    layers = [b.layer(f"l{i}") for i in range(DEPTH)]
    b.export(layers[:2], tag=None)
    b.export(layers)
    (root / "blobs" / "sha256" / layers[3]["digest"][7:]).unlink()
    return root


def _nested(b: Builder, seed: str, depth: int, layer: dict[str, object]) -> tuple[str, int]:
    """An image manifest under `depth` nested OCI indexes; the top index's digest and size."""
    config = compact({"seed": seed})
    manifest = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": b.blob(config),
                "size": len(config),
            },
            "layers": [layer],
        }
    )
    digest, size, media_type = b.blob(manifest), len(manifest), mt.OCI_MANIFEST
    for _ in range(depth):
        index = compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_INDEX,
                "manifests": [{"mediaType": media_type, "digest": digest, "size": size}],
            }
        )
        digest, size, media_type = b.blob(index), len(index), mt.OCI_INDEX
    return digest, size


@pytest.fixture(scope="module")
def nested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache export, a DEPTH-deep chain of indexes index.json names, and another such chain
    nothing references (gc deletes it: each index before the one it references)."""
    root = tmp_path_factory.mktemp("nested") / "cache"
    b = Builder(root)
    layers = [b.layer(f"l{i}") for i in range(3)]
    b.export(layers)
    top, size = _nested(b, "kept", DEPTH, layers[0])
    b.entries.append(
        {
            "mediaType": mt.OCI_INDEX,
            "digest": top,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "image"},
        }
    )
    b.write_index()
    _nested(b, "dropped", DEPTH, layers[1])
    return root


READS = [
    ("history", "--json"),
    ("show",),
    ("show", "--json"),
    ("blobs",),
    ("du",),
    ("check", "--quick"),
    ("check",),
    ("gc", "--dry-run", "--grace", "0"),
    ("ref", "--all"),
]


def _runs(root: Path, line: tuple[str, ...]) -> Iterator[tuple[str, Run]]:
    args = (line[0], str(root), *line[1:])
    yield "first", run_inprocess(*args, timeout=120)
    yield "again", run_inprocess(*args, timeout=120)


def _clean(r: Run, what: str) -> None:
    assert "RecursionError" not in r.err and "internal error" not in r.err, f"{what}: {r.err}"
    assert r.code in (0, 1), f"{what}: exit {r.code}: {r.err}"


@pytest.mark.parametrize("line", READS, ids=" ".join)
def test_deep_layer_chain_every_read(deep: Path, line: tuple[str, ...]) -> None:
    for start, r in _runs(deep, line):
        _clean(r, f"{start}: {' '.join(line)}")


@pytest.mark.parametrize("line", READS, ids=" ".join)
def test_nested_indexes_every_read(nested: Path, line: tuple[str, ...]) -> None:
    for start, r in _runs(nested, line):
        _clean(r, f"{start}: {' '.join(line)}")


def test_deep_stack_order_and_depths(deep: Path) -> None:
    r = run_inprocess("show", str(deep), "--json", timeout=120)
    assert r.code == 0, r.err
    stack = json.loads(r.out)["export"]["stack"]
    placed = [x for x in stack if x["index"] >= 0]
    assert len(placed) == DEPTH
    assert [x["depth"] for x in placed] == list(range(DEPTH))  # one chain, root first
    seen: set[int] = set()
    for x in placed:  # every parent before its child
        assert x["parent"] == -1 or x["parent"] in seen
        seen.add(x["index"])
    text = run_inprocess("show", str(deep), timeout=120).out
    # the indent stays bounded: the depth is written as a number past a few levels
    assert max(len(line) for line in text.splitlines()) < 300
    assert f"(depth {DEPTH - 1}) " in text


def test_deep_check_names_every_step_built_on_the_missing_layer(deep: Path) -> None:
    r = run_inprocess("check", "--quick", "--json", str(deep), timeout=120)
    assert r.code == 1, r.err
    missing = [f for f in json.loads(r.out)["findings"] if f["code"] == "missing-blob"]
    assert len(missing) == 1
    # layers 3..DEPTH-1 of the chain rebuild (the missing one is not the root)
    assert len(missing[0]["steps"]) == DEPTH - 3
    assert {s["effect"] for s in missing[0]["steps"]} == {"rebuild"}


def test_real_gc_on_deep_data(deep: Path, nested: Path, tmp_path: Path) -> None:
    for name, src in (("deep", deep), ("nested", nested)):
        root = tmp_path / name
        shutil.copytree(src, root)
        r = run_inprocess("gc", str(root), "--grace", "0", "--json", timeout=120)
        _clean(r, f"gc {name}")
        assert r.code == 0
        doc = json.loads(r.out)
        if name == "nested":
            # the dropped chain: each index deleted before the one it references
            order = [b["digest"] for b in doc["blobs"] if b["kind"] == "manifest"]
            assert len(order) == DEPTH + 1
            position = {d: i for i, d in enumerate(order)}
            inv = api.read(src).inventory
            for d in order:
                for child in inv.foreign[d].children if d in inv.foreign else ():
                    if child.digest in position:
                        assert position[d] < position[child.digest]
        h = run_inprocess("history", str(root), timeout=120)
        assert h.code == 0, h.err


def test_pin_and_unpin_deep(deep: Path, tmp_path: Path) -> None:
    root = tmp_path / "c"
    shutil.copytree(deep, root)
    for args in (("pin", str(root), "~1", "keep"), ("unpin", str(root), "keep")):
        r = run_inprocess(*args, timeout=120)
        _clean(r, " ".join(args))
        assert r.code == 0, r.err


def test_chain_depths_iterative_and_loop_safe() -> None:
    """gc's deletion order: the longest chain of doomed parents above each manifest, without
    recursion (far past the recursion limit) and without looping on a forged cycle."""
    n = sys.getrecursionlimit() * 5
    nodes = [f"m{i:06d}" for i in range(n)]
    parents = {nodes[i]: [nodes[i - 1]] for i in range(1, n)}  # m0 references m1 ...
    depth = _depths(parents, nodes)
    assert [depth[x] for x in nodes[:3]] == [0, 1, 2] and depth[nodes[-1]] == n - 1
    loop = {"a": ["c"], "b": ["a"], "c": ["b"], "d": ["a", "c"]}
    got = _depths(loop, ["a", "b", "c", "d"])
    assert set(got) == {"a", "b", "c", "d"} and all(v >= 0 for v in got.values())
    diamond = {"b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d", "a"]}
    assert _depths(diamond, list("abcde")) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 3}
