"""`ocicache copy`: one export (or several, or every current one) moved whole from a cache store
to another: a directory or a registry on either side.

What an export is made of: its manifest, its cache config and every layer (and any other blob
the manifest names). Only what the destination lacks is transferred (a directory: a regular
file of the right size under `blobs/`; a registry: HEAD), and every byte is hashed against its
digest as it streams: nothing that does not match becomes visible under the digest.

Order, so that an interrupted copy leaves nothing pointing at anything missing and a re-run
finishes it:
- into a directory (made an OCI layout first when it is missing or empty): under its gc lock
  (quarantine.gc_lock: no gc, pin or repair in between), the layers and cache configs, then the
  manifests, each written as BuildKit commits a blob (store/blobwrite.py), then index.json once,
  atomically, under BuildKit's lock (indexwrite.rewrite_index): for each tag the entries of
  that name are replaced by one entry like BuildKit's, every other entry kept byte for byte;
- into a registry: every blob (a streamed PUT, or a cross-repository mount when both sides are
  repositories of the same registry), then each manifest with its tag, its exact bytes and
  media type.
The source is only read: nothing is written there (with --link, a blob file gains a link).

An export some of whose blobs neither side has is refused (naming them) unless
`allow_missing`; then it is copied without them and the steps an import rebuilds are said.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ocicache.base.errors import (
    CorruptError,
    NotFoundError,
    OcicacheError,
    RefusedError,
    RegistryError,
    UsageError,
)
from ocicache.core import cachefrom, pins
from ocicache.core.check import Step, describe_steps, steps_without
from ocicache.core.exports import Export, build_exports
from ocicache.core.inventory import Inventory
from ocicache.core.refs import resolve
from ocicache.core.reports import stack
from ocicache.format import documents as docs
from ocicache.format.digest import parse_digest
from ocicache.format.indexdoc import split_index
from ocicache.format.mediatypes import CACHE_CONFIG
from ocicache.format.names import BLOBS
from ocicache.ops.read import read_inventory
from ocicache.store.hashing import Progress, ProgressCallback
from ocicache.store.targets import RegistrySource, Target, open_store, resolve_target

KIND_MANIFEST = "manifest"
KIND_CONFIG = "cache-config"
KIND_LAYER = "layer"
CHUNK = 1 << 20
REGISTRY_WORKERS = 4  # blobs moved at once when a registry is on either side
ATTEMPTS = 3  # tries of one blob upload that fails on the network (a new upload each time)
# Tests only: SIGKILL ourselves right after the N-th blob is in place at DST ("N"), or halfway
# through writing the blob after it ("N.5": its first chunk written).
KILL_ENV = "OCICACHE_COPY_TEST_KILL_AFTER"


@dataclass(frozen=True, slots=True)
class Blob:
    """One blob of an export: digest, size (its descriptor's), what it is."""

    digest: str
    size: int
    kind: str  # KIND_*
    media_type: str


@dataclass(frozen=True, slots=True)
class MissingBlob:
    """A blob of an export neither side has (copied without it with --allow-missing)."""

    digest: str
    size: int
    kind: str
    steps: tuple[Step, ...]  # what an import rebuilds (or fails on) without it
    message: str


@dataclass
class ExportCopy:
    """One export copied: the export at SRC, its tags at DST, and what happened to its blobs."""

    export: Export
    tags: tuple[str, ...]
    blobs: tuple[Blob, ...]
    copied: list[Blob] = field(default_factory=list)  # written at DST by this run (by bytes)
    linked: list[Blob] = field(default_factory=list)  # hard-linked (--link)
    mounted: list[Blob] = field(default_factory=list)  # mounted from the source repository
    skipped: list[Blob] = field(default_factory=list)  # DST had them already
    shared: list[Blob] = field(default_factory=list)  # copied for an export before it in this run
    missing: list[MissingBlob] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (tag, digest it named at DST)
    spec: str | None = None  # the --cache-from spec of the export at DST (api fills it in)

    @property
    def digest(self) -> str:
        return self.export.digest

    @property
    def bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    @property
    def done(self) -> list[Blob]:
        """Every blob this run made present at DST (written, linked or mounted)."""
        return [*self.copied, *self.linked, *self.mounted]


@dataclass
class CopyResult:
    source: str  # what SRC is, as output names it (a path, registry://HOST/REPO[:TAG])
    target: str  # the same of DST
    local: bool  # DST is a directory
    created: bool  # DST was made by this copy
    exports: list[ExportCopy]
    warnings: list[str]
    elapsed: float


# -- sources --------------------------------------------------------------------------------
class _LocalSource:
    def __init__(self, layout: Any, inv: Inventory) -> None:
        self.layout = layout
        self.inv = inv
        self.root = str(layout.root)

    def where(self, digest: str) -> str:
        d = parse_digest(digest)
        return f"{self.root}/{BLOBS}/{d.algorithm}/{d.encoded}"

    def sizes(self, blobs: list[Blob]) -> dict[str, int | None]:
        return {
            b.digest: (self.inv.blobs[b.digest].size if b.digest in self.inv.blobs else None) for b in blobs
        }

    def open_fd(self, blob: Blob) -> int:
        try:
            return int(self.layout.open_blob_fd(self.inv.blobs[blob.digest]))
        except FileNotFoundError:
            raise CorruptError(
                "vanished from the source while copying (a gc there?)", file=self.where(blob.digest)
            ) from None

    @contextmanager
    def open(self, blob: Blob) -> Iterator[Iterator[bytes]]:
        fd = self.open_fd(blob)
        try:
            yield _fd_chunks(fd)
        finally:
            os.close(fd)

    def document(self, blob: Blob) -> bytes:
        """A manifest's bytes, verified."""
        with self.open(blob) as chunks:
            data = b"".join(chunks)
        _check_bytes(data, blob, self.where(blob.digest))
        return data


class _RegistrySourceReader:
    def __init__(self, store: Any, inv: Inventory) -> None:
        self.store = store
        self.inv = inv
        self.client = store.client
        self.registry = store.registry

    def where(self, digest: str) -> str:
        return str(self.registry.ref(digest))

    def sizes(self, blobs: list[Blob]) -> dict[str, int | None]:
        found = self.store.found
        out: dict[str, int | None] = {}
        leaves = []
        for b in blobs:
            if b.digest in found.docs:
                out[b.digest] = len(found.docs[b.digest].data)
            elif b.digest in found.configs:
                out[b.digest] = len(found.configs[b.digest])
            elif b.kind == KIND_MANIFEST or b.kind == KIND_CONFIG:
                out[b.digest] = None
            else:
                leaves.append(b.digest)
        out.update(zip(leaves, self.client.map(self.client.head_blob, leaves), strict=True))
        return out

    @contextmanager
    def open(self, blob: Blob) -> Iterator[Iterator[bytes]]:
        found = self.store.found
        if blob.digest in found.docs:
            yield iter([found.docs[blob.digest].data])
        elif blob.digest in found.configs:
            yield iter([found.configs[blob.digest]])
        else:
            with self.client.open_blob(blob.digest) as chunks:
                yield chunks

    def document(self, blob: Blob) -> bytes:
        doc = self.store.found.docs.get(blob.digest)
        if doc is None:
            raise NotFoundError(f"{self.where(blob.digest)}: manifest not found")
        data = bytes(doc.data)
        _check_bytes(data, blob, self.where(blob.digest))
        return data


def _fd_chunks(fd: int) -> Iterator[bytes]:
    while chunk := os.read(fd, CHUNK):
        yield chunk


def _check_bytes(data: bytes, blob: Blob, where: str) -> None:
    from ocicache.store.blobwrite import verified

    for _ in verified([data], blob.digest, blob.size, where):
        pass


# -- the run --------------------------------------------------------------------------------
@dataclass
class Request:
    """What to copy and how (api.copy's arguments)."""

    refs: Sequence[str] = ()
    tag: str | None = None
    all_exports: bool = False
    allow_missing: bool = False
    link: bool = False
    default_ref: str | None = None  # a registry SRC's @DIGEST or :TAG
    use_cache: bool = False
    progress: ProgressCallback | None = None
    spec_for: Callable[[str], str] | None = None


def copy(source: Target, destination: Target, req: Request) -> CopyResult:
    """Copy exports from `source` to `destination` (see the module docstring)."""
    started = time.monotonic()
    src = resolve_target(source)
    dst = resolve_target(destination)
    _same_store(src, dst)
    dst_tag = _dst_tag(dst, req)
    if req.link and (isinstance(src, RegistrySource) or isinstance(dst, RegistrySource)):
        raise UsageError(
            "--link hard-links blobs from a directory into a directory; here a registry is involved"
        )
    with open_store(src, use_cache=req.use_cache) as store:
        cache = None
        if req.use_cache and not isinstance(src, RegistrySource):
            from ocicache.store.cache import ReadCache

            cache = ReadCache.default(store.root)
        inv = read_inventory(store, cache)
        inv.require_index()
        exports = build_exports(inv)
        warnings = [str(p) for p in inv.problems if p.severity != "note"]
        chosen = _select(inv, exports, req, dst_tag, warnings)
        reader: _LocalSource | _RegistrySourceReader = (
            _RegistrySourceReader(store, inv) if isinstance(src, RegistrySource) else _LocalSource(store, inv)
        )
        source_name = str(store.target)
        if isinstance(dst, RegistrySource):
            result = _to_registry(reader, dst, chosen, req, warnings, source_name)
        else:
            result = _to_directory(reader, dst, chosen, req, warnings, source_name)
    if req.spec_for is not None:
        for c in result.exports:
            c.spec = req.spec_for(c.digest)
    result.elapsed = time.monotonic() - started
    return result


def _same_store(src: Target, dst: Target) -> None:
    if isinstance(src, RegistrySource) and isinstance(dst, RegistrySource):
        a, b = src.target, dst.target
        if (a.host, a.repo) == (b.host, b.repo):
            raise UsageError(
                f"SRC and DST are the same repository ({a.host}/{a.repo})",
                hint="`ocicache pin` gives an export another tag",
            )
    elif not isinstance(src, RegistrySource) and not isinstance(dst, RegistrySource):
        try:
            same = os.path.samefile(src, dst)
        except OSError:
            same = False
        if same:
            raise UsageError(
                f"SRC and DST are the same directory ({os.path.abspath(src)})",
                hint="`ocicache pin` gives an export another tag",
            )


def _dst_tag(dst: Target, req: Request) -> str | None:
    """--tag, or the TAG of a registry DST (registry://HOST/REPO:TAG)."""
    tag = req.tag
    if isinstance(dst, RegistrySource):
        if dst.target.digest:
            raise UsageError("DST names a digest: a copy gives the export a tag there (REPO:TAG or --tag)")
        if dst.target.tag:
            if tag is not None and tag != dst.target.tag:
                raise UsageError(f"--tag {tag} and DST's tag {dst.target.tag}: give one")
            tag = dst.target.tag
        if tag is not None:
            from ocicache.ops.registry import validate_tag

            validate_tag(tag)
    elif tag is not None:
        pins.validate_name(tag)
    if tag is not None and req.all_exports:
        raise UsageError("--all copies every current export with its own tags: no --tag (or DST tag)")
    return tag


def _select(
    inv: Inventory, exports: list[Export], req: Request, tag: str | None, warnings: list[str]
) -> list[tuple[Export, tuple[str, ...]]]:
    """The exports to copy, each with its tags at DST."""
    foreign = inv.foreign_entries()
    if req.all_exports:
        if req.refs:
            raise UsageError("--all takes no REF")
        chosen = sorted((e for e in exports if e.current), key=lambda e: min(e.tag_positions))
        if not chosen:
            raise NotFoundError("no current export to copy (no tag names a cache export)", file=str(inv.root))
    elif req.refs:
        chosen = list({e.digest: e for e in (resolve(exports, r, foreign) for r in req.refs)}.values())
    else:
        default = req.default_ref
        if default is not None and ":" in default:
            chosen = [resolve(exports, default, foreign)]
        else:
            e = cachefrom.default_export(exports, default)
            if e is None:
                raise NotFoundError("no exports to copy", file=str(inv.root))
            chosen = [e]
    if tag is not None and len(chosen) > 1:
        raise UsageError(f"--tag {tag} names one export; {len(chosen)} were given")
    out: list[tuple[Export, tuple[str, ...]]] = []
    seen: dict[str, str] = {}
    for e in chosen:
        refusal = cachefrom.readiness(inv, e).refusal
        if refusal is not None:
            if req.all_exports and req.allow_missing:
                warnings.append(f"{e.digest}: not copied: BuildKit would not import it: {refusal}")
                continue
            raise RefusedError(f"{e.digest}: BuildKit would not import this export: {refusal}; not copied")
        tags = (tag,) if tag is not None else (e.tags or e.pins)
        if not tags:
            raise UsageError(
                f"{e.digest}: an older export, with no tag at the source; give it one at the destination",
                hint="--tag NAME",
            )
        for t in tags:
            if seen.setdefault(t, e.digest) != e.digest:
                raise UsageError(
                    f"two exports would get tag {t!r} at the destination: {seen[t]} and {e.digest}"
                )
        out.append((e, tuple(tags)))
    if not out:
        raise RefusedError("no export to copy: BuildKit would import none of them", file=str(inv.root))
    return out


def _blobs_of(inv: Inventory, e: Export) -> tuple[Blob, ...]:
    """The export's blobs: its layers (and other blobs the manifest names), its cache config,
    then its manifest (the order of the copy)."""
    manifest = inv.manifests[e.digest]
    out: dict[str, Blob] = {}
    for d in (*manifest.layers, *manifest.others):
        if d.digest != e.digest:
            kind = KIND_CONFIG if d.media_type == CACHE_CONFIG else KIND_LAYER
            out.setdefault(d.digest, Blob(d.digest, d.size, kind, d.media_type))
    if manifest.config is not None:
        c = manifest.config
        out.pop(c.digest, None)
        out[c.digest] = Blob(c.digest, c.size, KIND_CONFIG, c.media_type)
    assert e.media_type is not None
    out[e.digest] = Blob(e.digest, e.manifest_size, KIND_MANIFEST, e.media_type)
    return tuple(out.values())


class _Plan:
    """Which blob goes where: per export, the blobs to move, those DST has, those nobody has."""

    def __init__(self, inv: Inventory, chosen: list[tuple[Export, tuple[str, ...]]]) -> None:
        self.inv = inv
        self.copies = [ExportCopy(e, tags, _blobs_of(inv, e)) for e, tags in chosen]
        self.todo: list[tuple[ExportCopy, Blob]] = []

    def all_blobs(self) -> list[Blob]:
        return list({b.digest: b for c in self.copies for b in c.blobs}.values())

    def decide(
        self,
        at_dst: dict[str, bool],
        at_src: dict[str, int | None],
        where: Callable[[str], str],
        allow_missing: bool,
    ) -> None:
        planned: set[str] = set()
        missing: list[tuple[ExportCopy, Blob]] = []
        for c in self.copies:
            for b in c.blobs:
                if at_dst.get(b.digest):
                    c.skipped.append(b)
                    continue
                if b.digest in planned:
                    c.shared.append(b)
                    continue
                size = at_src.get(b.digest)
                if size is None:
                    missing.append((c, b))
                    continue
                if size != b.size:
                    raise CorruptError(
                        f"{size} bytes at the source, the manifest says {b.size}; not copied",
                        file=where(b.digest),
                        hint="`ocicache check SRC` says more",
                    )
                planned.add(b.digest)
                self.todo.append((c, b))
        for c, b in missing:
            e = c.export
            if b.kind != KIND_LAYER:
                raise RefusedError(f"{e.digest}: {b.kind} {b.digest} is missing at the source; not copied")
            steps = steps_without(e, b.digest, stack(self.inv, e))
            c.missing.append(
                MissingBlob(
                    b.digest,
                    b.size,
                    b.kind,
                    steps,
                    f"layer {b.digest} is missing at the source: {describe_steps(steps)}",
                )
            )
        if missing and not allow_missing:
            first = missing[0][0].missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise RefusedError(
                f"{missing[0][0].digest}: {first.message}{more}; not copied",
                hint="--allow-missing copies the export without them (those steps then rebuild)",
            )

    @property
    def total_bytes(self) -> int:
        return sum(b.size for _, b in self.todo)


class _Meter:
    """Bytes moved, for the progress callback (a few times a second), and the test kill hook."""

    def __init__(self, total_bytes: int, total_blobs: int, progress: ProgressCallback | None) -> None:
        self.total_bytes = total_bytes
        self.total_blobs = total_blobs
        self.progress = progress
        self.done_bytes = 0
        self.done_blobs = 0
        self.lock = threading.Lock()
        self.start = time.monotonic()
        self.last = 0.0
        self.abort = threading.Event()
        kill = os.environ.get(KILL_ENV, "")
        try:
            self.kill_after = float(kill) if kill else -1.0
        except ValueError:
            self.kill_after = -1.0
        if self.kill_after == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    def add(self, n: int) -> None:
        if self.abort.is_set():
            raise _Aborted
        with self.lock:
            self.done_bytes += n
            now = time.monotonic()
            if self.progress is None or now - self.last < 0.2:
                return
            self.last = now
            report = Progress(
                self.done_bytes, self.total_bytes, self.done_blobs, self.total_blobs, now - self.start
            )
        self.progress(report)

    def undo(self, n: int) -> None:
        with self.lock:
            self.done_bytes -= n

    def blob_done(self) -> None:
        with self.lock:
            self.done_blobs += 1
            count = self.done_blobs
        if self.kill_after >= 0 and count == self.kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    def chunks(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The kill hook halfway through a blob ("N.5")."""
        first = True
        for chunk in chunks:
            yield chunk
            if first and self.kill_after % 1 == 0.5 and self.done_blobs >= int(self.kill_after):
                os.kill(os.getpid(), signal.SIGKILL)
            first = False

    def finish(self) -> None:
        if self.progress is not None:
            now = time.monotonic()
            self.progress(
                Progress(
                    self.done_bytes, self.total_bytes, self.done_blobs, self.total_blobs, now - self.start
                )
            )


class _Aborted(Exception):
    """Another transfer failed: stop this one."""


def _run(todo: list[Any], job: Callable[[Any], None], workers: int, meter: _Meter) -> None:
    """job(item) for every item, in `workers` threads; the first error stops the rest and is
    raised (KeyboardInterrupt too: the transfers running stop at their next chunk)."""
    if workers <= 1 or len(todo) <= 1:
        for item in todo:
            job(item)
        return
    errors: list[BaseException] = []

    def guarded(item: Any) -> None:
        if meter.abort.is_set():
            return
        try:
            job(item)
        except _Aborted:
            pass
        except BaseException as e:
            errors.append(e)
            meter.abort.set()

    pool = ThreadPoolExecutor(min(workers, len(todo)), thread_name_prefix="ocicache-copy")
    try:
        for f in [pool.submit(guarded, item) for item in todo]:
            f.result()
    except BaseException:
        meter.abort.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]


# -- into a directory -----------------------------------------------------------------------
def _to_directory(
    reader: _LocalSource | _RegistrySourceReader,
    dst: Target,
    chosen: list[tuple[Export, tuple[str, ...]]],
    req: Request,
    warnings: list[str],
    source_name: str,
) -> CopyResult:
    from ocicache.ops.gc_apply import put_back_needed
    from ocicache.store.blobwrite import BlobWriter, ensure_layout
    from ocicache.store.indexwrite import rewrite_index
    from ocicache.store.layout import Layout
    from ocicache.store.quarantine import gc_lock

    assert not isinstance(dst, RegistrySource)
    for _, tags in chosen:
        for t in tags:
            pins.validate_name(t)
    plan = _Plan(reader.inv, chosen)
    blobs = plan.all_blobs()
    at_src = reader.sizes(blobs)
    new_tags = [
        pins.NewTag(t, c.digest, c.export.media_type or "", c.export.manifest_size)
        for c in plan.copies
        for t in c.tags
    ]
    # Every refusal before anything is made or written: the plan against DST as it is now.
    if _is_cache_dir(dst):
        with Layout(dst) as layout:
            _check_index(layout, new_tags)
            writer = BlobWriter(layout)
            plan.decide(
                {b.digest: writer.present(b.digest, b.size) for b in blobs},
                at_src,
                reader.where,
                req.allow_missing,
            )
    else:
        plan.decide({}, at_src, reader.where, req.allow_missing)
    created = ensure_layout(dst)
    with Layout(dst) as layout, gc_lock(layout):
        put_back_needed(layout)
        writer = BlobWriter(layout)
        writer.remove_stale_temps()
        _check_index(layout, new_tags)
        plan = _Plan(reader.inv, chosen)  # again, under the lock
        at_dst = {b.digest: writer.present(b.digest, b.size) for b in blobs}
        plan.decide(at_dst, at_src, reader.where, req.allow_missing)
        for algorithm in sorted({b.digest.split(":", 1)[0] for _, b in plan.todo}):
            writer.folder_fd(algorithm)  # made (and its fd kept) before threads share the writer
        meter = _Meter(plan.total_bytes, len(plan.todo), req.progress)
        linking = req.link and isinstance(reader, _LocalSource)
        if isinstance(reader, _LocalSource) and linking and _device(reader.layout) != _device(layout):
            warnings.append("--link: SRC and DST are on different filesystems; the blobs were copied")
            linking = False

        def one(item: tuple[ExportCopy, Blob]) -> None:
            c, b = item
            where = reader.where(b.digest)
            if linking:
                assert isinstance(reader, _LocalSource)
                fd = reader.open_fd(b)
                try:
                    if writer.link_verified(b.digest, b.size, fd, where, meter.add):
                        c.linked.append(b)
                        meter.blob_done()
                        return
                finally:
                    os.close(fd)
                meter.undo(b.size)
            with reader.open(b) as chunks:
                writer.write(b.digest, b.size, meter.chunks(chunks), where, meter.add)
            c.copied.append(b)
            meter.blob_done()

        workers = REGISTRY_WORKERS if isinstance(reader, _RegistrySourceReader) else 1
        first = [x for x in plan.todo if x[1].kind != KIND_MANIFEST]
        _run(first, one, workers, meter)
        _run([x for x in plan.todo if x[1].kind == KIND_MANIFEST], one, workers, meter)
        meter.finish()
        # Last: index.json, once, under BuildKit's lock; every blob re-checked there first.
        found: dict[str, object] = {}
        missing = {m.digest for c in plan.copies for m in c.missing}

        def guarded(entries: list[Any]) -> list[Any]:
            out = pins.tag_transform(new_tags, found, lambda d: pins.names_foreign(layout, d))(entries)
            if out is not entries:
                for b in blobs:
                    if b.digest not in missing and not writer.present(b.digest, b.size):
                        raise RefusedError(
                            "vanished from the destination before index.json was written; not added",
                            file=f"{layout.root}/{BLOBS}/{b.digest.replace(':', '/')}",
                        )
            return out

        rewrite_index(layout, guarded)
    moved = found.get("moved", ())
    assert isinstance(moved, tuple)
    _note_moved(plan, moved, warnings)
    return CopyResult(source_name, str(layout.root), True, created, plan.copies, warnings, 0.0)


def _is_cache_dir(path: Any) -> bool:
    from ocicache.format.names import INDEX_JSON

    return os.path.isdir(path) and any(os.path.lexists(os.path.join(path, n)) for n in (INDEX_JSON, BLOBS))


def _device(layout: Any) -> int:
    return os.fstat(layout.root_fd).st_dev


def _check_index(layout: Any, new_tags: list[pins.NewTag]) -> None:
    """The index.json transform, tried on the index as it is now: its refusals come before any
    blob is written (it runs again under the lock at the end)."""
    from ocicache.format.names import INDEX_JSON

    data = layout.read_top(INDEX_JSON)
    if data is None:
        raise CorruptError(
            "missing", file=f"{layout.root}/{INDEX_JSON}", hint="`ocicache repair DST` rebuilds it"
        )
    try:
        _, entries, _ = split_index(data)
    except CorruptError as e:
        e.file = f"{layout.root}/{INDEX_JSON}"
        e.hint = e.hint or "`ocicache repair DST` rebuilds it"
        raise
    pins.tag_transform(new_tags, {}, lambda d: pins.names_foreign(layout, d))(entries)


def _note_moved(plan: _Plan, moved: tuple[tuple[str, str], ...], warnings: list[str]) -> None:
    by_tag = {t: c for c in plan.copies for t in c.tags}
    for tag, old in moved:
        c = by_tag[tag]
        c.moved.append((tag, old))
        warnings.append(f"tag {tag} at the destination moved from {old} to {c.digest}")


# -- into a registry ------------------------------------------------------------------------
def _to_registry(
    reader: _LocalSource | _RegistrySourceReader,
    dst: RegistrySource,
    chosen: list[tuple[Export, tuple[str, ...]]],
    req: Request,
    warnings: list[str],
    source_name: str,
) -> CopyResult:
    from ocicache.ops.registry import validate_tag
    from ocicache.store.blobwrite import verified
    from ocicache.store.registry.client import RegistryClient

    for _, tags in chosen:
        for t in tags:
            try:
                validate_tag(t)
            except UsageError as e:
                raise UsageError(
                    f"tag {t!r} at the source is not a registry tag: {e.message}", hint="--tag NAME"
                ) from None
    target = dst.target
    plan = _Plan(reader.inv, chosen)
    mount_from: str | None = None
    if isinstance(reader, _RegistrySourceReader):
        s = reader.registry
        if (s.host, s.insecure) == (target.host, target.insecure) and s.repo != target.repo:
            mount_from = s.repo
    with RegistryClient(target) as client:
        current = _registry_tags(client, plan)  # refuse before moving a byte
        blobs = plan.all_blobs()
        layers = [b for b in blobs if b.kind != KIND_MANIFEST]
        manifests = [b for b in blobs if b.kind == KIND_MANIFEST]
        at_dst = dict(
            zip(
                [b.digest for b in layers],
                [
                    size == b.size
                    for size, b in zip(
                        client.map(client.head_blob, [b.digest for b in layers]), layers, strict=True
                    )
                ],
                strict=True,
            )
        )
        heads = client.map(client.head_manifest, [b.digest for b in manifests])
        at_dst.update({b.digest: head is not None for b, head in zip(manifests, heads, strict=True)})
        plan.decide(at_dst, reader.sizes(blobs), reader.where, req.allow_missing)
        if any(c.missing for c in plan.copies):
            m = next(m for c in plan.copies for m in c.missing)
            raise RefusedError(
                f"{target.display()}: a registry refuses a manifest naming blobs it does not hold "
                f"({m.digest} is missing at the source); not copied",
                hint="--allow-missing copies into a directory only",
            )
        meter = _Meter(plan.total_bytes, len(plan.todo), req.progress)

        def one(item: tuple[ExportCopy, Blob]) -> None:
            c, b = item
            if b.kind == KIND_MANIFEST:
                return  # pushed with its tags below
            where = reader.where(b.digest)
            for attempt in range(ATTEMPTS):
                sent = [0]

                def count(n: int, sent: list[int] = sent) -> None:
                    sent[0] += n
                    meter.add(n)

                try:
                    upload = client.start_upload(b.digest if mount_from else None, mount_from)
                    if upload is None:
                        c.mounted.append(b)
                        meter.add(b.size)
                        meter.blob_done()
                        return
                    with reader.open(b) as chunks:
                        stream = verified(meter.chunks(chunks), b.digest, b.size, where, count)
                        client.push_blob_stream(upload, b.digest, b.size, stream)
                except RegistryError:
                    meter.undo(sent[0])
                    if attempt + 1 == ATTEMPTS:
                        raise
                    time.sleep(0.5 * 2**attempt)
                    continue
                c.copied.append(b)
                meter.blob_done()
                return

        _run([x for x in plan.todo if x[1].kind != KIND_MANIFEST], one, REGISTRY_WORKERS, meter)
        # Then each manifest, under each of its tags (the exact bytes and media type).
        todo_manifests = {b.digest for _, b in plan.todo if b.kind == KIND_MANIFEST}
        for c in plan.copies:
            b = next(b for b in c.blobs if b.kind == KIND_MANIFEST)
            to_tag = [t for t in c.tags if current.get(t) != c.digest]
            if not to_tag:
                continue  # every tag names it already (so the registry has it)
            data = reader.document(b)
            for tag in to_tag:
                got = client.put_manifest(tag, data, b.media_type)
                if got != c.digest:
                    raise RefusedError(
                        f"the registry stored tag {tag} as {got}, not {c.digest}", file=target.display()
                    )
                if tag in current:
                    c.moved.append((tag, current[tag]))
                    warnings.append(f"tag {tag} at the destination moved from {current[tag]} to {c.digest}")
            if b.digest in todo_manifests:
                c.copied.append(b)
                meter.add(len(data))
                meter.blob_done()
        meter.finish()
    return CopyResult(source_name, target.display(), False, False, plan.copies, warnings, 0.0)


def _registry_tags(client: Any, plan: _Plan) -> dict[str, str]:
    """tag -> the manifest it names at DST now, for the tags the copy sets; refuses a tag that
    names an image or artifact (not a cache)."""
    out: dict[str, str] = {}
    for c in plan.copies:
        for tag in c.tags:
            head = client.head_manifest(tag)
            if head is None:
                continue
            out[tag] = head[0]
            if head[0] == c.digest:
                continue
            got = client.get_manifest(head[0])
            if got is None:
                continue
            try:
                kind = docs.classify(docs.loads_blob(got.data, head[0]))
            except OcicacheError:
                kind = docs.KIND_UNKNOWN_JSON
            if kind != docs.KIND_CACHE_MANIFEST:
                raise RefusedError(
                    f"tag {tag} at {client.target.display()} names {head[0]}, which is not a cache export; "
                    "not replaced",
                    hint="give the copy another name with --tag",
                )
    return out
