"""One read of a cache directory: index.json, every blob's stat, and every JSON document parsed once.

Cache manifests are found by content, not only through index.json (older exports have nothing
pointing at them). Only the first bytes of a blob are read unless they start like JSON; a blob
that an already-parsed manifest lists as a layer is not sniffed here (layers can be gigabytes and
are never JSON). On a first read through a listing, its child reads every regular blob's first
64 bytes ahead, layers included, in parallel (Store.sniff_ahead; a layer's body is never read).

Foreign content (every index.json entry that is not a cache manifest: images, Docker v2
manifests and lists, artifacts, nested indexes) is walked by its descriptors, iteratively,
whatever their media types: each blob reached is classified by the descriptor that reached it
(manifest, index, config, layer), and only documents (manifests, indexes) are read. A document
that cannot be read or understood makes what it references unknown (`foreign_unknown`). OCI
referrers stored in blobs/ (a `subject` naming something reachable) are reachable too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ocicache.base.errors import (
    CorruptError,
    OcicacheError,
    TooLargeError,
    UsageError,
    missing_manifest_hint,
)
from ocicache.core.exports import Export, build_exports
from ocicache.core.inventory import ForeignRef, Inventory
from ocicache.format import documents as docs
from ocicache.format import mediatypes as mt
from ocicache.format.digest import Digest, parse_digest
from ocicache.format.model import CacheConfig, CacheManifest, Descriptor, Index, IndexEntry, OtherManifest
from ocicache.format.names import INDEX_JSON, LOCK_FILE, OCI_LAYOUT, SNIFF_BYTES
from ocicache.ops import kept
from ocicache.store.base import BlobFile, QuarantineScan, Store, blob_relpath
from ocicache.store.cache import ReadCache, read_stamp


@dataclass(frozen=True, slots=True)
class IndexBytes:
    """index.json as already read by the caller (under BuildKit's lock); None when absent."""

    data: bytes | None


def read_inventory(
    store: Store,
    cache: ReadCache | None = None,
    index_bytes: IndexBytes | None = None,
    quarantine: QuarantineScan | None = None,
) -> Inventory:
    """Read DIR once: index.json, oci-layout, blobs/ (stat), ingest/, and every JSON blob.

    With a `cache`, blobs whose digest (and size) the directory's kept read knows are not
    opened (store/cache.py; nothing is written). `index_bytes` lets a caller that read
    index.json under the lock use exactly those bytes; `quarantine`, a caller that knows what
    gc's quarantine holds (gc, which alone changes it, under its lock) skip scanning it.
    """
    known = kept.facts(cache.kept_read(store.root)) if cache is not None else None
    if known is None or known.knows_nothing():
        store.sniff_ahead()
    inv, _ = _fresh(store, index_bytes, quarantine)
    _read_documents(store, inv, known)
    return inv


def read_store(
    store: Store,
    cache: ReadCache | None = None,
    index_bytes: IndexBytes | None = None,
    quarantine: QuarantineScan | None = None,
) -> tuple[Inventory, list[Export]]:
    """read_inventory, and the exports (core.exports.build_exports) of what it read.

    With a `cache`, the read kept by an earlier run of exactly the same input (ops/kept.py: the
    same blobs, lstat for lstat, the same index.json, ...) is used instead of reading the
    documents and computing the exports again; otherwise its facts spare opening the blobs it
    knows, and this read is kept for the next run."""
    # The kept read is decoded first, while a listing's child is still stat-ing the blobs
    # (listing.py); it is used whole only if this read's input turns out to be its key.
    view = cache.kept_read(store.root) if cache is not None else None
    candidate = kept.decode(view) if view is not None else None
    del view
    if candidate is None:  # (a first read: every blob is sniffed)
        store.sniff_ahead()
    inv, fingerprint = _fresh(store, index_bytes, quarantine)
    k = kept.key(inv, fingerprint, read_stamp()) if cache is not None and fingerprint else None
    if k is not None and candidate is not None and candidate.key == k:
        return inv, candidate.apply(inv)
    known = kept.Facts(candidate) if cache is not None else None
    del candidate
    complete = _read_documents(store, inv, known)
    exports = build_exports(inv)
    if k is not None and cache is not None and known is not None and complete:
        data = kept.encode(k, inv, exports, known)
        if data is not None:
            cache.keep_read(store.root, data)
    return inv, exports


def _fresh(
    store: Store, index_bytes: IndexBytes | None, quarantine: QuarantineScan | None
) -> tuple[Inventory, bytes]:
    """Everything of a read but the documents in blobs/, and the blob scan's fingerprint."""
    index, index_error, index_raw, lock_warnings = _read_index(store, index_bytes)
    oci_layout = _read_oci_layout(store)
    scan = store.scan_blobs()
    inv = Inventory(
        store.root,
        index,
        index_error,
        oci_layout,
        scan.blobs,
        scan.strays,
        store.scan_ingest(),
        index_raw=index_raw,
    )
    inv.quarantine = store.scan_quarantine() if quarantine is None else quarantine
    inv.kind = store.kind
    inv.untimed = store.untimed()
    inv.superseded = store.superseded()
    for problem in store.problems():
        inv.warn(store.target, "", problem)
    for warning in lock_warnings:
        inv.warn(LOCK_FILE, "", warning.removeprefix(f"{LOCK_FILE}: "))
    if index_error is not None:
        inv.warn(index_error.file or INDEX_JSON, index_error.where or "", index_error.message, "error")
    if isinstance(oci_layout, CorruptError):
        inv.warn(OCI_LAYOUT, "", oci_layout.message)
    for stray in scan.strays:
        inv.warn(stray.relpath, "", stray.reason, "note")
    return inv, scan.fingerprint


def _read_documents(store: Store, inv: Inventory, known: kept.Facts | None) -> bool:
    """Find and parse every document; False when a file could not be read (what was found
    then depends on the files' state, not only on their content: it is not kept)."""
    reader = _Reader(store, inv, known)
    try:
        reader.run()
    finally:
        store.sniff_ahead(False)  # (heads a store read ahead are let go)
    return not reader.unreadable


_REPAIR_HINT = "`ocicache repair DIR` can rebuild it from blobs/"


def _read_index(
    store: Store, index_bytes: IndexBytes | None
) -> tuple[Index | None, OcicacheError | None, bytes | None, tuple[str, ...]]:
    """(index, why it is unusable, its bytes, warnings about the lock). Read between BuildKit's
    writes (indexread.py): a write in progress raises BusyError, so a torn index here is
    really torn and `repair` is the hint."""
    warnings: tuple[str, ...] = ()
    decoded: object | None = None
    try:
        if index_bytes is None:
            got = store.read_index()
            data, warnings = got.data, got.warnings
            if got.error is not None:
                if got.error.hint is None:
                    got.error.hint = _REPAIR_HINT
                return None, got.error, data, warnings
            decoded = got.doc
        else:
            data = index_bytes.data
    except TooLargeError as e:
        if e.hint is None:
            e.hint = (
                "ocicache does not read an index.json that large; if it is garbage, "
                "move it aside, then `ocicache repair DIR` rebuilds one"
            )
        return None, e, None, warnings
    except CorruptError as e:
        return None, e, None, warnings
    if data is None:
        return None, CorruptError("missing", file=INDEX_JSON, hint=_REPAIR_HINT), None, warnings
    try:
        doc = docs.loads_strict(data, INDEX_JSON) if decoded is None else decoded
        return docs.parse_index(doc), None, data, warnings
    except CorruptError as e:
        if e.hint is None:
            e.hint = _REPAIR_HINT
        return None, e, data, warnings


def _read_oci_layout(store: Store) -> object | None:
    """The oci-layout document; None when absent (clients older than v0.12 write none)."""
    try:
        data = store.read_top(OCI_LAYOUT, 4096)
        if data is None:
            return None
        doc: object = docs.loads_strict(data, OCI_LAYOUT)
        docs.validate(doc, "oci-layout", OCI_LAYOUT)
        return doc
    except CorruptError as e:
        return e


class _Reader:
    """Finds and parses every JSON document in blobs/, each once."""

    def __init__(self, store: Store, inv: Inventory, cache: kept.Facts | None = None) -> None:
        self.store = store
        self.inv = inv
        self.cache = cache
        self.known_layers: set[str] = set()
        self._descriptors: dict[str, Descriptor] = {}  # by digest, the first seen
        self.done: set[str] = set()  # sniffed or parsed
        self.parsed: set[str] = set()  # read and decoded (or found too big to read)
        self.walked: set[str] = set()  # foreign documents whose references were followed
        self.unreadable = False  # a file could not be read (an OSError, a short read)

    def run(self) -> None:
        inv = self.inv
        # index.json targets first: they name the manifests most worth knowing about.
        if inv.index is not None:
            for entry in inv.index.entries:
                self._visit_index_entry(entry)
        # Then every other blob that could be JSON, newest first: a manifest is written after
        # its layers, so its layers become known (and are skipped) before we reach them.
        # (inv.blobs is in digest order and the sort is stable: ties stay in digest order.)
        # Blobs of any size are sniffed: a document too big to read is reported as such.
        candidates = sorted(inv.blobs.items(), key=lambda db: db[1].mtime_ns, reverse=True)
        done, known_layers = self.done, self.known_layers
        for digest, blob in candidates:
            if digest in done or digest in known_layers:
                continue
            self._sniff(digest, blob)
        self._referrers()
        self._forget_leaf_errors()

    def _visit_index_entry(self, entry: IndexEntry) -> None:
        digest = entry.descriptor.digest
        where = f"manifests[{entry.position}]"
        if digest not in self.inv.blobs:
            hint = missing_manifest_hint(self.inv.root, entry.ref_name, entry.pinned)
            self.inv.warn(
                INDEX_JSON,
                where,
                f"{digest}: manifest blob is missing ({hint}){self.inv.missing_note(digest)}",
                "error",
            )
            return
        self._parse_blob(self.inv.blobs[digest], top_level=True)
        if digest not in self.inv.manifests:
            # A foreign entry (not a cache manifest): keep everything it references. What an
            # index.json entry names is read as a manifest, whatever its descriptor says.
            d = entry.descriptor
            role = mt.role_of("", d.media_type)
            self._walk_foreign(
                [
                    ForeignRef(
                        INDEX_JSON,
                        where,
                        digest,
                        d.size,
                        d.media_type,
                        role if mt.is_document_role(role) else mt.ROLE_MANIFEST,
                    )
                ]
            )

    # -- foreign content -----------------------------------------------------------------------
    def _walk_foreign(self, stack: list[ForeignRef]) -> None:
        """Follow references depth first, with a stack (chains can be thousands deep)."""
        inv = self.inv
        stack.reverse()
        while stack:
            ref = stack.pop()
            digest = ref.digest
            inv.foreign_refs.setdefault(ref.parent, []).append(ref)
            inv.foreign_roles[digest] = _stronger(inv.foreign_roles.get(digest), ref.role)
            if digest not in inv.foreign_closure:
                inv.foreign_closure.add(digest)
                stack.extend(reversed(self._referrer_refs(digest)))
            if not mt.is_document_role(ref.role):
                if ref.media_type is not None and mt.is_layer_type(ref.media_type):
                    self.known_layers.add(digest)  # never sniffed
                continue
            if digest in self.walked:
                continue
            self.walked.add(digest)
            blob = inv.blobs.get(digest)
            if blob is not None:
                stack.extend(reversed(self._references(blob, ref)))

    def _references(self, blob: BlobFile, ref: ForeignRef) -> list[ForeignRef]:
        """What the document `blob` references; [] and a `foreign_unknown` entry when it cannot
        be read or understood (its references are then unknown)."""
        inv, digest = self.inv, blob.digest
        if ref.media_type not in mt.DOCUMENT_TYPES and ref.role == mt.ROLE_MANIFEST:
            # An unknown media type where a manifest is expected (an index's manifests[], a
            # subject): a document only if it is JSON; other bytes reference nothing we know.
            try:
                head = self.store.read_blob_head(blob, SNIFF_BYTES)
            except (OSError, CorruptError) as e:
                self.unreadable = True
                inv.foreign_unknown[digest] = f"cannot read: {e}"
                return []
            if not docs.looks_like_json(head):
                return []
        self._parse_blob(blob)
        manifest = inv.manifests.get(digest)
        if manifest is not None:
            return _cache_manifest_refs(manifest)
        other = inv.foreign.get(digest)
        if other is not None:
            return [
                ForeignRef(
                    digest,
                    other.where(i),
                    c.digest,
                    c.size,
                    c.media_type,
                    mt.role_of(other.key(i), c.media_type),
                )
                for i, c in enumerate(other.children)
            ]
        config = inv.configs.get(digest)
        if config is not None:
            return [
                ForeignRef(digest, f"layers[{i}].blob", x.blob, None, None, mt.ROLE_LAYER)
                for i, x in enumerate(config.layers)
            ]
        err = inv.bad_docs.get(digest)
        if err is not None:
            why = f"cannot be parsed ({err.message})"
            if err.message.startswith(docs.TOO_BIG):
                why = err.message
        elif inv.kinds.get(digest) == docs.KIND_UNKNOWN_JSON:
            why = "JSON of no manifest or index shape"
        else:
            why = "not JSON"
        if not (ref.parent == INDEX_JSON and inv.kinds.get(digest) == docs.KIND_CACHE_MANIFEST):
            # (an index.json entry that is a cache manifest failing its schema is an export
            # that cannot be read: exports.py says so)
            inv.foreign_unknown[digest] = why
        return []

    def _referrer_refs(self, digest: str) -> list[ForeignRef]:
        return [
            ForeignRef(digest, "referrer", r, None, self.inv.foreign[r].media_type, mt.ROLE_MANIFEST)
            for r in self.inv.referrers.get(digest, ())
        ]

    def _referrers(self) -> None:
        """OCI referrers stored in blobs/ (a foreign document with a `subject`): those whose
        subject is reachable from index.json are reachable too (keeping them is the safe
        choice: a signature or SBOM of a kept image is never deleted)."""
        inv = self.inv
        for digest, other in inv.foreign.items():
            subject = other.subject
            if subject is not None and subject.digest != digest:
                inv.referrers.setdefault(subject.digest, []).append(digest)
        if not inv.referrers:
            return
        reachable = set(inv.foreign_closure)
        if inv.index is not None:
            reachable.update(e.descriptor.digest for e in inv.index.entries)
        roots = [ref for d in sorted(reachable) for ref in self._referrer_refs(d)]
        self._walk_foreign(roots)

    def _forget_leaf_errors(self) -> None:
        """A blob foreign content names as a config or layer is data, not a document: that it
        does not parse as JSON is no error (a gzip layer, a `{}` payload, a signature)."""
        inv = self.inv
        needed = {m.config.digest for m in inv.manifests.values() if m.config is not None}
        if inv.index is not None:
            needed.update(e.descriptor.digest for e in inv.index.entries)
        for digest, role in inv.foreign_roles.items():
            if (
                not mt.is_document_role(role)
                and digest in inv.bad_docs
                and digest not in needed
                and digest not in self.walked
            ):
                del inv.bad_docs[digest]

    def _sniff(self, digest: str, blob: BlobFile) -> None:
        cache = self.cache
        verdict = cache.verdict(digest, blob.size) if cache is not None else None
        if verdict == kept.NOT_JSON:
            self.done.add(digest)
            return
        if verdict == kept.PARSED:
            self._parse_blob(blob)
            return
        try:
            head = self.store.read_blob_head(blob, SNIFF_BYTES)
        except (OSError, CorruptError) as e:
            self.unreadable = True
            self.inv.warn(blob.relpath, "", f"cannot read: {e}")
            self.done.add(blob.digest)
            return
        if len(head) != min(SNIFF_BYTES, blob.size):
            self.unreadable = True  # shorter than the scan said
        if docs.looks_like_json(head):
            self._parse_blob(blob)
        elif cache is not None and len(head) == min(SNIFF_BYTES, blob.size):
            cache.put_not_json(blob.digest, blob.size)
        self.done.add(blob.digest)

    def _parse_blob(self, blob: BlobFile, top_level: bool = False) -> None:
        if blob.digest in self.parsed:
            return
        self.parsed.add(blob.digest)
        self.done.add(blob.digest)
        if blob.size > docs.JSON_LIMIT:
            self.inv.bad_docs[blob.digest] = docs.too_big(blob.size, blob.relpath)
            return
        cache = self.cache
        hit = cache.parsed(blob.digest, blob.size) if cache is not None else None
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
            # Looked up by digest, shared when equal, annotations in the same order too (most
            # are: a digest's descriptor is the same in every manifest that names it).
            first = seen.setdefault(d.digest, d)
            if first is d or (first == d and list(first.annotations) == list(d.annotations)):
                return first
            return d

        return CacheManifest(
            m.digest,
            m.shape,
            m.media_type,
            one(m.config) if m.config is not None else None,
            tuple([one(d) for d in m.layers]),
            tuple([one(d) for d in m.others]),
        )

    def _read_and_parse(self, blob: BlobFile) -> tuple[str | None, object | None, CorruptError | None] | None:
        """Read, decode, classify and parse one blob; None when the file could not be read
        (a state of the file, not of the content: never cached)."""
        try:
            data = self.store.read_blob(Digest(*blob.digest.split(":", 1)), docs.JSON_LIMIT)
        except CorruptError as e:
            self.unreadable = True
            self.inv.bad_docs[blob.digest] = e
            return None
        except OSError as e:
            self.unreadable = True
            self.inv.bad_docs[blob.digest] = CorruptError(f"cannot read: {e}", file=blob.relpath)
            return None
        kind, value, error = docs.read_document(data, blob.digest, blob.relpath)
        if isinstance(value, CacheManifest):
            value = self._share(value)
        # What was read is what the digest names only if the size is right (a truncated file
        # is not remembered as if it were the blob).
        if len(data) != blob.size:
            self.unreadable = True  # truncated (or grown) since the scan: not what the digest names
        elif self.cache is not None:
            self.cache.put_parsed(blob.digest, blob.size, kind, value, error)
        return kind, value, error

    def _after_manifest(self, manifest: CacheManifest) -> None:
        is_layer, common = mt.is_layer_type, mt.LAYER_TYPES
        self.known_layers.update(
            [
                layer.digest
                for layer in manifest.layers
                if layer.media_type in common or is_layer(layer.media_type)
            ]
        )
        config = manifest.config
        if config is None:
            self.inv.warn(_blob_rel(manifest.digest), "", "cache manifest names no cache config", "error")
            return
        blob = self.inv.blobs.get(config.digest)
        if blob is not None:
            self._parse_blob(blob)


def _cache_manifest_refs(m: CacheManifest) -> list[ForeignRef]:
    """A cache manifest reached from foreign content: its cache config, layers and others."""
    out: list[ForeignRef] = []
    if m.config is not None:
        out.append(
            ForeignRef(
                m.digest, "config", m.config.digest, m.config.size, m.config.media_type, mt.ROLE_CACHE_CONFIG
            )
        )
    out.extend(
        ForeignRef(m.digest, f"layers[{i}]", d.digest, d.size, d.media_type, mt.ROLE_LAYER)
        for i, d in enumerate(m.layers)
    )
    out.extend(
        ForeignRef(
            m.digest, f"others[{i}]", d.digest, d.size, d.media_type, mt.role_of("manifests", d.media_type)
        )
        for i, d in enumerate(m.others)
    )
    return out


# Roles, weakest first: a blob reached under several roles is shown as the strongest.
_ROLE_ORDER = (mt.ROLE_LAYER, mt.ROLE_CONFIG, mt.ROLE_CACHE_CONFIG, mt.ROLE_MANIFEST, mt.ROLE_INDEX)


def _stronger(old: str | None, new: str) -> str:
    if old is None or _ROLE_ORDER.index(new) > _ROLE_ORDER.index(old):
        return new
    return old


def _blob_rel(digest: str) -> str:
    try:
        return blob_relpath(parse_digest(digest))
    except UsageError:
        return digest
