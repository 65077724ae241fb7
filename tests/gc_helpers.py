"""Shared helpers for the gc tests: invariants, fixture copies with their real mtimes, the CLI."""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Any

from conftest import copy_tree

from ocicache import api
from ocicache.cli.render import export_json

FIXTURES = Path(__file__).parent.parent / "fixtures" / "buildkit-v0.32.2"
FIXTURE_NAMES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
# History fields that do not depend on which other exports share a blob or where it sits.
# (Not mtimeRejected: when gc leaves one export of a copied batch, the same evidence gets
# another name, copied-alone.)
STABLE = (
    "digest",
    "shape",
    "mediaType",
    "tags",
    "pins",
    "current",
    "created",
    "createdFrom",
    "mtime",
    "newestStep",
    "layers",
    "size",
    "missingBytes",
    "manifestSize",
    "config",
    "configSize",
    "records",
    "complete",
    "missing",
    "wrongSize",
    "problems",
)


def copy_fixture(name: str, dest: Path) -> tuple[Path, int]:
    """A copy of a real fixture with BuildKit's mtimes restored; (dir, newest mtime)."""
    target = dest / name
    copy_tree(FIXTURES / name, target)
    truth = json.loads((FIXTURES / f"{name}.groundtruth.json").read_text())
    newest = 0
    for blob in truth["final"]["blobs_on_disk"]:
        path = target / "blobs" / "sha256" / blob["digest"].split(":", 1)[1]
        if path.exists():
            os.utime(path, ns=(blob["mtime_ns"], blob["mtime_ns"]))
            newest = max(newest, blob["mtime_ns"])
    for entry in sorted(truth["final"].get("ingest", []), key=lambda e: -len(e["path"])):
        path = target / entry["path"]
        if path.exists():
            os.utime(path, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            newest = max(newest, entry["mtime_ns"])
    return target, newest


def stable_history(root: Path, digests: set[str] | None = None) -> dict[str, dict[str, Any]]:
    snap = api.history(root)
    out = {}
    for i, e in enumerate(snap.exports):
        if digests is None or e.digest in digests:
            doc = export_json(e, i)
            out[e.digest] = {k: doc[k] for k in STABLE}
    return out


def blob_names(root: Path) -> set[str]:
    d = root / "blobs" / "sha256"
    return {p.name for p in d.iterdir()} if d.exists() else set()


def assert_consistent(root: Path) -> None:
    """The gc invariant: DIR reads cleanly; every manifest on disk references only present
    blobs (so every export is complete); every index.json export is complete."""
    snap = api.history(root)
    for e in snap.exports:
        assert e.complete, (e.digest, e.missing, e.problems)
    for digest in snap.inventory.foreign_closure:
        assert digest in snap.inventory.blobs, digest


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    """Run `ocicache ARGS` through the real entry point; (exit code, stdout, stderr)."""
    from ocicache.cli import app as cli_module

    old = sys.argv
    sys.argv = ["ocicache", *args]
    try:
        try:
            cli_module.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
        gc.enable()  # main turns the cyclic GC off for its short-lived process
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def drop_from_index(root: Path, digest: str) -> bytes:
    """Remove `digest`'s index.json entries, so that gc may drop that export (what UNIQUE
    supposes); returns the old bytes. index.json is never left empty: a small foreign image
    that shares nothing takes the entries' place."""
    from ocicache.format import mediatypes as mt
    from ocicache.synth import compact

    path = root / "index.json"
    old = path.read_bytes()
    doc = json.loads(old)
    doc["manifests"] = [m for m in doc["manifests"] if m["digest"] != digest]
    if not doc["manifests"]:
        config = compact({"architecture": "amd64", "os": "linux", "placeholder": True})
        image = compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "layers": [],
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": _put(root, config),
                    "size": len(config),
                },
            }
        )
        doc["manifests"] = [
            {
                "mediaType": mt.OCI_MANIFEST,
                "digest": _put(root, image),
                "size": len(image),
                "annotations": {"org.opencontainers.image.ref.name": "image"},
            }
        ]
    path.write_bytes(json.dumps(doc).encode())
    return old


def _put(root: Path, data: bytes) -> str:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest
