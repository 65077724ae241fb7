"""One read of a cache directory: index.json, every blob's stat, and every JSON document parsed once.

Cache manifests are found by content, not only through index.json (older exports have nothing
pointing at them). Only blobs small enough to be JSON are opened, and only their first bytes
unless they start like JSON; a blob that an already-parsed manifest lists as a layer is never
opened (layers can be gigabytes and are never JSON).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ocicache import documents as docs
from ocicache import mediatypes as mt
from ocicache.cache import NOT_JSON, PARSED, BlobCache, Parsed
from ocicache.digest import Digest, parse_digest
from ocicache.errors import CorruptError, OcicacheError, UsageError, missing_manifest_hint
from ocicache.layout import INDEX_JSON, OCI_LAYOUT, BlobFile, IngestEntry, Layout, Stray
from ocicache.model import CacheConfig, CacheManifest, Descriptor, Index, OtherManifest

SNIFF_BYTES = 64


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong or odd in the directory, said about one file (and where in it)."""

    severity: str  # "error" | "warning" | "note"
    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.message) if p)


@dataclass
class Inventory:
    """Everything ocicache knows about a directory after one read."""

    root: Path
    index: Index | None
    index_error: OcicacheError | None
    oci_layout: object | None
    blobs: dict[str, BlobFile]
    strays: tuple[Stray, ...]
    ingest: tuple[IngestEntry, ...]
    manifests: dict[str, CacheManifest] = field(default_factory=dict)
    configs: dict[str, CacheConfig] = field(default_factory=dict)
    foreign: dict[str, OtherManifest] = field(default_factory=dict)
    foreign_closure: set[str] = field(default_factory=set)
    kinds: dict[str, str] = field(default_factory=dict)  # digest -> documents.KIND_* for JSON
    bad_docs: dict[str, OcicacheError] = field(default_factory=dict)  # JSON that failed to parse
    problems: list[Problem] = field(default_factory=list)

    def require_index(self) -> Index:
        """The parsed index.json, or raise the error that made it unreadable."""
        if self.index_error is not None:
            raise self.index_error
        assert self.index is not None
        return self.index

    def warn(self, file: str, where: str, message: str, severity: str = "warning") -> None:
        self.problems.append(Problem(severity, file, where, message))


@dataclass(frozen=True, slots=True)
class IndexBytes:
    """index.json as already read by the caller (under BuildKit's lock); None when absent."""

    data: bytes | None


def read_inventory(layout: Layout, cache: BlobCache | None = None,
                   index_bytes: IndexBytes | None = None) -> Inventory:
    """Read DIR once: index.json, oci-layout, blobs/ (stat), ingest/, and every JSON blob.

    With a `cache`, blobs whose digest (and size) it knows are not opened, and what this read
    learned is saved to it. `index_bytes` lets a caller that read index.json under the lock use
    exactly those bytes.
    """
    index, index_error = _read_index(layout, index_bytes)
    oci_layout = _read_oci_layout(layout)
    scan = layout.scan_blobs()
    inv = Inventory(layout.root, index, index_error, oci_layout, scan.blobs, scan.strays,
                    layout.scan_ingest())
    if index_error is not None:
        inv.warn(index_error.file or INDEX_JSON, index_error.where or "", index_error.message,
                 "error")
    if isinstance(oci_layout, CorruptError):
        inv.warn(OCI_LAYOUT, "", oci_layout.message)
    for stray in scan.strays:
        inv.warn(stray.relpath, "", stray.reason, "note")
    _Reader(layout, inv, cache).run()
    if cache is not None:
        cache.save()
    return inv


def _read_index(layout: Layout,
                index_bytes: IndexBytes | None) -> tuple[Index | None, OcicacheError | None]:
    try:
        data = layout.read_top(INDEX_JSON) if index_bytes is None else index_bytes.data
    except CorruptError as e:
        return None, e
    if data is None:
        return None, CorruptError("missing", file=INDEX_JSON,
                                  hint="`ocicache repair DIR` can rebuild it from blobs/")
    try:
        return docs.parse_index(docs.loads_strict(data, INDEX_JSON)), None
    except CorruptError as e:
        if e.hint is None:
            e.hint = "`ocicache repair DIR` can rebuild it from blobs/"
        return None, e


