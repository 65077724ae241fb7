"""Fast, deterministic generator of big BuildKit-shaped cache directories for the benchmark.

Writes the files directly (no synth.Builder: it re-checks and re-indexes per blob, too slow at
50k blobs). What it writes is what BuildKit v0.21+ writes by default (FORMAT.md, shape A):
compact-JSON image manifests whose config is a cache config, layer descriptors with
`buildkit/createdat` and `containerd.io/uncompressed`, cache configs with parent links (a
missing `parent` means 0) and one record per layer, blobs mode 0444 whose mtimes follow the
export sequence (layers, then the config, then the manifest), and index.json naming the
newest export of each tag.

Layers are shared between consecutive exports like a cache that is rebuilt over time: export
e uses the window of layer ids [e*new, e*new + layers), so each export adds `new` layers and
reuses the rest. Orphans are small gzip-looking blobs nothing references (interrupted
exports). Every blob is small (64-512 bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
BASE_S = 1_790_000_000  # 2026-09-21, fixed epoch: the directory is the same on every run
TAGS = ("latest", "main", "pr")


@dataclass(frozen=True)
class Shape:
    """How big a directory is: exports x layers (with `new` fresh layers each) + orphans."""

    exports: int
    layers: int
    new: int
    orphans: int

    @property
    def distinct_layers(self) -> int:
        return (self.exports - 1) * self.new + self.layers if self.exports else 0

    @property
    def blobs(self) -> int:
        return self.distinct_layers + 2 * self.exports + self.orphans

    def describe(self) -> str:
        return (
            f"{self.exports} exports x {self.layers} layers ({self.new} new per export, "
            f"{self.distinct_layers} distinct) + {self.exports} manifests + "
            f"{self.exports} configs + {self.orphans} orphans = {self.blobs} blobs"
        )


FULL_BLOBS = 50_700  # the shape: 300 exports x 200 layers + 20k orphans


def shape_for(blobs: int) -> Shape:
    """The issue's shape (300 exports x 200 layers, 100 new per export, + 20k orphans: 30,100
    distinct layers + 300 manifests + 300 configs + 20,000 orphans = 50,700 blobs) scaled to
    about `blobs` blobs (exports and orphans scale, 200 layers per export always)."""
    f = blobs / FULL_BLOBS
    exports = max(1, round(300 * f))
    orphans = round(20_000 * f)
    return Shape(exports, layers=200, new=100, orphans=orphans)


def _compact(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _layer_bytes(seed: int, salt: bytes, size: int | None = None) -> bytes:
    """Gzip magic then pseudo-random bytes (seeded: the same on every run); 64-512 bytes long
    unless `size` is given."""
    h = hashlib.sha256(salt + seed.to_bytes(8, "big")).digest()
    if size is None:
        size = 64 + (h[0] * 256 + h[1]) % 449  # 64..512
    return (b"\x1f\x8b\x08\x00" + h * (size // 32 + 1))[:size]


def _go_time(seconds: int, nanos: int) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


class _Writer:
    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        self.count = 0

    def blob(self, data: bytes, mtime_s: int) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        try:
            fd = os.open(hexd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444, dir_fd=self.fd)
        except FileExistsError:
            return "sha256:" + hexd  # never rewritten, like BuildKit
        try:
            os.write(fd, data)
            os.utime(fd, ns=(mtime_s * 10**9, mtime_s * 10**9))
        finally:
            os.close(fd)
        self.count += 1
        return "sha256:" + hexd

    def close(self) -> None:
        os.close(self.fd)


def generate(root: Path, shape: Shape, layer_size: int | None = None) -> int:
    """Write the directory (must not exist or be empty); returns the number of blobs written.
    `layer_size`: every layer that many bytes (default: 64-512 bytes each)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    w = _Writer(root)
    clock = BASE_S
    layer_desc: dict[int, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    orphans_per_export = shape.orphans // max(shape.exports, 1)
    orphan = 0
    for e in range(shape.exports):
        start = e * shape.new
        ids = list(range(start, start + shape.layers))
        for i in ids:
            if i not in layer_desc:
                clock += 1
                data = _layer_bytes(i, b"layer", layer_size)
                digest = w.blob(data, clock)
                layer_desc[i] = {
                    "mediaType": GZIP,
                    "digest": digest,
                    "size": len(data),
                    "annotations": {
                        "buildkit/createdat": _go_time(clock, (i * 7919) % 10**9),
                        "containerd.io/uncompressed": "sha256:" + hashlib.sha256(b"diff" + data).hexdigest(),
                    },
                }
        # Orphans of an interrupted export sit between exports in time.
        for _ in range(orphans_per_export if e < shape.exports - 1 else shape.orphans - orphan):
            clock += 1
            w.blob(_layer_bytes(orphan, b"orphan"), clock)
            orphan += 1
        layers = [layer_desc[i] for i in ids]
        # The layers form one chain (ids in order); BuildKit sorts the config by digest.
        order = sorted(range(len(layers)), key=lambda k: layers[k]["digest"])
        where = {old: new for new, old in enumerate(order)}
        config_layers: list[dict[str, Any]] = []
        for old in order:
            item: dict[str, Any] = {"blob": layers[old]["digest"]}
            parent = -1 if old == 0 else where[old - 1]
            if parent != 0:
                item["parent"] = parent
            config_layers.append(item)
        records = [
            {
                "digest": "sha256:" + hashlib.sha256(f"rec{e}.{k}".encode()).hexdigest(),
                "layers": [{"layer": where[k], "createdAt": layers[k]["annotations"]["buildkit/createdat"]}],
            }
            for k in range(len(layers))
        ]
        config = _compact({"layers": config_layers, "records": records})
        clock += 1
        config_digest = w.blob(config, clock)
        manifest = _compact(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": CACHE_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": sorted(layers, key=lambda x: x["digest"]),
            }
        )
        clock += 1
        digest = w.blob(manifest, clock)
        tag = TAGS[e % len(TAGS)]
        entries = [x for x in entries if x["annotations"]["org.opencontainers.image.ref.name"] != tag]
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
    w.close()
    (root / "oci-layout").write_bytes(_compact({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_bytes(
        _compact({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    )
    return w.count


def generate_big_layers(root: Path, megabytes: int, layer_mib: int = 8) -> int:
    """One export of `megabytes` MiB of `layer_mib` MiB layers (where hashing throughput
    shows), no orphans; returns the number of blobs written."""
    layer_mib = min(layer_mib, max(megabytes, 1))
    n = max(1, megabytes // layer_mib)
    return generate(root, Shape(exports=1, layers=n, new=n, orphans=0), layer_size=layer_mib << 20)
