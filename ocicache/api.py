"""The library façade: one function per command. Returns values, raises OcicacheError, never prints.

A read writes nothing anywhere unless asked: `use_cache=True` keeps what it learns about blob
digests in $XDG_CACHE_HOME/ocicache (see `read`); the CLI asks for it. (`gc` is the exception:
gc_apply always keeps them there, unless OCICACHE_NO_CACHE=1.)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ocicache.base.errors import (
    NotFoundError,
    OcicacheError,
    RefusedError,
    TooLargeError,
    UsageError,
    missing_manifest_hint,
)
from ocicache.core import reports
from ocicache.core.exports import Export, build_exports
from ocicache.core.refs import resolve
from ocicache.core.snapshot import RefResult, ShowResult, Snapshot
from ocicache.format.names import INDEX_JSON, LOCK_FILE, OCI_LAYOUT
from ocicache.ops.read import read_inventory, read_store
from ocicache.store.cache import ReadCache
from ocicache.store.layout import Layout
from ocicache.store.targets import RegistrySource, Target, open_store, resolve_target

# ref/pin/check/explain modules are imported where they are used: the read commands (most
# runs) then start ~50 ms sooner.

if TYPE_CHECKING:
    from ocicache.core import cachefrom, pins
    from ocicache.core import diff as diffmod
    from ocicache.core.check import CheckResult
    from ocicache.core.gc_plan import Policy as GcPolicy
    from ocicache.core.repair import RepairPlan
    from ocicache.format.indexdoc import RawEntry
    from ocicache.ops.copy import CopyResult
    from ocicache.ops.gc_apply import GcResult
    from ocicache.store.hashing import ProgressCallback
    from ocicache.store.listing import Listing


def read(directory: Target, use_cache: bool = False, listing: Listing | None = None) -> Snapshot:
    """Read DIR once (no writes to DIR, no lock file created): every export and blob it holds.

    index.json is read between BuildKit's in-place rewrites (indexread.py): under a shared
    flock on index.json.lock when that file exists, else twice and compared.

    Nothing is written anywhere unless `use_cache`: then what is learned about blob digests is
    kept in $XDG_CACHE_HOME/ocicache (default ~/.cache/ocicache; cache.py), never in DIR, so
    the next such read opens only new blobs (OCICACHE_NO_CACHE=1 still turns it off). The CLI
    reads with it; a command that must see every document as it is on disk now (`check`) never
    does. `listing`, a listing of DIR begun earlier (listing.py), saves stat-ing every blob here.
    The other reading functions below take the same two parameters.
    """
    with open_store(directory, listing, use_cache=use_cache) as store:
        local = isinstance(store, Layout)
        cache = ReadCache.default(store.root) if use_cache and local else None
        inv, exports = read_store(store, cache)
        sizes, allocated = [], []
        for name in (INDEX_JSON, OCI_LAYOUT, LOCK_FILE):
            st = store.stat_top(name)
            if st is not None:
                sizes.append(st.st_size)
                allocated.append(st.st_blocks * 512)
    snap = Snapshot(store.root, inv, exports, tuple(sizes), tuple(allocated))
    _require_named_tag(directory, snap)
    return snap


def _require_named_tag(directory: Target, snap: Snapshot) -> None:
    """A registry target that names a tag (registry://HOST/REPO:TAG, ref=HOST/REPO:TAG) the
    registry does not have is an error (exit 5), not a quiet listing of the other tags."""
    resolved = resolve_target(directory)
    if not isinstance(resolved, RegistrySource) or resolved.target.tag is None:
        return
    tag = resolved.target.tag
    index = snap.inventory.index
    tags = sorted({e.ref_name for e in index.entries if e.ref_name} if index else set())
    if tag not in tags:
        t = resolved.target
        raise NotFoundError(
            f"tag {tag}: not in {t.host}/{t.repo}",
            hint=f"its tags: {', '.join(tags) or 'none'}; registry://{t.host}/{t.repo} lists every export",
        )


def _for_ref(directory: Target, ref: str | None) -> Target:
    """A registry read also looks for the manifest a full digest REF names (an older export
    nothing else lists: the user's word that it was one)."""
    from ocicache.format.digest import parse_digest

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource) and ref is not None and ":" in ref:
        try:
            return resolved.with_digests(str(parse_digest(ref)))
        except OcicacheError:
            return resolved
    return resolved


def history(
    directory: str | os.PathLike[str], listing: Listing | None = None, *, use_cache: bool = False
) -> Snapshot:
    """Every export, newest first. Raises CorruptError when index.json is torn or invalid."""
    snap = read(directory, use_cache, listing)
    snap.inventory.require_index()
    return snap


def show(
    directory: Target, ref: str | None = None, listing: Listing | None = None, *, use_cache: bool = False
) -> ShowResult:
    """One export, REF as a tag, digest, digest prefix or ~N (default: what a registry target
    names, else ~0); its layers in stack order."""
    if ref is None:
        ref = _default_ref(directory) or "~0"
    snap = history(_for_ref(directory, ref), listing, use_cache=use_cache)
    export = resolve(snap.exports, ref, snap.inventory.foreign_entries())
    return ShowResult(snap, export, snap.exports.index(export), reports.stack(snap.inventory, export))


def blobs(
    directory: str | os.PathLike[str], listing: Listing | None = None, *, use_cache: bool = False
) -> tuple[Snapshot, list[reports.BlobRow]]:
    """Every blob on disk with its kind and how many exports reference it."""
    snap = read(directory, use_cache, listing)
    return snap, reports.blob_rows(snap.inventory, snap.exports)


def du(
    directory: str | os.PathLike[str], listing: Listing | None = None, *, use_cache: bool = False
) -> tuple[Snapshot, list[reports.Usage]]:
    """Where the bytes are, by category."""
    snap = read(directory, use_cache, listing)
    return snap, reports.disk_usage(
        snap.inventory, snap.exports, list(snap.metadata_sizes), list(snap.metadata_allocated)
    )


# -- ref, pin, unpin (cache-from specs and pins) ----------------------------------------------
def _ref_result(snap: Snapshot, export: Export, directory: Target) -> RefResult:
    from ocicache.core import cachefrom

    r = cachefrom.readiness(snap.inventory, export)
    src = str(snap.root)
    spec = import_spec(directory, snap, digest=export.digest) if r.ok else None
    return RefResult(export, snap.exports.index(export), src, spec, r)


def import_spec(
    directory: Target, snap: Snapshot | None, *, digest: str | None = None, tag: str | None = None
) -> str:
    """The --cache-from spec of an export (by digest) or of a tag: type=local,src=DIR,... or
    type=registry,ref=HOST/REPO@DIGEST (with registry.insecure=true over plain HTTP)."""
    from ocicache.core import spec as spec_mod

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        t = resolved.target
        name = f"{t.host}/{t.repo}" + (f"@{digest}" if digest is not None else f":{tag}")
        return spec_mod.registry_spec(name, t.insecure)
    src = str(snap.root) if snap is not None else os.path.abspath(resolved)
    return spec_mod.local_spec(src, digest=digest, tag=tag)


def ref(
    directory: str | os.PathLike[str], ref: str | None = None, *, use_cache: bool = False
) -> tuple[Snapshot, RefResult]:
    """The `--cache-from` spec of one export (default: newest of tag `latest`, else newest).

    Raises RefusedError when BuildKit would refuse to import it (manifest or cache config
    missing, unreadable, or over 1 MiB); missing layers are warnings in the result.
    """
    # With digest= BuildKit never reads index.json: a torn one must not stop us (its
    # problem is in snap.warnings); only tags become unknown.
    from ocicache.core import cachefrom

    resolved = resolve_target(directory)
    if ref is None and isinstance(resolved, RegistrySource) and resolved.target.digest:
        ref = resolved.target.digest  # registry://HOST/REPO@DIGEST
    directory = _for_ref(directory, ref)
    snap = read(directory, use_cache)
    if ref is None:
        export = cachefrom.default_export(snap.exports, _default_tag(directory))
        if export is None:
            raise NotFoundError("no exports in this directory", file=str(snap.root))
    else:
        export = resolve(snap.exports, ref, snap.inventory.foreign_entries())
    result = _ref_result(snap, export, directory)
    if result.spec is None:
        hint = "`ocicache history DIR` lists the exports and their state"
        if export.digest not in snap.inventory.blobs and (export.tags or export.pins):
            # index.json names a manifest that is gone
            hint = missing_manifest_hint(snap.root, (export.tags or export.pins)[0], not export.tags)
        raise RefusedError(
            f"{export.digest}: BuildKit would not import this export: {result.readiness.refusal}",
            file=str(snap.root),
            hint=hint,
        )
    return snap, result


def _default_tag(directory: Target) -> str | None:
    """The tag a registry target names (registry://HOST/REPO:TAG): REF's default there."""
    resolved = resolve_target(directory)
    return resolved.target.tag if isinstance(resolved, RegistrySource) else None


def _default_ref(directory: Target) -> str | None:
    """What a registry target names (REPO@DIGEST, else REPO:TAG): REF's default there."""
    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        return resolved.target.digest or resolved.target.tag
    return None


def ref_all(
    directory: str | os.PathLike[str], *, use_cache: bool = False
) -> tuple[Snapshot, list[RefResult]]:
    """The spec of every export, newest first (refused ones carry spec None and the reason)."""
    snap = read(directory, use_cache)
    return snap, [_ref_result(snap, e, directory) for e in snap.exports]


def _dir_view(path: str, use_cache: bool) -> cachefrom.DirView | str:
    from ocicache.core import cachefrom

    try:
        snap = read(path, use_cache)
    except OcicacheError as e:
        return e.message
    return cachefrom.DirView(snap.inventory, snap.exports)


def explain(
    spec: str, directory: str | os.PathLike[str] | None = None, *, use_cache: bool = False
) -> cachefrom.Explanation:
    """What BuildKit does with a `--cache-from` value, reading the directory it names.

    `directory` is used as src when the spec names none. Raises UsageError when buildx cannot
    parse the value at all.
    """
    from ocicache.core import cachefrom

    fallback = os.path.abspath(directory) if isinstance(directory, str | os.PathLike) else None
    return cachefrom.explain(
        spec, lambda path: _dir_view(path, use_cache), fallback, lambda *a: _registry_view(*a, use_cache)
    )


def _registry_view(
    host: str, repo: str, insecure: bool, digests: tuple[str, ...], use_cache: bool
) -> cachefrom.DirView | str:
    from ocicache.core import cachefrom

    try:
        source = resolve_target(f"registry://{host}/{repo}", insecure=insecure)
        assert isinstance(source, RegistrySource)
        snap = read(source.with_digests(*digests), use_cache)
    except OcicacheError as e:
        return e.message
    return cachefrom.DirView(snap.inventory, snap.exports)


def pin(
    directory: str | os.PathLike[str],
    ref: str,
    name: str,
    *,
    force: bool = False,
    now: datetime | None = None,
    use_cache: bool = False,
) -> tuple[pins.PinResult, RefResult]:
    """Register the export REF in index.json under NAME (an ocicache pin).

    Refuses what `ref` refuses; unless `force`, also a NAME BuildKit wrote or a NAME that pins
    another export (moving it would take that export's protection away). The rewrite is atomic
    and under BuildKit's lock; every other entry keeps its exact bytes. It holds gc's lock
    (a flock on DIR) throughout, so no gc moves the export between the read and the write.
    """
    from ocicache.core import pins
    from ocicache.ops.gc_apply import put_back_needed
    from ocicache.store.quarantine import gc_lock

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        return _registry_pin(resolved, ref, name, force, use_cache)
    pins.validate_name(name)
    with Layout(directory) as lock_layout, gc_lock(lock_layout):
        put_back_needed(lock_layout)
        return _pin_locked(directory, ref, name, force, now, use_cache)


def _pin_locked(
    directory: str | os.PathLike[str], ref: str, name: str, force: bool, now: datetime | None, use_cache: bool
) -> tuple[pins.PinResult, RefResult]:
    from ocicache.core import pins
    from ocicache.core import spec as spec_mod
    from ocicache.store.indexwrite import rewrite_index

    try:
        snap = history(directory, use_cache=use_cache)
    except TooLargeError as e:
        raise RefusedError(
            f"{e.message}; not rewritten (every entry it holds would be lost)", file=e.file
        ) from None
    export = resolve(snap.exports, ref, snap.inventory.foreign_entries())
    result = _ref_result(snap, export, directory)
    if result.spec is None:
        raise RefusedError(
            f"{export.digest}: BuildKit would not import this export: "
            f"{result.readiness.refusal}; not pinning it",
            file=str(snap.root),
        )
    found: dict[str, object] = {}
    when = now if now is not None else datetime.now(UTC)
    with Layout(snap.root) as layout:

        def guarded(entries: list[RawEntry]) -> list[RawEntry]:
            out = pins.pin_transform(export, name, when, force, found, snap.inventory.is_foreign)(entries)
            if out is not entries:
                pins.verify_manifest(layout, export)
            return out

        rewrite = rewrite_index(layout, guarded)
    replaced = found.get("replaced", ())
    assert isinstance(replaced, tuple)
    tag_spec = spec_mod.local_spec(str(snap.root), tag=name)
    return (
        pins.PinResult(name, export, replaced, rewrite.changed),
        RefResult(export, result.position, result.src, tag_spec, result.readiness),
    )


def _registry_pin(
    source: RegistrySource, ref: str, name: str, force: bool, use_cache: bool
) -> tuple[pins.PinResult, RefResult]:
    """pin on a registry: push tag NAME onto the export's manifest (ops/registry.py)."""
    from ocicache.core import pins
    from ocicache.ops import registry as reg
    from ocicache.store.registry.target import validate_tag

    validate_tag(name)
    source = _for_ref(source, ref)  # type: ignore[assignment]
    with open_store(source, use_cache=use_cache) as store:
        inv = read_inventory(store)
        snap = Snapshot(store.root, inv, build_exports(inv), ())
        export = resolve(snap.exports, ref, inv.foreign_entries())
        result = _ref_result(snap, export, source)
        if result.spec is None:
            raise RefusedError(
                f"{export.digest}: BuildKit would not import this export: "
                f"{result.readiness.refusal}; not pinning it",
                file=store.target,
            )
        changed, replaced = reg.pin(store, export.digest, name, force)
    tag_spec = import_spec(source, snap, tag=name)
    return (
        pins.PinResult(name, export, replaced, changed),
        RefResult(export, result.position, result.src, tag_spec, result.readiness),
    )


def unpin(directory: Target, name: str, *, force: bool = False) -> pins.UnpinResult:
    """Remove the pin NAME from index.json (a BuildKit-written tag only with `force`); on a
    registry, remove tag NAME, keeping the manifest it names (ops/registry.py)."""
    from ocicache.core import pins
    from ocicache.store.indexwrite import rewrite_index

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        from ocicache.ops import registry as reg

        with open_store(resolved) as store:
            old = reg.unpin(store, name)
        return pins.UnpinResult(name, ((old, True),))

    found: dict[str, object] = {}
    with Layout(directory) as layout:
        rewrite_index(
            layout,
            pins.unpin_transform(name, force, found, lambda digest: pins.names_foreign(layout, digest)),
        )
    removed = found.get("removed", ())
    assert isinstance(removed, tuple)
    return pins.UnpinResult(name, removed)


def diff(
    directory: str | os.PathLike[str],
    a: str | None = None,
    b: str | None = None,
    listing: Listing | None = None,
    *,
    use_cache: bool = False,
) -> tuple[Snapshot, diffmod.Diff]:
    """Two exports side by side (see ocicache.core.diff): B defaults to the newest, A to the export
    before B on its tag, else the one before it in history."""
    from ocicache.core import diff as diffmod

    snap = history(directory, listing, use_cache=use_cache)
    blobs = snap.inventory.blobs
    return snap, diffmod.diff_exports(
        snap.exports, a, b, lambda d: blobs[d].size if d in blobs else None, snap.inventory.foreign_entries()
    )


def gc(
    directory: str | os.PathLike[str],
    policy: GcPolicy,
    *,
    dry_run: bool = False,
    now_ns: int | None = None,
    listing: Listing | None = None,
    use_cache: bool = False,
) -> GcResult:
    """Delete what no kept export needs (see gc_plan, gc_apply); with dry_run, only plan
    (and then `listing`, a listing of DIR begun earlier, saves stat-ing every blob).
    As the reads, gc keeps what it learns about blob digests in $XDG_CACHE_HOME/ocicache
    only with `use_cache=True` (the CLI's choice; OCICACHE_NO_CACHE=1 turns it off)."""
    from ocicache.ops.gc_apply import gc as run_gc

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        return _registry_gc(resolved, policy, dry_run, now_ns, use_cache)
    return run_gc(
        directory,
        policy,
        now_ns=now_ns,
        dry_run=dry_run,
        listing=listing if dry_run else None,
        use_cache=use_cache,
    )


def _registry_gc(
    source: RegistrySource, policy: GcPolicy, dry_run: bool, now_ns: int | None, use_cache: bool
) -> GcResult:
    import time

    from ocicache.ops import registry as reg
    from ocicache.ops.gc_apply import GcResult

    now = time.time_ns() if now_ns is None else now_ns
    warnings: list[str] = []
    with open_store(source, use_cache=use_cache) as store:
        inv, plan, expire = reg.plan_gc(store, policy, now)
        done = reg.apply_gc(store, inv, plan, dry_run, warnings.append, expire)
    if use_cache and done.deleted and not dry_run:
        from ocicache.store.registry import record

        record.forget(source.target.host, source.target.repo, {b.digest for b in done.deleted})
    warnings[:0] = [str(p) for p in inv.problems]
    warnings.extend(f"{d}: kept: {why}" for d, why in done.skipped)
    warnings.extend(plan.warnings)
    return GcResult(
        plan, dry_run, done.deleted, (), plan.kept_bytes, 0, tuple(warnings), None, done, done.expired
    )


def check(
    directory: str | os.PathLike[str],
    quick: bool = False,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> CheckResult:
    """Every problem in DIR; unless `quick`, every blob is re-hashed (in parallel) too."""
    from ocicache.core.check import check as run_check
    from ocicache.core.check import schema_violations
    from ocicache.store.hashing import verify_blobs

    resolved = resolve_target(directory)
    if isinstance(resolved, RegistrySource):
        from ocicache.store.registry.store import hash_blobs

        with open_store(resolved, verify=True) as store:
            inv = read_inventory(store)
            snap = Snapshot(store.root, inv, build_exports(inv), ())
            violations = schema_violations(store, snap)
            hashes = None if quick else hash_blobs(store, inv.blobs.values(), progress)
        return run_check(snap, hashes, violations)
    with Layout(directory) as layout:
        inv = read_inventory(layout)
        sizes = [
            st.st_size for st in map(layout.stat_top, (INDEX_JSON, OCI_LAYOUT, LOCK_FILE)) if st is not None
        ]
        snap = Snapshot(layout.root, inv, build_exports(inv), tuple(sizes))
        violations = schema_violations(layout, snap)
        hashes = None if quick else verify_blobs(layout, inv.blobs.values(), workers, progress)
    return run_check(snap, hashes, violations)


def repair(directory: str | os.PathLike[str], dry_run: bool = False) -> RepairPlan:
    """Rebuild a torn, invalid or missing index.json (see ocicache.core.repair); `dry_run` writes
    nothing. A healthy index.json is left alone (`plan.needed` is False)."""
    from ocicache.ops.gc_apply import put_back_needed
    from ocicache.ops.repair import repair as run_repair
    from ocicache.store.quarantine import gc_lock

    if isinstance(resolve_target(directory), RegistrySource):
        raise UsageError(
            "repair rebuilds a directory's index.json; a registry has none (its tags are the index)",
            hint="`ocicache check` verifies a registry cache",
        )
    plan = run_repair(directory, True)
    if dry_run:
        return plan
    with Layout(directory) as layout:
        if not plan.needed and not layout.scan_quarantine().blobs:
            return run_repair(directory, False)  # healthy: touches nothing, takes no lock
    with Layout(directory) as layout, gc_lock(layout):
        put_back_needed(layout)  # what the old index.json still names, before reading blobs/
        plan = run_repair(directory, dry_run)
        put_back_needed(layout)  # and what the new one names
    return plan


def copy(
    source: Target,
    destination: Target,
    refs: Sequence[str] = (),
    *,
    tag: str | None = None,
    all_exports: bool = False,
    allow_missing: bool = False,
    link: bool = False,
    progress: ProgressCallback | None = None,
    use_cache: bool = False,
) -> CopyResult:
    """Copy exports whole (manifest, cache config, every layer) from `source` to `destination`:
    each a directory or a registry target (see ocicache.ops.copy).

    `refs` name the exports (REF as everywhere; default: what a registry SRC names, else the
    newest export of `latest`, else the newest); `all_exports`, every current one. Each gets
    its tags at SRC, or `tag`, at DST. Only what DST lacks is moved, every byte verified against
    its digest. Raises RefusedError (naming them) when blobs are missing on both sides unless
    `allow_missing`; `link` hard-links blobs from a directory into a directory on the same
    filesystem. `progress` gets a hashing.Progress a few times a second. Each result carries
    the --cache-from spec that imports the export at DST."""
    from ocicache.ops import copy as copy_op

    src = resolve_target(source)
    for r in refs:
        src = _for_ref(src, r)
    dst = resolve_target(destination)
    request = copy_op.Request(
        refs=tuple(refs),
        tag=tag,
        all_exports=all_exports,
        allow_missing=allow_missing,
        link=link,
        default_ref=_default_ref(src),
        use_cache=use_cache,
        progress=progress,
        spec_for=lambda digest: import_spec(dst, None, digest=digest),
    )
    return copy_op.copy(src, dst, request)
