"""Media types BuildKit writes into cache directories, and how to tell their roles apart."""

from __future__ import annotations

CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST})
# The OCI artifact manifest (image-spec 1.1 release candidates; withdrawn, but written by some
# tools): `blobs` instead of `config` + `layers`, and an optional `subject`.
OCI_ARTIFACT_MANIFEST = "application/vnd.oci.artifact.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"  # the empty config of OCI artifacts: `{}`
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
# Media types of documents that reference other blobs by descriptors (foreign content is walked
# through them); every other media type names a leaf (a config, a layer, a payload).
DOCUMENT_TYPES = MANIFEST_TYPES | {OCI_ARTIFACT_MANIFEST}
CONFIG_TYPES = frozenset(
    {
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.docker.container.image.v1+json",
        OCI_EMPTY,
    }
)

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

# What a JSON blob is (documents.classify; the decoder's answers carry these).
KIND_CACHE_MANIFEST = "cache-manifest"
KIND_CACHE_CONFIG = "cache-config"
KIND_MANIFEST = "manifest"  # an image manifest / index that is not a cache manifest
KIND_UNKNOWN_JSON = "unknown-json"


def is_layer_type(media_type: str) -> bool:
    """True for a media type BuildKit uses for layer blobs."""
    return media_type in LAYER_TYPES or ".layer." in media_type or ".rootfs." in media_type


# What a blob reached through foreign content (anything index.json holds besides cache exports)
# is, judged by the descriptor that reached it: its media type first, then the key it sits in.
ROLE_MANIFEST = "manifest"  # an image manifest (OCI, Docker v2 schema 2) or artifact manifest
ROLE_INDEX = "index"  # an image index or Docker manifest list
ROLE_CONFIG = "config"  # an image config (or any blob a manifest names in `config`)
ROLE_LAYER = "layer"  # a layer, or any other payload (`layers`, `blobs`)
ROLE_CACHE_CONFIG = "cache-config"
# Descriptor keys followed in a foreign document, in the order they are walked.
DESCRIPTOR_KEYS = ("config", "layers", "manifests", "blobs", "subject")
# Keys under which a blob of an unknown media type is expected to be a document.
_DOCUMENT_KEYS = frozenset({"manifests", "subject", ""})  # "" = an index.json entry


def role_of(key: str, media_type: str) -> str:
    """The role of a blob named by a descriptor of `media_type` under `key` ("config",
    "layers", "manifests", "blobs", "subject"; "" for an index.json entry)."""
    if media_type == CACHE_CONFIG:
        return ROLE_CACHE_CONFIG
    if media_type in INDEX_TYPES:
        return ROLE_INDEX
    if media_type in DOCUMENT_TYPES:
        return ROLE_MANIFEST
    if media_type in CONFIG_TYPES:
        return ROLE_CONFIG
    if is_layer_type(media_type):
        return ROLE_LAYER
    if key in _DOCUMENT_KEYS:
        return ROLE_MANIFEST  # what an index lists is a manifest, whatever its media type
    return ROLE_CONFIG if key == "config" else ROLE_LAYER


def is_document_role(role: str) -> bool:
    """True for the roles whose blobs reference other blobs (read and walked)."""
    return role in (ROLE_MANIFEST, ROLE_INDEX, ROLE_CACHE_CONFIG)
