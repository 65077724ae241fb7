"""A read of a directory kept whole between runs: the documents the reader found and the exports.

`ops.read.read_store` asks for it when the caller passed a cache (the CLI does). It is used only
when everything the read consumed is what the kept read consumed (`key`): the scan's
fingerprint (every blob's name and lstat fields, and the folders' device and inode:
store/base.BlobScan), index.json's bytes, oci-layout, ingest/, gc's quarantine and every
problem found before the reader ran, under a stamp of ocicache's version, Python's and a hash
of the whole package and its schemas. A digest names its content for good, so equal inputs
give equal documents and equal exports; anything else (and anything unreadable or malformed)
is a miss, and the read is done again, as if nothing were kept.

The values are marshalled as tables (descriptors and cache configs once each, referenced by
number), so that a hit rebuilds ~30k descriptors instead of decoding 600 documents and
recomputing 300 exports. One file per directory (store/cache.py keeps it): the newest read.
"""

from __future__ import annotations

import hashlib
import marshal
from dataclasses import dataclass
from typing import Any

from ocicache.base.errors import CorruptError, OcicacheError, TooLargeError
from ocicache.core.exports import Export
from ocicache.core.inventory import ForeignRef, Inventory, Problem
from ocicache.format.model import (
    CacheConfig,
    CacheManifest,
    ConfigLayer,
    Descriptor,
    OtherManifest,
)


def key(inv: Inventory, fingerprint: bytes, stamp: str) -> bytes:
    """What a kept read must have consumed to be used (the inventory before the reader ran)."""
    err = inv.index_error
    h = hashlib.sha256()
    for part in (
        stamp,
        str(inv.root),
        inv.kind,
        _described(err) if err is not None else None,
        _described(inv.oci_layout) if isinstance(inv.oci_layout, OcicacheError) else inv.oci_layout,
        inv.ingest,
        inv.quarantine,
        inv.strays,
        inv.problems,
        sorted(inv.untimed),
        sorted(inv.superseded.items()),
    ):
        h.update(repr(part).encode("utf-8", "backslashreplace") + b"\0")
    h.update(fingerprint)
    h.update(b"\0" if inv.index_raw is None else b"\1" + inv.index_raw)
    return h.digest()


def encode(k: bytes, inv: Inventory, exports: list[Export], facts: Facts) -> bytes | None:
    """The kept form of what the reader added to `inv`, the exports, and the per-digest facts
    this read used or learned; None when a value is not of the kinds this module knows (then
    nothing is kept)."""
    # Every descriptor once (most are shared by several manifests and exports), numbered; the
    # documents refer to them by number (at C speed: map over id, no call per descriptor).
    every: list[Descriptor] = []
    for m in inv.manifests.values():
        every.extend(m.layers)
        every.extend(m.others)
        if m.config is not None:
            every.append(m.config)
    for o in inv.foreign.values():
        every.extend(o.children)
    for e in exports:
        every.extend(e.layers)
        if e.config is not None:
            every.append(e.config)
    unique = list({id(x): x for x in every}.values())
    del every
    number = {id(x): i for i, x in enumerate(unique)}.__getitem__

    def d(x: Descriptor | None) -> int:
        return -1 if x is None else number(id(x))

    def ds(xs: tuple[Descriptor, ...]) -> list[int]:
        return list(map(number, map(id, xs)))

    try:
        table = [
            (
                x.media_type,
                x.digest,
                x.size,
                x.annotations if type(x.annotations) is dict else dict(x.annotations),
            )
            for x in unique
        ]
        manifests = [
            (key_, m.digest, m.shape, m.media_type, d(m.config), ds(m.layers), ds(m.others))
            for key_, m in inv.manifests.items()
        ]
        configs = [
            (
                key_,
                c.digest,
                list(map(tuple, c.layers)),
                c.record_count,
                list(c.layer_created.items()),
                list(c.problems),
            )
            for key_, c in inv.configs.items()
        ]
        foreign = [
            (key_, o.digest, o.media_type, ds(o.children), list(o.keys), o.artifact_type)
            for key_, o in inv.foreign.items()
        ]
        bad = [(digest, *_error_fields(e)) for digest, e in inv.bad_docs.items()]
        out_exports = []
        for e in exports:
            cc = e.cache_config
            if cc is not None and inv.configs.get(cc.digest) is not cc:
                return None
            out_exports.append(
                (
                    e.digest,
                    e.shape,
                    e.media_type,
                    e.manifest_size,
                    e.tags,
                    e.pins,
                    e.positions,
                    e.tag_positions,
                    e.created_ns,
                    e.created_from,
                    e.mtime_rejected,
                    e.mtime_ns,
                    e.newest_step_ns,
                    d(e.config),
                    cc.digest if cc is not None else None,
                    ds(e.layers),
                    e.blobs,
                    e.size,
                    e.missing_bytes,
                    e.unique_size,
                    e.missing,
                    e.wrong_size,
                    e.problems,
                )
            )
        payload = (
            table,
            manifests,
            configs,
            foreign,
            sorted(inv.foreign_closure),
            [
                (p, [(r.parent, r.where, r.digest, r.size, r.media_type, r.role) for r in refs])
                for p, refs in inv.foreign_refs.items()
            ],
            inv.foreign_roles,
            inv.foreign_unknown,
            inv.referrers,
            inv.kinds,
            bad,
            [(p.severity, p.file, p.where, p.message) for p in inv.problems],
            out_exports,
            [
                (digest, size, kind, _value_tag(value), _error_fields(error) if error is not None else None)
                for digest, (size, kind, value, error) in facts.docs.items()
            ],
            list(facts.not_json.items()),
        )
        return marshal.dumps((k, payload))
    except (ValueError, TypeError, AttributeError):  # a value marshal or this module cannot hold
        return None


