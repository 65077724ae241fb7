"""Foreign content for tests: real OCI and Docker images (gzip layers of real tar bytes), Docker
manifest lists, OCI artifacts (image-manifest form with artifactType and the empty config, and
the withdrawn artifact-manifest form), referrers (`subject`) and nested indexes, written into a
cache directory next to its exports and tagged in its index.json (other entries kept as is)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocicache.format import mediatypes as mt
from ocicache.synth import BASE_NS, compact

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = mt.DOCKER_MANIFEST
DOCKER_LIST = mt.DOCKER_LIST
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"

Desc = dict[str, Any]


def tar_gz(name: str, content: bytes) -> bytes:
    """A real gzip-compressed tar holding one file (deterministic bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        t.addfile(info, io.BytesIO(content))
    return gzip.compress(buf.getvalue(), mtime=0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Store:
    """Writes blobs (0444, one fixed mtime) into an existing layout and tags them in index.json.

    `kinds` records what `ocicache blobs` must call each blob written (by the descriptor that
    names it); `all` is every digest written."""

    root: Path
    mtime_ns: int = BASE_NS
    kinds: dict[str, str] = field(default_factory=dict)
    tags: dict[str, Desc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        d = self.root / "blobs" / "sha256"
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o755)

    @property
    def all(self) -> set[str]:
        return set(self.kinds)

    def put(self, data: bytes, media_type: str, kind: str, **extra: Any) -> Desc:
        digest = sha(data)
        path = self.root / "blobs" / "sha256" / digest[7:]
        if not path.exists():
            path.write_bytes(data)
            os.utime(path, ns=(self.mtime_ns, self.mtime_ns))
            os.chmod(path, 0o444)
        if self.kinds.get(digest) not in ("manifest", "index"):
            self.kinds[digest] = kind
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def doc(self, document: dict[str, Any], media_type: str, kind: str, **extra: Any) -> Desc:
        return self.put(compact(document), media_type, kind, **extra)

    def tag(self, desc: Desc, name: str) -> None:
        """Append an index.json entry for `desc` named `name` (BuildKit's entries kept)."""
        path = self.root / "index.json"
        index = json.loads(path.read_bytes())
        entry = {k: v for k, v in desc.items() if k in ("mediaType", "digest", "size")}
        entry["annotations"] = {REF_NAME: name}
        index["manifests"].append(entry)
        if path.exists():
            os.chmod(path, 0o644)
        path.write_bytes(compact(index))
        self.tags[name] = desc

    # -- images --------------------------------------------------------------------------------
    def oci_image(self, seed: str, layers: int = 2) -> Desc:
        ls = [
            self.put(tar_gz(f"{seed}{i}.txt", f"{seed} layer {i}\n".encode() * 20), OCI_GZIP, "layer")
            for i in range(layers)
        ]
        cfg = self.doc(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Env": ["A=1"]},
                "rootfs": {"type": "layers", "diff_ids": []},
                "seed": seed,
            },
            OCI_CONFIG,
            "config",
        )
        return self.doc(
            {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "config": cfg, "layers": ls},
            mt.OCI_MANIFEST,
            "manifest",
        )

    def docker_image(self, seed: str, arch: str = "amd64") -> Desc:
        layer = self.put(tar_gz(f"{seed}.bin", f"{seed}/{arch}".encode() * 30), DOCKER_GZIP, "layer")
        cfg = self.doc({"architecture": arch, "os": "linux", "seed": seed}, DOCKER_CONFIG, "config")
        return self.doc(
            {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": cfg, "layers": [layer]},
            DOCKER_MANIFEST,
            "manifest",
            platform={"architecture": arch, "os": "linux"},
        )

    def docker_list(self, seed: str) -> Desc:
        children = [self.docker_image(f"{seed}-{arch}", arch) for arch in ("amd64", "arm64")]
        return self.doc(
            {"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": children}, DOCKER_LIST, "index"
        )

    def empty(self) -> Desc:
        return self.put(b"{}", mt.OCI_EMPTY, "config")

    def artifact(self, seed: str, subject: Desc | None = None) -> Desc:
        """An OCI 1.1 artifact: an image manifest with artifactType and the empty config."""
        payload = self.put(compact({"sbom": seed, "packages": []}), "application/spdx+json", "layer")
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": self.empty(),
            "layers": [payload],
        }
        if subject is not None:
            doc["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
        return self.doc(doc, mt.OCI_MANIFEST, "manifest", artifactType="application/vnd.example.sbom")

    def signature(self, subject: Desc, seed: str = "sig") -> Desc:
        """A referrer (cosign-like): binary payload, empty config, `subject`."""
        sig = self.put(
            b"\x00\x01signature of " + subject["digest"].encode() + seed.encode(),
            "application/vnd.example.signature",
            "layer",
        )
        return self.doc(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "artifactType": "application/vnd.example.signature",
                "config": self.empty(),
                "layers": [sig],
                "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
            },
            mt.OCI_MANIFEST,
            "manifest",
        )

    def withdrawn_artifact(self, seed: str, subject: Desc | None = None) -> Desc:
        """The withdrawn OCI artifact manifest (`blobs`, no config), with a payload that only
        starts like JSON."""
        blob = self.put(b"{ not json: " + seed.encode(), "application/vnd.example.data", "layer")
        doc: dict[str, Any] = {
            "mediaType": mt.OCI_ARTIFACT_MANIFEST,
            "artifactType": "application/vnd.example.data",
            "blobs": [blob],
        }
        if subject is not None:
            doc["subject"] = {k: subject[k] for k in ("mediaType", "digest", "size")}
        return self.doc(doc, mt.OCI_ARTIFACT_MANIFEST, "manifest")

    def index(self, manifests: list[Desc], note: str = "") -> Desc:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
        if note:
            doc["annotations"] = {"note": note}
        return self.doc(doc, mt.OCI_INDEX, "index")

    def chain(self, inner: Desc, depth: int) -> Desc:
        """`depth` indexes, each listing the next one: an index nested `depth` deep."""
        desc = inner
        for i in range(depth):
            desc = self.index([desc], note=str(i))
        return desc


def add_everything(root: Path, mtime_ns: int = BASE_NS) -> Store:
    """One of each kind of foreign content, tagged in index.json: an OCI image (gzip layers)
    with an SBOM artifact and a signature referencing it (the signature only in blobs/, not in
    index.json), a Docker manifest list of two Docker v2 images, a Docker v2 image, an OCI
    artifact, a withdrawn-form artifact manifest, and a nested index of an OCI image."""
    s = Store(root, mtime_ns)
    image = s.oci_image("app")
    s.tag(image, "app-image")
    s.tag(s.artifact("sbom", subject=image), "app-sbom")
    s.signature(image)  # a referrer stored in blobs/ only
    s.tag(s.docker_list("multi"), "docker-list")
    s.tag(s.docker_image("single"), "docker-v2")
    s.tag(s.artifact("lone"), "artifact")
    s.tag(s.withdrawn_artifact("old", subject=image), "withdrawn-artifact")
    s.tag(s.index([s.index([s.oci_image("deep", layers=1)])]), "nested")
    return s
