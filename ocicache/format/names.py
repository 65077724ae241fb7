"""The names of an OCI image layout's files, and of ocicache's own folder inside one."""

INDEX_JSON = "index.json"
OCI_LAYOUT = "oci-layout"
LOCK_FILE = "index.json.lock"
BLOBS = "blobs"
# The registered digest algorithms: their blobs/<algorithm>/ folders, and the length of the
# lower-case hex names in them (format/digest.py validates digests by it).
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
INGEST = "ingest"
# What is read of a blob to tell a JSON document from a layer (a layer's body is never read).
SNIFF_BYTES = 64
# gc's own folder inside DIR (quarantine.py): the only thing ocicache ever adds to a directory.
OWN_DIR = ".ocicache"
QUARANTINE = f"{OWN_DIR}/quarantine"

# index.json holds one small descriptor (~250 bytes) per tag: 256 MiB (a million entries) is far
# beyond any real one and still keeps a hostile (e.g. sparse multi-GB) file from being read into
# memory. A file over it is reported as too large (TooLargeError, naming this limit), never as
# torn: a writer refuses to replace what it could not read.
INDEX_LIMIT = 256 << 20
INDEX_LIMIT_NAME = "index.json limit"