@dataclass(slots=True)
class Kept:
    """A kept read, decoded: its key, and the values it puts into an inventory (`apply`)."""

    key: bytes
    manifests: dict[str, CacheManifest]
    configs: dict[str, CacheConfig]
    foreign: dict[str, OtherManifest]
    foreign_closure: set[str]
    foreign_refs: dict[str, list[ForeignRef]]
    foreign_roles: dict[str, str]
    foreign_unknown: dict[str, str]
    referrers: dict[str, list[str]]
    kinds: dict[str, str]
    bad_docs: dict[str, OcicacheError]
    problems: list[Problem]
    exports: list[Export]
    docs: dict[str, Fact]  # digest -> what reading it gave (facts of the next read)
    not_json: dict[str, int]  # digest -> size of a blob whose head is not JSON

    def apply(self, inv: Inventory) -> list[Export]:
        """Put the documents into `inv` (the fresh part of a read whose key is `key`); the
        exports."""
        inv.manifests = self.manifests
        inv.configs = self.configs
        inv.foreign = self.foreign
        inv.foreign_closure = self.foreign_closure
        inv.foreign_refs = self.foreign_refs
        inv.foreign_roles = self.foreign_roles
        inv.foreign_unknown = self.foreign_unknown
        inv.referrers = self.referrers
        inv.kinds = self.kinds
        inv.bad_docs = self.bad_docs
        inv.problems = self.problems
        return self.exports


# What reading one document gave: its size, kind, model value and error (documents.read_document).
Fact = tuple[int, str | None, object | None, CorruptError | None]
NOT_JSON = "N"  # verdicts: the first bytes are not JSON (a layer or other binary blob) ...
PARSED = "J"  # ... or a document read before (ask `parsed`)


class Facts:
    """What the reader may take as known about a digest, from the kept read of the directory
    (whatever its key: a digest names its content, and each fact is used only for a blob of the
    size it was learned at), and what this read used or learned (the next kept read's)."""

    def __init__(self, prior: Kept | None = None) -> None:
        self._docs: dict[str, Fact] = prior.docs if prior is not None else {}
        self._not_json: dict[str, int] = prior.not_json if prior is not None else {}
        self.docs: dict[str, Fact] = {}
        self.not_json: dict[str, int] = {}

    def knows_nothing(self) -> bool:
        """True when no earlier read is behind these facts (every blob is sniffed)."""
        return not self._docs and not self._not_json

    def verdict(self, digest: str, size: int) -> str | None:
        """NOT_JSON, PARSED (ask `parsed`), or None when this digest and size are unknown."""
        if self._not_json.get(digest) == size:
            self.not_json[digest] = size
            return NOT_JSON
        fact = self._docs.get(digest)
        return PARSED if fact is not None and fact[0] == size else None

    def parsed(self, digest: str, size: int) -> tuple[str | None, object | None, CorruptError | None] | None:
        """The kind, value and error reading this digest gave before; None when unknown."""
        fact = self._docs.get(digest)
        if fact is None or fact[0] != size:
            return None
        self.docs[digest] = fact
        return fact[1], fact[2], fact[3]

    def put_not_json(self, digest: str, size: int) -> None:
        self.not_json[digest] = size

    def put_parsed(
        self, digest: str, size: int, kind: str | None, value: object | None, error: CorruptError | None
    ) -> None:
        self.docs[digest] = (size, kind, value, error)