def _read_oci_layout(layout: Layout) -> object | None:
    """The oci-layout document; None when absent (clients older than v0.12 write none)."""
    try:
        data = layout.read_top(OCI_LAYOUT, 4096)
        if data is None:
            return None
        doc: object = docs.loads_strict(data, OCI_LAYOUT)
        docs.validate(doc, "oci-layout", OCI_LAYOUT)
        return doc
    except CorruptError as e:
        return e


class _Reader:
    """Finds and parses every JSON document in blobs/, each once."""

    def __init__(self, layout: Layout, inv: Inventory, cache: BlobCache | None = None) -> None:
        self.layout = layout
        self.inv = inv
        self.cache = cache
        self.known_layers: set[str] = set()
        self._descriptors: dict[tuple[object, ...], Descriptor] = {}
        self.done: set[str] = set()
        self._fast = _fast_path()

    def run(self) -> None:
        inv = self.inv
        # index.json targets first: they name the manifests most worth knowing about.
        if inv.index is not None:
            for entry in inv.index.entries:
                self._visit_index_entry(entry.position, entry.descriptor.digest)
        # Then every other blob that could be JSON, newest first: a manifest is written after
        # its layers, so its layers become known (and are skipped) before we reach them.
        # (inv.blobs is in digest order and the sort is stable: ties stay in digest order.)
        limit = docs.JSON_LIMIT
        candidates = sorted(
            ((d, b) for d, b in inv.blobs.items() if b.size <= limit),
            key=lambda db: db[1].mtime_ns, reverse=True,
        )
        done, known_layers = self.done, self.known_layers
        for digest, blob in candidates:
            if digest in done or digest in known_layers:
                continue
            self._sniff(digest, blob)

    def _visit_index_entry(self, position: int, digest: str) -> None:
        where = f"manifests[{position}]"
        if digest not in self.inv.blobs:
            entry = self.inv.index.entries[position] if self.inv.index is not None else None
            hint = missing_manifest_hint(self.inv.root, entry.ref_name if entry else None,
                                         entry.pinned if entry else False)
            self.inv.warn(INDEX_JSON, where, f"{digest}: manifest blob is missing ({hint})",
                          "error")
            return
        self._parse_blob(self.inv.blobs[digest], top_level=True)
        if digest not in self.inv.manifests:
            # A foreign entry (not a cache manifest): keep its whole closure.
            self._foreign_closure([digest])

    def _sniff(self, digest: str, blob: BlobFile) -> None:
        cache = self.cache
        verdict = cache.verdict(digest, blob.size) if cache is not None else None
        if verdict == NOT_JSON:
            self.done.add(digest)
            return
        if verdict == PARSED:
            self._parse_blob(blob)
            return
        try:
            head = self.layout.read_blob_head(blob, SNIFF_BYTES)
        except (OSError, CorruptError) as e:
            self.inv.warn(blob.relpath, "", f"cannot read: {e}")
            self.done.add(blob.digest)
            return
        if docs.looks_like_json(head):
            self._parse_blob(blob)
        elif cache is not None and len(head) == min(SNIFF_BYTES, blob.size):
            cache.put_not_json(blob.digest, blob.size)
        self.done.add(blob.digest)

    def _parse_blob(self, blob: BlobFile, top_level: bool = False) -> None:
        if blob.digest in self.done:
            return
        self.done.add(blob.digest)
        if blob.size > docs.JSON_LIMIT:
            return
        cache = self.cache
        hit = cache.parsed(blob.digest, blob.size, blob.relpath) if cache is not None else None
        if hit is None:
            hit = self._read_and_parse(blob)
            if hit is None:
                return
        kind, value, error = hit
        inv = self.inv
        if error is not None:
            inv.bad_docs[blob.digest] = error
        if kind is None:
            return
        inv.kinds[blob.digest] = kind
        if isinstance(value, CacheManifest):
            inv.manifests[blob.digest] = value
            self._after_manifest(value)
        elif isinstance(value, CacheConfig):
            if blob.digest not in inv.configs:
                inv.configs[blob.digest] = value
        elif isinstance(value, OtherManifest):
            inv.foreign[blob.digest] = value

    def _share(self, m: CacheManifest) -> CacheManifest:
        """The same manifest, its descriptors shared with equal ones of other manifests
        (exports share most layers: this halves the memory they take, and the cache file)."""
        seen = self._descriptors

        def one(d: Descriptor) -> Descriptor:
            key = (d.digest, d.size, d.media_type, tuple(d.annotations.items()))
            return seen.setdefault(key, d)

        return CacheManifest(m.digest, m.shape, m.media_type,
                             one(m.config) if m.config is not None else None,
                             tuple([one(d) for d in m.layers]), tuple([one(d) for d in m.others]))

    def _read_and_parse(self, blob: BlobFile) -> Parsed | None:
        """Read, decode, classify and parse one blob; None when the file could not be read
        (a state of the file, not of the content: never cached)."""
        try:
            data = self.layout.read_blob(Digest(*blob.digest.split(":", 1)), docs.JSON_LIMIT)
        except CorruptError as e:
            self.inv.bad_docs[blob.digest] = e
            return None
        except OSError as e:
            self.inv.bad_docs[blob.digest] = CorruptError(f"cannot read: {e}", file=blob.relpath)
            return None
        kind, value, error = self._decode(data, blob.digest, blob.relpath)
        if isinstance(value, CacheManifest):
            value = self._share(value)
        # What was read is what the digest names only if the size is right (a truncated file
        # is not remembered as if it were the blob).
        if self.cache is not None and len(data) == blob.size:
            self.cache.put_parsed(blob.digest, blob.size, kind, value, error)
        return kind, value, error

    def _decode(self, data: bytes, digest: str, file: str) -> Parsed:
        """Kind, value and error of one blob's bytes: fastdecode's answer when it is sure,
        else the slow path's (decode, classify, validate, parse in Python)."""
        fast = self._fast(data, digest, file) if self._fast is not None else None
        if fast is not None:
            return fast[0], fast[1], None
        kind: str | None = None
        try:
            doc = docs.loads_blob(data, file)
            kind = docs.classify(doc)  # kept even when parsing fails below
            return kind, _parse(kind, doc, digest, file), None
        except CorruptError as e:
            return kind, None, e

    def _after_manifest(self, manifest: CacheManifest) -> None:
        is_layer, common = mt.is_layer_type, mt.LAYER_TYPES
        self.known_layers.update([layer.digest for layer in manifest.layers
                                  if layer.media_type in common or is_layer(layer.media_type)])
        config = manifest.config
        if config is None:
            self.inv.warn(_blob_rel(manifest.digest), "", "cache manifest names no cache config",
                          "error")
            return
        blob = self.inv.blobs.get(config.digest)
        if blob is not None:
            self._parse_blob(blob)

    def _foreign_closure(self, roots: Iterable[str]) -> None:
        stack = list(roots)
        while stack:
            digest = stack.pop()
            if digest in self.inv.foreign_closure:
                continue
            self.inv.foreign_closure.add(digest)
            blob = self.inv.blobs.get(digest)
            if blob is None:
                continue
            self._parse_blob(blob)
            other = self.inv.foreign.get(digest)
            if other is not None:
                stack.extend(d.digest for d in other.children)
            cache = self.inv.manifests.get(digest)
            if cache is not None:
                stack.extend(_cache_manifest_blobs(cache))


