"""Media types BuildKit writes into cache directories, and how to tell their roles apart."""

from __future__ import annotations

CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST})

# Layer types seen in BuildKit caches (FORMAT.md); others are accepted as layers too when
# a cache manifest lists them, but these are the ones whose bytes we never need to sniff.
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

# Shapes of a cache manifest (FORMAT.md, "three shapes").
SHAPE_A = "A"  # OCI image manifest, config = cache config
SHAPE_B = "B"  # OCI index holding layers + cache config
SHAPE_C = "C"  # Docker manifest list, docker layer types


def is_layer_type(media_type: str) -> bool:
    """True for a media type BuildKit uses for layer blobs."""
    return media_type in LAYER_TYPES or ".layer." in media_type or ".rootfs." in media_type
