"""RegistryStore: the Store (store/base.py) over one repository of a registry.

A registry cannot list its blobs, so the store finds what a repository holds by descriptors,
the way a local read finds foreign content: every tag's manifest, every older manifest that
can be known (the registry's storage directory when given, ocicache's own record of the tags,
digests the user names), the documents they reach (image indexes' children, cache configs),
and the leaves those name (layers, image configs) with the sizes their descriptors give.
Manifests come from GET /v2/REPO/manifests/<ref>, cache configs from GET /v2/REPO/blobs/<d>
(small, bounded, verified against their digests); layers are never fetched here.

The tags are presented as an index.json (one entry per tag, `org.opencontainers.image.ref.name`
= the tag, in the order they were pushed when that is known), so every command reads a
registry the way it reads a directory: a tag whose manifest is a cache is a current export,
every other tag is foreign content (walked, listed apart, never deleted).

Times: with the storage directory, a manifest's time is when the tag was pointed at it (the
mtime of the tag's `index/` link; for a manifest no tag ever named, of its revision link) and
a blob's the time of its first upload. Without it, times are unknown (`untimed`) and an
export's time is its newest step's.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ocicache.base.errors import CorruptError, NotACacheDirError, NotFoundError, OcicacheError
from ocicache.format import mediatypes as mt
from ocicache.format.digest import Digest, is_valid_digest
from ocicache.format.names import INDEX_JSON, OCI_LAYOUT
from ocicache.store.base import BlobFile, BlobScan, HashResult, IndexRead, IngestEntry, QuarantineScan
from ocicache.store.registry.client import ManifestResponse, RegistryClient
from ocicache.store.registry.storage import DistributionStorage
from ocicache.store.registry.target import RegistryTarget

MANIFEST_LIMIT = 4 << 20  # distribution refuses to store a manifest over 4 MiB
CONFIG_LIMIT = 16 << 20
ANN_REF_NAME = "org.opencontainers.image.ref.name"
_REGULAR = stat.S_IFREG | 0o444
_OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(slots=True)
class _Doc:
    digest: str
    data: bytes
    media_type: str
    doc: Any  # decoded JSON (None when it did not decode)


@dataclass
class Discovery:
    """What the store found: documents by digest, leaves with their descriptor sizes, tags."""

    tags: dict[str, str] = field(default_factory=dict)  # tag -> manifest digest
    docs: dict[str, _Doc] = field(default_factory=dict)  # manifests and indexes
    configs: dict[str, bytes] = field(default_factory=dict)  # cache configs
    leaves: dict[str, int] = field(default_factory=dict)  # layers, image configs -> size
    errors: dict[str, OcicacheError] = field(default_factory=dict)  # documents that failed
    gone: tuple[str, ...] = ()  # older digests the registry no longer serves
    problems: list[str] = field(default_factory=list)


class RegistryStore:
    """One repository of a registry, read through the distribution API (see module docstring).

    Use as a context manager: it holds the HTTP client."""

    def __init__(
        self,
        target: RegistryTarget,
        client: RegistryClient | None = None,
        *,
        storage: DistributionStorage | None = None,
        older: Iterable[str] = (),
        seen: dict[str, int] | None = None,
        verify: bool = False,
        history: dict[str, list[tuple[str, int]]] | None = None,
    ) -> None:
        """`older`: digests of older exports to look for; `seen`: digest -> when ocicache first
        saw a tag on it (record.py); `verify`: HEAD every blob a descriptor names (`check`),
        so that a missing blob is missing and a blob's size is the registry's."""
        self.registry = target
        self.client = client if client is not None else RegistryClient(target)
        self.storage = storage
        self._older = tuple(older)
        self._seen = dict(seen or {})
        self._history = history or {}  # tag -> [(digest, first seen)], oldest first (record.py)
        self._verify = verify
        self._read_ns = time.time_ns()
        self._heads: dict[str, int | None] | None = None
        self._times: dict[str, int] | None = None
        self._found: Discovery | None = None
        # Called with {tag: digest} once the tags are read (targets.py keeps ocicache's record).
        self.on_read: Callable[[dict[str, str]], object] | None = None
        self._presence: tuple[frozenset[str], dict[str, tuple[int, int] | None]] | None = None

    # -- the Store protocol ---------------------------------------------------------------------
    @property
    def root(self) -> str:  # type: ignore[override]
        return self.registry.display()

    @property
    def target(self) -> str:
        return self.registry.display()

    @property
    def kind(self) -> str:
        return "registry"

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    @property
    def found(self) -> Discovery:
        if self._found is None:
            self._found = self._discover()
        return self._found

    def untimed(self) -> frozenset[str]:
        """Digests whose time the store does not know (every one, without the storage).

        A manifest's mtime_ns is then when ocicache first saw a tag on it (later than its
        push), else the time of this read: never older than the truth, so gc's grace keeps a
        manifest it cannot date."""
        if self.storage is None:
            return frozenset(self._all_digests())
        return frozenset()

    def superseded(self) -> dict[str, int]:
        """Digest -> when a tag last moved off it: in the storage, the mtime of the tag's next
        `index/` link; else when ocicache first saw the tag on the next digest (record.py)."""
        out: dict[str, int] = {}

        def moved(history: list[tuple[str, int]]) -> None:
            for (digest, _), (_, then) in itertools.pairwise(history):
                out[digest] = max(out.get(digest, 0), then)

        if self.storage is not None:
            for hist in self.storage.tags().values():
                moved(sorted(hist.index, key=lambda dn: dn[1]))
        else:
            for seen in self._history.values():
                moved(seen)
        return out

    def problems(self) -> tuple[str, ...]:
        """What was skipped and why (a name in tags/list that is not a tag, a tag deleted
        between tags/list and its GET), and the storage directory's own problems. An older
        manifest the registry no longer serves is not one: it is gone."""
        storage = self.storage.problems() if self.storage is not None else ()
        return (*self.found.problems, *storage)

    def read_index(self) -> IndexRead:
        found = self.found
        times = self._manifest_times()
        entries = []
        for tag, digest in sorted(found.tags.items(), key=lambda td: (times.get(td[1], 0), td[0])):
            doc = found.docs.get(digest)
            size = len(doc.data) if doc else self._head_size(digest)
            media = doc.media_type if doc else mt.OCI_MANIFEST
            entries.append(
                {"mediaType": media, "digest": digest, "size": size, "annotations": {ANN_REF_NAME: tag}}
            )
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
        data = json.dumps(index, separators=(",", ":")).encode()
        return IndexRead(data, index, None, ())

    def read_top(self, name: str, limit: int = 1 << 20) -> bytes | None:
        if name == INDEX_JSON:
            return self.read_index().data
        if name == OCI_LAYOUT:
            return _OCI_LAYOUT
        return None

    def stat_top(self, name: str) -> os.stat_result | None:
        return None

    def scan_blobs(self) -> BlobScan:
        found = self.found
        times = self._manifest_times()
        for digest, ns in self._seen.items():
            times.setdefault(digest, ns)
        now = self._read_ns
        blobs: dict[str, BlobFile] = {}
        for digest, doc in found.docs.items():
            blobs[digest] = BlobFile(digest, len(doc.data), times.get(digest, now), _REGULAR, len(doc.data))
        for digest in found.errors:
            if digest not in blobs:
                size = self._head_size(digest)
                blobs[digest] = BlobFile(digest, size, times.get(digest, now), _REGULAR, size)
        for digest, data in found.configs.items():
            blobs[digest] = BlobFile(digest, len(data), self._blob_time(digest), _REGULAR, len(data))
        heads = self._head_leaves() if self._verify else {}
        for digest, size in found.leaves.items():
            if digest in blobs or not self._present(digest):
                continue
            if self._verify:
                real = heads.get(digest)
                if real is None:
                    continue  # the registry does not have it: missing
                size = real
            blobs[digest] = BlobFile(digest, size, self._blob_time(digest), _REGULAR, size)
        return BlobScan(dict(sorted(blobs.items())), ())

    def _head_leaves(self) -> dict[str, int | None]:
        """HEAD every leaf a descriptor names: its size in the registry, None when missing."""
        if self._heads is None:
            leaves = [
                d for d in self.found.leaves if d not in self.found.docs and d not in self.found.configs
            ]
            self._heads = dict(zip(leaves, self.client.map(self.client.head_blob, leaves), strict=True))
        return self._heads

    def scan_ingest(self) -> tuple[IngestEntry, ...]:
        """Uploads left in the storage's `_uploads/` (only with the storage directory)."""
        if self.storage is None:
            return ()
        out = []
        for up in self.storage.uploads():
            rel = f"_uploads/{up.uuid}"
            out.append(
                IngestEntry(up.uuid, rel, up.bytes, up.bytes, None, up.started_ns or 0, None, up.bytes)
            )
        return tuple(out)

    def scan_quarantine(self) -> QuarantineScan:
        return QuarantineScan((), ())

    def read_blob(self, digest: Digest, limit: int) -> bytes:
        key = str(digest)
        found = self.found
        if key in found.errors:
            raise found.errors[key]
        doc = found.docs.get(key)
        if doc is not None:
            return doc.data[:limit]
        data = found.configs.get(key)
        if data is not None:
            return data[:limit]
        got = self.client.get_blob(key, min(limit, CONFIG_LIMIT))
        if got is None:
            raise FileNotFoundError(f"{self.registry.ref(key)}: blob unknown to the registry")
        return got

    def sniff_ahead(self, wanted: bool = True) -> None:
        """(Nothing is read ahead: a registry's blobs are never sniffed.)"""

    def read_blob_head(self, blob: BlobFile, n: int) -> bytes:
        """A document's first bytes; b"" for a leaf (a layer's kind comes from the descriptor
        that names it: a registry's layers are never fetched to sniff them)."""
        found = self.found
        doc = found.docs.get(blob.digest)
        if doc is not None:
            return doc.data[:n]
        data = found.configs.get(blob.digest)
        if data is not None:
            return data[:n]
        if blob.digest in found.errors:
            raise found.errors[blob.digest]
        return b""

    def open_blob_fd(self, blob: BlobFile) -> int:
        raise OSError(f"{blob.digest}: a registry's blobs are streamed over HTTP, not opened")

    def stat_blob(self, digest: str) -> os.stat_result | None:
        return None

    def walk_files(self) -> Iterator[tuple[str, os.stat_result]]:
        return iter(())

    # -- discovery ------------------------------------------------------------------------------
    def _discover(self) -> Discovery:
        client, found = self.client, Discovery()
        try:
            tags = client.tags()
        except NotFoundError:
            if self.storage is None and not self._older:
                raise NotACacheDirError(
                    f"{self.registry.display()}: no such repository in the registry"
                ) from None
            tags = []
        from ocicache.store.registry.target import validate_tag

        valid = []
        for tag in tags:
            try:
                validate_tag(tag)
                valid.append(tag)
            except OcicacheError:
                found.problems.append(f"tags/list names {tag!r}, which is not a tag: skipped")
        tags = valid
        answers = client.map(lambda t: self._get_manifest(t), tags)
        for tag, got in zip(tags, answers, strict=True):
            if isinstance(got, OcicacheError):
                raise got
            if got is None:
                found.problems.append(f"tag {tag}: listed by tags/list but not served (deleted meanwhile)")
                continue
            found.tags[tag] = got.digest
            self._add_doc(found, got)
        if self.on_read is not None:
            self.on_read(dict(found.tags))
        older = [d for d in dict.fromkeys(self._older_digests()) if d not in found.docs]
        gone = []
        for digest, got in zip(older, client.map(lambda d: self._get_manifest(d), older), strict=True):
            if got is None:
                gone.append(digest)
            elif isinstance(got, OcicacheError):
                found.errors[digest] = got
            else:
                self._add_doc(found, got)
        found.gone = tuple(gone)
        self._walk(found)
        return found

    def _get_manifest(self, reference: str) -> ManifestResponse | OcicacheError | None:
        try:
            return self.client.get_manifest(reference, MANIFEST_LIMIT)
        except CorruptError as e:  # a digest mismatch, a manifest over the limit
            if reference.startswith("sha256:") or reference.startswith("sha512:"):
                return e
            e.message = f"tag {reference}: {e.message}"
            raise

    def _older_digests(self) -> list[str]:
        out: list[str] = list(self._older)
        if self.storage is not None:
            for hist in self.storage.tags().values():
                out.extend(d for d, _ in hist.index)
                if hist.current:
                    out.append(hist.current)
            out.extend(self.storage.revisions())
        return out

    @staticmethod
    def _add_doc(found: Discovery, got: ManifestResponse) -> None:
        try:
            doc = json.loads(got.data)
        except ValueError:
            doc = None
        media = got.media_type
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
            media = doc["mediaType"]
        found.docs[got.digest] = _Doc(got.digest, got.data, media, doc)

    def _walk(self, found: Discovery) -> None:
        """Follow descriptors from every document: child manifests are fetched (by digest),
        cache configs fetched as blobs, everything else recorded as a leaf."""
        todo = list(found.docs.values())
        while todo:
            want_docs: list[str] = []
            want_configs: list[str] = []
            for doc in todo:
                for key, desc in _descriptors(doc.doc):
                    digest, media = desc.get("digest"), desc.get("mediaType")
                    size = desc.get("size")
                    if not isinstance(digest, str) or not is_valid_digest(digest):
                        continue
                    media = media if isinstance(media, str) else ""
                    if media == mt.CACHE_CONFIG:
                        if digest not in found.configs:
                            want_configs.append(digest)
                    elif key in ("manifests", "subject") and (media in mt.DOCUMENT_TYPES or not media):
                        if digest not in found.docs and digest not in found.errors:
                            want_docs.append(digest)
                    elif isinstance(size, int) and not isinstance(size, bool) and size >= 0:
                        found.leaves.setdefault(digest, size)
            todo = []
            want_docs = list(dict.fromkeys(want_docs))
            for digest, got in zip(
                want_docs, self.client.map(lambda d: self._get_manifest(d), want_docs), strict=True
            ):
                if isinstance(got, ManifestResponse):
                    self._add_doc(found, got)
                    todo.append(found.docs[got.digest])
                elif isinstance(got, OcicacheError):
                    found.errors[digest] = got
            want_configs = list(dict.fromkeys(want_configs))
            for digest, data in zip(
                want_configs, self.client.map(lambda d: self._get_config(d), want_configs), strict=True
            ):
                if isinstance(data, bytes):
                    found.configs[digest] = data
                elif isinstance(data, OcicacheError):
                    found.errors[digest] = data

    def _get_config(self, digest: str) -> bytes | OcicacheError | None:
        if not self._present(digest):
            return None
        try:
            return self.client.get_blob(digest, CONFIG_LIMIT)
        except CorruptError as e:
            return e

    # -- times and presence ---------------------------------------------------------------------
    def _all_digests(self) -> list[str]:
        f = self.found
        return [*f.docs, *f.configs, *f.leaves, *f.errors]

    def _manifest_times(self) -> dict[str, int]:
        """Manifest digest -> when a tag was pointed at it, else when it was first pushed (read
        once: the index and the blob scan both ask)."""
        if self._times is None:
            self._times = self._read_manifest_times()
        return dict(self._times)

    def _read_manifest_times(self) -> dict[str, int]:
        if self.storage is None:
            return {}
        out: dict[str, int] = {}
        for digest, rev in self.storage.revisions().items():
            out[digest] = rev.link_mtime_ns
        tagged: dict[str, int] = {}
        for hist in self.storage.tags().values():
            for digest, ns in hist.index:
                tagged[digest] = max(tagged.get(digest, 0), ns)
        out.update(tagged)
        return out

    def _blob_time(self, digest: str) -> int:
        if self.storage is None:
            return 0
        got = self._storage_blob(digest)
        return got[1] if got else 0

    def _present(self, digest: str) -> bool:
        """Without the storage directory every blob a descriptor names is taken to exist
        (`check` asks the registry); with it, a blob exists when its data is there and the
        repository links it (distribution answers 404 otherwise)."""
        if self.storage is None:
            return True
        links, _ = self._storage_blobs()
        return digest in links and self._storage_blob(digest) is not None

    def _storage_blobs(self) -> tuple[frozenset[str], dict[str, tuple[int, int] | None]]:
        if self._presence is None:
            assert self.storage is not None
            self._presence = (self.storage.layer_links(), {})
        return self._presence

    def _storage_blob(self, digest: str) -> tuple[int, int] | None:
        _, cache = self._storage_blobs()
        if digest not in cache:
            assert self.storage is not None
            cache[digest] = self.storage.blob(digest)
        return cache[digest]

    def _head_size(self, digest: str) -> int:
        try:
            got = self.client.head_manifest(digest)
        except OcicacheError:
            return 0
        return got[2] if got else 0