def _parse(kind: str, doc: object, digest: str, file: str) -> object | None:
    """The model value of a decoded JSON blob of this kind (the slow path); CorruptError when
    it breaks its schema."""
    if kind == docs.KIND_CACHE_MANIFEST:
        return docs.parse_cache_manifest(doc, digest, file)
    if kind == docs.KIND_CACHE_CONFIG:
        return docs.parse_cache_config(doc, digest, file)
    if kind == docs.KIND_MANIFEST:
        return docs.parse_other_manifest(doc, digest, file)
    return None


def _fast_path() -> Callable[[bytes, str, str], tuple[str, object] | None] | None:
    """fastdecode.decode_blob, or None when msgspec cannot be imported: a dependency, but the
    slow path alone still gives every answer (~0.8 s slower on 300 big exports)."""
    try:
        from ocicache.fastdecode import decode_blob
    except ImportError:
        return None
    return decode_blob


def _cache_manifest_blobs(manifest: CacheManifest) -> list[str]:
    out = [d.digest for d in manifest.layers] + [d.digest for d in manifest.others]
    if manifest.config is not None:
        out.append(manifest.config.digest)
    return out


def _blob_rel(digest: str) -> str:
    try:
        return Layout.blob_relpath(parse_digest(digest))
    except UsageError:
        return digest
