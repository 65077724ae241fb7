"""`check`: every problem in a cache directory as a Finding, collected first and reported after.

Pure over a Snapshot and (optionally) the results of re-hashing blobs. Severities:
- error: the integrity of an export is broken (a wrong digest or size, a missing blob an export
  needs, a torn/missing/invalid index.json, manifest or cache config): `check` exits 1;
- warning: odd but harmless to imports (stray files in blobs/, an invalid oci-layout, a
  manifest or config over BuildKit's 1 MiB import limit, a key repeated in one object of a
  manifest or config: BuildKit keeps its last value, and so does ocicache);
- note: leftovers the OCI layout allows, like `git fsck`'s dangling objects (unreferenced blobs,
  stale ingest/, a blob left writable by an interrupted export).
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocicache.base.errors import OcicacheError, TooLargeError, UsageError, missing_manifest_hint
from ocicache.core.exports import Export
from ocicache.core.reports import StackLayer, stack
from ocicache.format import documents as docs
from ocicache.format.digest import parse_digest
from ocicache.format.names import INDEX_JSON, LOCK_FILE, OCI_LAYOUT, QUARANTINE
from ocicache.format.schema import Violation, validate
from ocicache.store.base import HashResult, Store, blob_relpath

if TYPE_CHECKING:
    from ocicache.core.snapshot import Snapshot

ERROR = "error"
WARNING = "warning"
NOTE = "note"
SEVERITIES = (ERROR, WARNING, NOTE)

EFFECT_REBUILD = "rebuild"
EFFECT_FAIL = "fail"


@dataclass(frozen=True, slots=True)
class Step:
    """A build step an import would not take from the cache because a layer is missing."""

    layer: int  # index in the cache config's layers[] (-1: the config does not place it)
    digest: str  # the layer blob of that step
    effect: str  # "rebuild" (the step runs again) or "fail" (the import cannot go on)


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: how bad, what kind (`code`), about which file/digest, and where in it."""

    severity: str
    code: str
    file: str
    digest: str | None
    where: str
    message: str
    export: str | None = None  # the export (manifest digest) the finding breaks, if any
    steps: tuple[Step, ...] = ()

    def __str__(self) -> str:
        return ": ".join(p for p in (self.file, self.where, self.message) if p)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Every finding, most severe first, and what was looked at."""

    directory: Path | str  # a registry's target
    findings: tuple[Finding, ...]
    hashed: bool
    exports: int
    blobs: int
    blob_bytes: int
    hashed_blobs: int
    hashed_bytes: int
    local: bool = True  # False: a registry

    @property
    def ok(self) -> bool:
        """True when no finding is an error: every export is intact."""
        return not any(f.severity == ERROR for f in self.findings)

    def count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity)


def _rel(digest: str) -> str:
    try:
        return blob_relpath(parse_digest(digest))
    except UsageError:
        return digest


def check(
    snap: Snapshot,
    hashes: Mapping[str, HashResult] | None = None,
    violations: Mapping[str, tuple[Violation, ...]] | None = None,
) -> CheckResult:
    """Every finding about `snap`; `hashes` (digest -> result) adds digest verification and
    `violations` (file -> every schema violation, see `schema_violations`) lists each one."""
    out = _Collector(snap, violations or {})
    out.index()
    out.blobs(hashes)
    out.duplicate_keys()
    out.exports()
    out.foreign()
    out.leftovers()
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings = sorted(
        dict.fromkeys(out.findings),  # the same finding found twice is reported once
        key=lambda f: (order[f.severity], f.code, f.file, f.digest or "", f.where, f.export or "", f.message),
    )
    inv = snap.inventory
    return CheckResult(
        directory=snap.root,
        findings=tuple(findings),
        hashed=hashes is not None,
        exports=len(snap.exports),
        blobs=len(inv.blobs),
        blob_bytes=sum(b.size for b in inv.blobs.values()),
        hashed_blobs=len(hashes or {}),
        hashed_bytes=sum(h.bytes_read for h in (hashes or {}).values()),
        local=inv.kind == "local",
    )


class _Collector:
    def __init__(self, snap: Snapshot, violations: Mapping[str, tuple[Violation, ...]]) -> None:
        self.snap = snap
        self.violations = violations
        self.inv = snap.inventory
        self.findings: list[Finding] = []
        self.layer_digests = {d.digest for e in snap.exports for d in e.layers}
        self.referenced = set(self.inv.foreign_closure)
        for e in snap.exports:
            self.referenced.update(e.blobs)
        self._stack: tuple[str, list[StackLayer]] | None = None  # of the export last asked

    def stack(self, e: Export) -> list[StackLayer]:
        """The stack of `e`, computed once for all its missing layers."""
        if self._stack is None or self._stack[0] != e.digest:
            self._stack = (e.digest, stack(self.inv, e))
        return self._stack[1]

    def add(
        self,
        severity: str,
        code: str,
        file: str,
        message: str,
        *,
        digest: str | None = None,
        where: str = "",
        export: str | None = None,
        steps: tuple[Step, ...] = (),
    ) -> None:
        self.findings.append(Finding(severity, code, file, digest, where, message, export, steps))

    def invalid(self, file: str, where: str, message: str, digest: str | None = None) -> None:
        """One finding per schema violation when they are known, else the first one."""
        found = [v for v in self.violations.get(file, ()) if not isinstance(v, DuplicateKey)]
        if not found:
            self.add(ERROR, "invalid-document", file, message, digest=digest, where=where)
        for v in found:
            self.add(ERROR, "invalid-document", file, v.message, digest=digest, where=v.path or "(root)")

    # -- index.json and oci-layout -------------------------------------------------------------
    def index(self) -> None:
        inv = self.inv
        err = inv.index_error
        for p in inv.problems:
            if p.file == LOCK_FILE:
                self.add(WARNING, "unusable-lock", LOCK_FILE, p.message)
        if err is not None:
            if isinstance(err, TooLargeError):
                self.add(
                    ERROR,
                    "oversize-index",
                    err.file or INDEX_JSON,
                    f"{err.message}: its exports and tags are unknown to ocicache",
                )
            elif err.message == "missing":
                self.add(
                    ERROR,
                    "missing-index",
                    INDEX_JSON,
                    "missing: no tag can be imported (`ocicache repair` rebuilds it)",
                )
            elif err.where:  # a schema violation: the JSON parsed, the document is wrong
                self.invalid(err.file or INDEX_JSON, err.where, err.message)
            else:
                self.add(
                    ERROR,
                    "torn-index",
                    err.file or INDEX_JSON,
                    f"{err.message} (`ocicache repair` rebuilds it)",
                )
        if inv.blobs and inv.names_nothing_present():
            self.add(
                WARNING,
                "index-names-nothing",
                INDEX_JSON,
                "names no blob on disk: gc refuses to act on it without --all (it would "
                "delete every blob); `ocicache repair` points `latest` at the newest export",
            )
        if inv.index is not None:
            for entry in inv.index.entries:
                d = entry.descriptor.digest
                if d not in inv.blobs:
                    tag = entry.ref_name or "(no ref name)"
                    hint = missing_manifest_hint(inv.root, entry.ref_name, entry.pinned)
                    self.add(
                        ERROR,
                        "index-missing-manifest",
                        INDEX_JSON,
                        f"tag {tag}: manifest {d} is missing; importing this tag fails "
                        f"({hint}){inv.missing_note(d)}",
                        digest=d,
                        where=f"manifests[{entry.position}]",
                        export=d,
                    )
                elif inv.blobs[d].size != entry.descriptor.size:
                    self.add(
                        ERROR,
                        "size-mismatch",
                        INDEX_JSON,
                        f"says {entry.descriptor.size} bytes, manifest {d} has {inv.blobs[d].size}",
                        digest=d,
                        where=f"manifests[{entry.position}].size",
                        export=d,
                    )
        if isinstance(inv.oci_layout, Exception):
            # BuildKit's importer never reads oci-layout: harmless to imports, still wrong.
            self.add(
                WARNING,
                "invalid-document",
                OCI_LAYOUT,
                str(getattr(inv.oci_layout, "message", inv.oci_layout)),
            )

    # -- every blob ----------------------------------------------------------------------------
    def blobs(self, hashes: Mapping[str, HashResult] | None) -> None:
        inv = self.inv
        for digest, blob in inv.blobs.items():
            h = hashes.get(digest) if hashes is not None else None
            if h is not None and h.error is not None:
                self.add(ERROR, "unreadable-blob", blob.relpath, h.error, digest=digest)
            elif h is not None and h.actual != digest:
                self.add(
                    ERROR, "digest-mismatch", blob.relpath, f"content hashes to {h.actual}", digest=digest
                )
            elif h is not None and h.bytes_read != blob.size:
                self.add(
                    ERROR,
                    "size-mismatch",
                    blob.relpath,
                    f"changed while checking ({blob.size} bytes, read {h.bytes_read})",
                    digest=digest,
                )
            if blob.mode & 0o022:
                # An export killed between rename and chmod leaves 0666 (FORMAT.md).
                self.add(
                    NOTE,
                    "mode-0666",
                    blob.relpath,
                    f"mode {stat.S_IMODE(blob.mode):04o}, BuildKit leaves blobs 0444 "
                    "(an interrupted export?)",
                    digest=digest,
                )
        for digest, e in inv.bad_docs.items():
            if digest in self.layer_digests:
                continue  # a layer that happens to start with "{": not a document
            if e.message.startswith(docs.TOO_BIG):
                self._too_big(digest, e)
                continue
            if e.message.startswith(_UNREADABLE):
                if hashes is None or hashes.get(digest, _NO_HASH).error is None:
                    self.add(ERROR, "unreadable-blob", e.file or _rel(digest), e.message, digest=digest)
                continue
            if digest in self.referenced:  # a manifest or cache config an export needs
                self.invalid(e.file or _rel(digest), e.where or "", e.message, digest)
            elif e.where:  # JSON, but not a document we know: nothing depends on it
                self.add(
                    WARNING,
                    "invalid-document",
                    e.file or _rel(digest),
                    f"{e.message} (no export references it)",
                    digest=digest,
                    where=e.where,
                )
            # else: it only starts like JSON (a layer of an unknown export?): see leftovers.
        for p in inv.problems:
            if p.message.startswith("cannot read"):
                named = _digest_of(p.file)
                if hashes is None or named not in hashes:
                    self.add(ERROR, "unreadable-blob", p.file, p.message, digest=named)

    def _too_big(self, digest: str, e: OcicacheError) -> None:
        """A document not read because of its size: what it says (and references) is unknown."""
        file = e.file or _rel(digest)
        if digest in self.referenced:
            self.add(
                ERROR,
                "document-too-big",
                file,
                f"{e.message}: a document an export or index.json needs, not read: what "
                "it references is unknown (gc keeps it, and refuses to run while "
                "index.json needs it)",
                digest=digest,
            )
        else:
            self.add(
                WARNING,
                "document-too-big",
                file,
                f"{e.message}: starts like JSON, not read (no export references it; gc "
                "keeps it: it could be a manifest)",
                digest=digest,
            )

    def duplicate_keys(self) -> None:
        for file, found in self.violations.items():
            for v in found:
                if isinstance(v, DuplicateKey):
                    self.add(
                        WARNING,
                        "duplicate-key",
                        file,
                        f"key {v.key!r} appears more than once: BuildKit (Go's encoding/json) "
                        "uses the last value, and so does ocicache",
                        digest=_digest_of(file),
                        where=v.path,
                    )

    # -- every export --------------------------------------------------------------------------
    def exports(self) -> None:
        seen_configs: set[str] = set()
        for e in self.snap.exports:
            self._export(e, seen_configs)

    def _export(self, e: Export, seen_configs: set[str]) -> None:
        inv = self.inv
        rel = _rel(e.digest)
        if e.shape is not None:
            manifest = inv.manifests[e.digest]
            if e.digest in {d.digest for d in (*manifest.layers, *manifest.others)} or (
                manifest.config is not None and manifest.config.digest == e.digest
            ):
                self.add(
                    ERROR,
                    "self-reference",
                    rel,
                    "manifest references itself (its digest cannot be right)",
                    digest=e.digest,
                    export=e.digest,
                )
            if manifest.config is None:
                self.add(
                    ERROR,
                    "no-cache-config",
                    rel,
                    "cache manifest names no cache config: importing it fails",
                    digest=e.digest,
                    export=e.digest,
                )
        config = e.config.digest if e.config else None
        names = (*e.tags, *(f"{p} (pin)" for p in e.pins))
        tags = f" ({', '.join(names)})" if names else ""
        for doc, kind in ((e.digest, "manifest"), (config, "cache config")):
            big = inv.blobs.get(doc) if doc else None
            if big is not None and big.size > docs.IMPORT_LIMIT:
                self.add(
                    WARNING,
                    "oversize-document",
                    big.relpath,
                    f"{kind} of {big.size} bytes: BuildKit refuses to import one over "
                    f"{docs.IMPORT_LIMIT} bytes (1 MiB)",
                    digest=doc,
                    export=e.digest,
                )
        for d in e.missing:
            if d == config:
                self.add(
                    ERROR,
                    "missing-blob",
                    _rel(d),
                    f"cache config of export {e.digest}{tags} is missing: importing it fails"
                    f"{inv.missing_note(d)}",
                    digest=d,
                    export=e.digest,
                )
            else:
                steps = self._steps(e, d)
                self.add(
                    ERROR,
                    "missing-blob",
                    _rel(d),
                    f"layer of export {e.digest}{tags} is missing: {_describe(steps)}{inv.missing_note(d)}",
                    digest=d,
                    export=e.digest,
                    steps=steps,
                )
        sizes = {x.digest: x.size for x in e.layers}
        if e.config is not None:
            sizes[e.config.digest] = e.config.size
        for d in e.wrong_size:
            blob = inv.blobs[d]
            self.add(
                ERROR,
                "size-mismatch",
                blob.relpath,
                f"export {e.digest}{tags} says {sizes.get(d)} bytes, the file has {blob.size}",
                digest=d,
                export=e.digest,
            )
        cc = e.cache_config
        if cc is not None and cc.digest not in seen_configs:
            seen_configs.add(cc.digest)
            for p in cc.problems:
                where, _, message = p.partition(": ")
                code = (
                    "config-loop" if "loop" in message or "own parent" in message else "config-out-of-range"
                )
                self.add(
                    ERROR, code, _rel(cc.digest), message, digest=cc.digest, where=where, export=e.digest
                )

    def _steps(self, e: Export, missing: str) -> tuple[Step, ...]:
        return steps_without(e, missing, self.stack(e))

    # -- foreign content (images, artifacts: anything index.json reaches besides exports) ------
    def foreign(self) -> None:
        """Every blob foreign content reaches is checked by size against the descriptor that
        names it (and by digest with every blob); a document in it that cannot be understood
        is an error (bad_docs ones are reported by `blobs`); a missing blob is a warning (a
        layout may hold part of an image: one platform of an index), a missing subject a note."""
        inv = self.inv
        for digest, why in sorted(inv.foreign_unknown.items()):
            if digest in inv.bad_docs:
                continue  # reported with its parse error (invalid-document, document-too-big)
            self.add(
                ERROR,
                "invalid-document",
                _rel(digest),
                f"{why}: {inv.reached_from(digest)} names it as a "
                f"{inv.foreign_roles.get(digest, 'manifest')}; what it references is "
                "unknown (gc refuses)",
                digest=digest,
            )
        for parent, refs in sorted(inv.foreign_refs.items()):
            named = INDEX_JSON if parent == INDEX_JSON else _rel(parent)
            for ref in refs:
                blob = inv.blobs.get(ref.digest)
                if blob is None:
                    if parent == INDEX_JSON:
                        continue  # index-missing-manifest (index())
                    severity = NOTE if ref.where in ("subject", "referrer") else WARNING
                    self.add(
                        severity,
                        "foreign-missing-blob",
                        _rel(ref.digest),
                        f"{ref.role} named by {named} ({ref.where}) is missing: that "
                        "image or artifact is incomplete",
                        digest=ref.digest,
                        where=ref.where,
                    )
                elif ref.size is not None and ref.size != blob.size and parent != INDEX_JSON:
                    self.add(
                        ERROR,
                        "size-mismatch",
                        blob.relpath,
                        f"{named} ({ref.where}) says {ref.size} bytes, the file has {blob.size}",
                        digest=ref.digest,
                    )

    # -- leftovers the layout allows -----------------------------------------------------------
    def leftovers(self) -> None:
        inv = self.inv
        for s in inv.strays:
            code = "bad-name" if s.reason.startswith("name is not a digest") else "stray"
            self.add(WARNING, code, s.relpath, s.reason)
        for entry in inv.ingest:
            what = (
                "no data file"
                if entry.data_size is None
                else (f"{entry.data_size} of {entry.total if entry.total is not None else '?'} bytes")
            )
            self.add(
                NOTE,
                "stale-ingest",
                entry.relpath,
                f"interrupted write ({what}); BuildKit never cleans ingest/",
            )
        held = inv.quarantine
        if held.blobs:
            self.add(
                NOTE,
                "quarantine",
                QUARANTINE,
                f"{len(held.blobs)} blob(s), {held.bytes} bytes gc moved out of blobs/: put "
                "back when an export needs them, deleted by a gc once older than --grace",
            )
        for odd in held.odd:
            self.add(WARNING, "stray", odd, "not a blob gc quarantined; left alone")
        referenced = self.referenced
        # A document we could not read may reference blobs that look unreferenced.
        doubtful = sum(
            1 for e in inv.bad_docs.values() if e.where or e.message.startswith((*_UNREADABLE, docs.TOO_BIG))
        )
        doubtful += sum(1 for d in inv.foreign_unknown if d not in inv.bad_docs)
        caveat = f"; {doubtful} unreadable or invalid document(s) may reference it" if doubtful else ""
        for digest, blob in inv.blobs.items():
            err = inv.bad_docs.get(digest, _NO_ERROR)
            if digest not in referenced and not err.where and not err.message.startswith(docs.TOO_BIG):
                self.add(
                    NOTE,
                    "unreferenced-blob",
                    blob.relpath,
                    f"{blob.size} bytes no export references{caveat}",
                    digest=digest,
                )


@dataclass(frozen=True)
class DuplicateKey(Violation):
    """A key repeated within one object of a cache manifest or config. No schema can say this,
    and it is harmless to imports (BuildKit, like Go's encoding/json, keeps the last value, as
    ocicache does); it rides with the violations because the same second read finds both."""

    key: str


_IMPORTED = frozenset({docs.KIND_CACHE_MANIFEST, docs.KIND_CACHE_CONFIG})


def schema_violations(store: Store, snap: Snapshot) -> dict[str, tuple[Violation, ...]]:
    """What a second, complete read of the documents finds, keyed by file: every schema
    violation of index.json and of the JSON blobs in `snap.inventory.bad_docs` (readers stop at
    the first), and every duplicate key (a DuplicateKey) of the cache manifests and configs
    (readers keep the last value without a word)."""
    inv = snap.inventory
    out: dict[str, list[Violation]] = {}
    todo: list[tuple[str, str | None]] = []
    if inv.index_error is not None and inv.index_error.where:
        todo.append((INDEX_JSON, None))
    todo.extend((_rel(d), d) for d, e in inv.bad_docs.items() if e.where)
    for file, digest in todo:
        try:
            if digest is None:  # the bytes the first read judged (read between writes)
                doc = docs.loads_strict(inv.index_raw or b"", file)
            else:
                doc = docs.loads_blob(store.read_blob(parse_digest(digest), docs.JSON_LIMIT), file)
        except (OcicacheError, OSError):
            continue  # changed since the first read: the first violation stands
        name = "image-index" if digest is None else docs.schema_for(doc)
        if name is not None:
            out.setdefault(file, []).extend(validate(doc, name))
    for digest, kind in inv.kinds.items():
        if kind in _IMPORTED:
            file = _rel(digest)
            try:
                data = store.read_blob(parse_digest(digest), docs.JSON_LIMIT)
            except (OcicacheError, OSError):
                continue  # the first read's findings stand
            found = docs.duplicate_keys(data)
            out.setdefault(file, []).extend(
                DuplicateKey(path, f"duplicate key {key!r}", key) for path, key in found
            )
    return {file: tuple(found) for file, found in out.items() if found}


# CorruptError messages of Layout reads that mean "could not read", not "read and invalid".
_UNREADABLE = ("permission denied", "cannot read", "not a regular file", "is a symlink")
_NO_HASH = HashResult("", None, 0, None)
_NO_ERROR = OcicacheError("")


def _digest_of(relpath: str) -> str | None:
    parts = relpath.split("/")
    if len(parts) == 3 and parts[0] == "blobs":
        return f"{parts[1]}:{parts[2]}"
    return None


def steps_without(e: Export, missing: str, stack_layers: list[StackLayer]) -> tuple[Step, ...]:
    """The steps an import of `e` would rebuild (or fail on) without layer `missing`;
    `stack_layers` is `reports.stack` of `e`.

    A layer's step needs the layer and every ancestor (FORMAT.md: the stack of layer i is i
    plus its ancestors), so every layer whose chain contains the missing one is rebuilt. A
    missing root layer (parent -1, the base) leaves nothing to build on: the import fails.
    """
    cc = e.cache_config
    if cc is None or cc.problems:
        return (Step(-1, missing, EFFECT_REBUILD),)
    hit = {i for i, layer in enumerate(cc.layers) if layer.blob == missing}
    if not hit:
        return (Step(-1, missing, EFFECT_REBUILD),)
    # Stack order puts a parent before its children, so one pass knows, for each layer,
    # whether its chain holds a missing layer and whether its root is missing (no walk up
    # each chain: a chain can be thousands of layers deep).
    affected: dict[int, bool] = {}
    root_missing: dict[int, bool] = {}
    out: list[Step] = []
    for s in stack_layers:
        i = s.index
        if i < 0:
            continue
        parent = cc.layers[i].parent
        if parent == -1:
            affected[i] = root_missing[i] = i in hit
        else:
            affected[i] = i in hit or affected.get(parent, False)
            root_missing[i] = root_missing.get(parent, False)
        if affected[i]:
            out.append(Step(i, s.digest, EFFECT_FAIL if root_missing[i] else EFFECT_REBUILD))
    return tuple(out)


def describe_steps(steps: tuple[Step, ...]) -> str:
    """What an import does without a layer, in words ("an import rebuilds 2 step(s) ...")."""
    return _describe(steps)


def _describe(steps: tuple[Step, ...]) -> str:
    fails = [s for s in steps if s.effect == EFFECT_FAIL]
    rebuild = [s for s in steps if s.effect == EFFECT_REBUILD]
    parts = []
    if fails:
        parts.append(
            f"it is a root (base) layer: an import fails on {len(fails)} step(s) "
            f"built on it ({', '.join(f'layers[{s.layer}]' for s in fails)})"
        )
    if rebuild:
        where = ", ".join(f"layers[{s.layer}]" if s.layer >= 0 else "an unplaced layer" for s in rebuild)
        parts.append(f"an import rebuilds {len(rebuild)} step(s) ({where})")
    return "; ".join(parts) if parts else "an import rebuilds its step"