def _descriptors(doc: object) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, descriptor) for every descriptor a manifest or index names."""
    if not isinstance(doc, dict):
        return
    for key in mt.DESCRIPTOR_KEYS:
        value = doc.get(key)
        items = value if isinstance(value, list) else [value]
        for d in items:
            if isinstance(d, dict):
                yield key, d


def hash_blobs(
    store: RegistryStore,
    blobs: Iterable[BlobFile],
    progress: Callable[[Any], None] | None = None,
) -> dict[str, HashResult]:
    """Download and hash every blob (`check --deep`), a few at a time; results by digest.
    `progress` gets a hashing.Progress after each chunk (at most every 0.2 s)."""
    from ocicache.store.hashing import Progress

    todo = sorted(blobs, key=lambda b: b.digest)
    total = sum(b.size for b in todo)
    done = [0, 0]
    start = time.monotonic()
    last = [0.0]
    lock = threading.Lock()

    def tick(n: int, finished: bool = False) -> None:
        with lock:
            done[0] += n
            done[1] += finished
            now = time.monotonic()
            if progress is not None and (finished or now - last[0] >= 0.2):
                last[0] = now
                progress(Progress(done[0], total, done[1], len(todo), now - start))

    def one(b: BlobFile) -> HashResult:
        algorithm = b.digest.split(":", 1)[0]
        h = hashlib.new(algorithm)
        n = 0
        try:
            doc = store.found.docs.get(b.digest)
            data = doc.data if doc is not None else store.found.configs.get(b.digest)
            if data is not None:  # a manifest or cache config the read fetched (and verified)
                h.update(data)
                n = len(data)
                tick(n, True)
                return HashResult(b.digest, f"{algorithm}:{h.hexdigest()}", n)
            with store.client.open_blob(b.digest) as chunks:
                for chunk in chunks:
                    h.update(chunk)
                    n += len(chunk)
                    tick(len(chunk))
        except OcicacheError as e:
            tick(0, True)
            return HashResult(b.digest, None, n, e.message)
        tick(0, True)
        return HashResult(b.digest, f"{algorithm}:{h.hexdigest()}", n)

    results = store.client.map(one, todo)
    return {r.digest: r for r in results}
