"""Synthetic cache directories written the way BuildKit writes them, for tests and benchmarks.

Not used by the commands. Every file is content-addressed and written 0444 like BuildKit's,
index.json is compact JSON, and an export replaces its tag's entry and appends itself at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocicache.base.timefmt import format_rfc3339
from ocicache.format import mediatypes as mt
from ocicache.format.model import ANN_CREATED, ANN_REF_NAME, ANN_UNCOMPRESSED

GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
BASE_NS = 1_790_000_000_000_000_000  # 2026-09-21, a fixed epoch for deterministic layouts


def compact(doc: object) -> bytes:
    """JSON the way Go's encoding/json writes it (compact, no trailing newline)."""
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Builder:
    """Writes blobs, exports and index.json into `root`; `clock_ns` advances 1 s per write."""

    root: Path
    oci_layout: bool = True
    index_media_type: bool = True
    clock_ns: int = BASE_NS
    entries: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if self.oci_layout:
            self._write_file("oci-layout", compact({"imageLayoutVersion": "1.0.0"}))
        self.write_index()

    def tick(self, seconds: float = 1.0) -> int:
        self.clock_ns += int(seconds * 1e9)
        return self.clock_ns

    def _write_file(self, rel: str, data: bytes, mtime_ns: int | None = None) -> None:
        path = self.root / rel
        if path.exists():
            os.chmod(path, 0o644)
        path.write_bytes(data)
        if mtime_ns is not None:
            os.utime(path, ns=(mtime_ns, mtime_ns))

    def blob(self, data: bytes, mtime_ns: int | None = None) -> str:
        """Store `data` as a blob (never rewritten if present, like BuildKit); its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / "sha256" / digest[7:]
        if not path.exists():
            path.write_bytes(data)
            t = self.tick() if mtime_ns is None else mtime_ns
            os.utime(path, ns=(t, t))
            os.chmod(path, 0o444)
        return digest

    def layer(
        self, seed: str, size: int = 64, media_type: str = GZIP, created_ns: int | None = None
    ) -> dict[str, Any]:
        """A layer blob of `size` bytes (gzip magic first) and its descriptor."""
        body = hashlib.sha256(seed.encode()).digest()
        data = (b"\x1f\x8b" + body * (size // 32 + 1))[: max(size, 2)]
        created = self.tick(0.5) if created_ns is None else created_ns
        digest = self.blob(data)
        return {
            "mediaType": media_type,
            "digest": digest,
            "size": len(data),
            "annotations": {
                ANN_CREATED: _go_time(created),
                ANN_UNCOMPRESSED: "sha256:" + hashlib.sha256(seed.encode() + b"/diff").hexdigest(),
            },
        }

    def export(
        self,
        layers: list[dict[str, Any]],
        tag: str | None = "latest",
        shape: str = "A",
        parents: list[int] | None = None,
        mtime_ns: int | None = None,
    ) -> str:
        """Write a cache config and manifest for `layers` (a chain, root first unless `parents`
        gives each layer's parent index) and point `tag` at it (None: leave index.json alone)."""
        if parents is None:
            parents = [i - 1 for i in range(len(layers))]
        # BuildKit sorts the config's layers by digest; remap the parent indexes.
        order = sorted(range(len(layers)), key=lambda i: layers[i]["digest"])
        where = {old: new for new, old in enumerate(order)}
        config_layers = []
        for old in order:
            entry: dict[str, Any] = {"blob": layers[old]["digest"]}
            p = parents[old]
            new_parent = -1 if p == -1 else where[p]
            if new_parent != 0:  # a missing parent means 0 (FORMAT.md)
                entry["parent"] = new_parent
            config_layers.append(entry)
        records = [
            {
                "digest": "sha256:" + hashlib.sha256(f"rec{i}{x['digest']}".encode()).hexdigest(),
                "layers": [{"layer": where[i], "createdAt": x["annotations"][ANN_CREATED]}],
            }
            for i, x in enumerate(layers)
        ]
        config = compact({"layers": config_layers, "records": records})
        config_digest = self.blob(config)
        config_desc = {"mediaType": mt.CACHE_CONFIG, "digest": config_digest, "size": len(config)}
        sorted_layers = sorted(layers, key=lambda x: x["digest"])
        if shape == "A":
            doc: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config_desc,
                "layers": sorted_layers,
            }
            media_type = mt.OCI_MANIFEST
        else:
            media_type = mt.OCI_INDEX if shape == "B" else mt.DOCKER_LIST
            items = (
                sorted_layers if shape == "B" else [{**x, "mediaType": DOCKER_GZIP} for x in sorted_layers]
            )
            doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": [*items, config_desc]}
        data = compact(doc)
        digest = self.blob(data, mtime_ns)
        if tag is not None:
            self.point(tag, digest, len(data), media_type)
        return digest

    def point(
        self,
        tag: str,
        digest: str,
        size: int,
        media_type: str = mt.OCI_MANIFEST,
        extra_annotations: dict[str, str] | None = None,
    ) -> None:
        """BuildKit's index update: drop the entry with this ref name, append the new one."""
        self.entries = [e for e in self.entries if e.get("annotations", {}).get(ANN_REF_NAME) != tag]
        self.entries.append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "annotations": {ANN_REF_NAME: tag, **(extra_annotations or {})},
            }
        )
        self.write_index()

    def write_index(self) -> None:
        doc: dict[str, Any] = {"schemaVersion": 2}
        if self.index_media_type:
            doc["mediaType"] = mt.OCI_INDEX
        doc["manifests"] = self.entries
        self._write_file("index.json", compact(doc))

    def orphan(self, seed: str, size: int = 64) -> str:
        """A blob nothing references (like a layer of an interrupted export)."""
        body = hashlib.sha256(("orphan" + seed).encode()).digest()
        return self.blob((b"\x1f\x8b" + body * (size // 32 + 1))[: max(size, 2)])

    def ingest(self, name: str, data_size: int, total: int, mtime_ns: int | None = None) -> Path:
        """An interrupted write: ingest/<name>/{ref,data,startedat,updatedat,total}."""
        d = self.root / "ingest" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "ref").write_text("layer-sha256:" + hashlib.sha256(name.encode()).hexdigest())
        (d / "total").write_text(str(total))
        (d / "startedat").write_text(format_rfc3339(self.clock_ns))
        (d / "updatedat").write_text(format_rfc3339(self.clock_ns))
        (d / "data").write_bytes(b"\0" * data_size)
        t = self.clock_ns if mtime_ns is None else mtime_ns
        for f in d.iterdir():
            os.utime(f, ns=(t, t))
        return d


def _go_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, as Go writes it."""
    base = format_rfc3339(ns)[:19]
    return f"{base}.{ns % 1_000_000_000:09d}Z"


def history_dir(
    root: Path,
    exports: int,
    layers: int,
    orphans: int = 0,
    tags: tuple[str, ...] = ("latest",),
    shared: int = 1,
) -> Builder:
    """A directory of `exports` exports of `layers` layers each: the first `shared` layers are
    common to all (like a base image), the rest new per export; tags cycle through `tags`."""
    b = Builder(root)
    base = [b.layer(f"base{i}") for i in range(min(shared, layers))]
    for e in range(exports):
        own = [b.layer(f"e{e}l{i}") for i in range(layers - len(base))]
        b.export(base + own, tag=tags[e % len(tags)])
    for o in range(orphans):
        b.orphan(str(o))
    return b