def facts(data: bytes | memoryview | None) -> Facts:
    """The facts of a kept read's bytes (none when there are none or they are malformed)."""
    return Facts(decode(data) if data is not None else None)


def _value_tag(value: object | None) -> str | None:
    if value is None:
        return None
    for tag, kind in (("M", CacheManifest), ("C", CacheConfig), ("O", OtherManifest)):
        if isinstance(value, kind):
            return tag
    raise TypeError(f"cannot keep {type(value).__name__}")


def decode(data: bytes | memoryview) -> Kept | None:
    """The kept read in `data` (encode's bytes); None when it is malformed."""
    try:
        k, payload = marshal.loads(data)
        del data  # (each part is let go of once it is rebuilt: a big read holds ~30 MB of tuples)
        (
            table,
            manifests,
            configs,
            foreign,
            closure,
            refs,
            roles,
            unknown,
            referrers,
            kinds,
            bad,
            problems,
            exports,
            fact_docs,
            not_json,
        ) = payload
        del payload
        if type(k) is not bytes or any(type(v) is not dict for v in (roles, unknown, referrers, kinds)):
            return None
        if not all(type(t) is tuple and len(t) == 4 and type(t[3]) is dict for t in table):
            return None
        new = tuple.__new__  # the NamedTuples built from marshal's tuples (model.new_descriptor)
        descs = [new(Descriptor, t) for t in table]
        del table

        def d(i: int) -> Descriptor | None:
            return descs[i] if i >= 0 else None

        new_configs = {
            key_: CacheConfig(
                digest,
                tuple([new(ConfigLayer, t) for t in layers if len(t) == 2]),
                records,
                dict(created),
                tuple(probs),
            )
            for key_, digest, layers, records, created, probs in configs
        }
        del configs
        new_exports = []
        for e in exports:
            fields: list[Any] = list(e)
            fields[13] = d(fields[13])
            fields[14] = new_configs[fields[14]] if fields[14] is not None else None
            fields[15] = tuple([descs[i] for i in fields[15]])
            new_exports.append(Export(*fields))
        new_manifests = {
            key_: CacheManifest(
                digest,
                shape,
                mt,
                d(config),
                tuple([descs[i] for i in layers]),
                tuple([descs[i] for i in others]),
            )
            for key_, digest, shape, mt, config, layers, others in manifests
        }
        new_foreign = {
            key_: OtherManifest(digest, mt, tuple([descs[i] for i in children]), tuple(keys), artifact)
            for key_, digest, mt, children, keys, artifact in foreign
        }
        values: dict[str, dict[str, Any]] = {"M": new_manifests, "C": new_configs, "O": new_foreign}
        docs = {
            digest: (
                size,
                kind,
                values[tag][digest] if tag else None,
                _error(*err) if err is not None else None,
            )
            for digest, size, kind, tag, err in fact_docs
        }
        return Kept(
            k,
            new_manifests,
            new_configs,
            new_foreign,
            set(closure),
            {parent: [ForeignRef(*r) for r in rs] for parent, rs in refs},
            roles,
            unknown,
            referrers,
            kinds,
            {digest: _error(*fields) for digest, *fields in bad},
            [Problem(*p) for p in problems],
            new_exports,
            docs,
            dict(not_json),
        )
    except Exception:  # anything malformed is a miss, never an error (the read is done again)
        return None


def _described(e: OcicacheError) -> tuple[Any, ...]:
    """An error of any kind as the key sees it."""
    return (type(e).__name__, e.message, e.file, e.where, e.hint, getattr(e, "limit", None))


def _error_fields(e: OcicacheError) -> tuple[Any, ...]:
    if isinstance(e, TooLargeError):
        return ("T", e.message, e.file, e.where, e.hint, e.limit, e.limit_name)
    if type(e) is CorruptError:
        return ("C", e.message, e.file, e.where, e.hint, None, None)
    raise TypeError(f"cannot keep {type(e).__name__}")


def _error(
    kind: str,
    message: str,
    file: str | None,
    where: str | None,
    hint: str | None,
    limit: Any,
    limit_name: Any,
) -> CorruptError:
    if kind == "T":
        return TooLargeError(message, limit=limit, limit_name=limit_name, file=file, where=where, hint=hint)
    if kind == "C":
        return CorruptError(message, file=file, where=where, hint=hint)
    raise ValueError(f"unknown kept error {kind!r}")
