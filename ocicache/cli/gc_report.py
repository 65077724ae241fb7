"""gc's two reports: the versioned JSON document (schemas/gc.json) and the human tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocicache.base.timefmt import format_rfc3339
from ocicache.cli.render import _digest, ago, names_cell, size, table
from ocicache.cli.textsafe import safe
from ocicache.core.gc_plan import BLOB_KINDS, KIND_INGEST, ExportDecision, allocated_freed
from ocicache.format.names import QUARANTINE
from ocicache.ops.gc_apply import GcResult

SCHEMA = "ocicache/gc@1"


def _t(ns: int | None) -> str | None:
    return format_rfc3339(ns) if ns is not None else None


def _export(d: ExportDecision) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "digest": d.digest,
        "tags": list(d.tags),
        "pins": list(d.pins),
        "created": _t(d.created_ns),
        "size": d.size,
    }
    if d.reason is None:
        doc["rules"] = list(d.rules)
    else:
        doc["reason"] = d.reason
    return doc


def gc_json(r: GcResult, directory: str | None, target: str | None = None) -> dict[str, Any]:
    plan, pol = r.plan, r.plan.policy
    removed = r.removed()
    blobs = plan.blobs if r.dry_run else r.deleted
    ingest = plan.ingest if r.dry_run else r.ingest_deleted
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "directory": directory,
        "target": target if target is not None else directory,
        "dryRun": r.dry_run,
        "now": _t(plan.now_ns),
        "policy": {
            "keepLast": pol.keep_last,
            "keepWithinSeconds": None if pol.keep_within_ns is None else pol.keep_within_ns // 1_000_000_000,
            "keep": list(pol.keep_refs),
            "maxSize": pol.max_size,
            "graceSeconds": pol.grace_ns // 1_000_000_000,
            "expireTagsSeconds": None if pol.expire_tags_ns is None else pol.expire_tags_ns // 1_000_000_000,
            "keepTags": list(pol.keep_tags),
        },
        "kept": [_export(d) for d in plan.kept],
        "dropped": [_export(d) for d in plan.dropped],
        "removed": {k: {"blobs": removed[k][0], "bytes": removed[k][1]} for k in BLOB_KINDS},
        "blobs": [{"digest": b.digest, "kind": b.kind, "size": b.size} for b in blobs],
        "ingest": [{"name": i.name, "bytes": i.bytes} for i in ingest],
        "sizeBefore": plan.size_before,
        "keptBytes": r.kept_bytes,
        "freedBytes": r.freed_bytes,
        "freedAllocatedBytes": freed_allocated(r),
        "replans": r.replans,
        "expiredTags": [{"tag": t, "digest": d} for t, d in r.expired],
        "strays": list(plan.strays),
        "warnings": list(r.warnings),
    }
    doc["removed"][KIND_INGEST] = {"entries": removed[KIND_INGEST][0], "bytes": removed[KIND_INGEST][1]}
    g = r.registry
    if g is not None:
        # Only cache manifests are deleted (blobs: them); the rest is the registry's to free.
        doc["blobs"] = [{"digest": b.digest, "kind": b.kind, "size": b.size} for b in g.deleted]
        doc["freedAllocatedBytes"] = g.pending_bytes
        doc["registry"] = {
            "deletedManifests": [b.digest for b in g.deleted],
            "skipped": [{"digest": d, "reason": why} for d, why in g.skipped],
            "freedByRegistryGc": {"blobs": g.pending_blobs, "bytes": g.pending_bytes},
            "note": REGISTRY_GC_NOTE,
        }
    q = r.quarantine
    if q is not None:
        doc["quarantine"] = {
            "directory": QUARANTINE,
            "movedBlobs": q.moved[0],
            "movedBytes": q.moved[1],
            "restored": list(q.restored),
            "purgedBlobs": q.purged[0],
            "purgedBytes": q.purged[1],
            "heldBlobs": q.held[0],
            "heldBytes": q.held[1],
            "purgeAfter": _t(q.purge_after_ns),
        }
    return doc


REGISTRY_GC_NOTE = (
    "the bytes are freed when the registry's own garbage collector runs "
    "(distribution: `registry garbage-collect /etc/docker/registry/config.yml`)"
)


def registry_lines(r: GcResult) -> list[str]:
    g = r.registry
    verb = "would delete" if r.dry_run else "deleted"
    plan = r.plan
    return [
        f"{verb} {_n(len(g.deleted), 'cache manifest')}; the registry then frees {size(g.pending_bytes)} "
        f"({_n(g.pending_blobs, 'blob')}) when its garbage collector runs (distribution: "
        f"`registry garbage-collect`); {size(r.kept_bytes)} kept ({_n(len(plan.kept), 'export')} kept, "
        f"{len(plan.dropped)} dropped)"
    ]


def quarantine_lines(r: GcResult) -> list[str]:
    """What went into, came back from, and stays in gc's quarantine (nothing when unused)."""
    q = r.quarantine
    if q is None:
        return []
    out: list[str] = []
    would = "would be " if r.dry_run else ""
    if q.restored:
        out.append(
            f"put back {_n(len(q.restored), 'blob')} from {QUARANTINE}/: index.json or a "
            "new export needs them"
        )
    if q.held[0]:
        grace = r.plan.policy.grace_ns // 1_000_000_000
        when = (
            f"after {format_rfc3339(q.purge_after_ns)}"
            if q.purge_after_ns is not None
            else f"{grace} s after gc moves them"
        )
        out.append(
            f"{size(q.held[1])} ({_n(q.held[0], 'blob')}) {would}held in {QUARANTINE}/: "
            f"a build that needs them gets them back; a gc deletes them {when} "
            "(--grace)"
        )
    return out


def freed_allocated(r: GcResult) -> int:
    """What the removal gives back on disk (gc_plan.allocated_freed): `freedBytes` counts the
    files' sizes, this their blocks, and nothing for a file another hard link keeps."""
    q = r.quarantine
    if r.dry_run:
        moved = allocated_freed(r.plan.blobs, r.plan.ingest)
        if q is None or r.plan.policy.grace_ns == 0:
            return moved + (q.purged_allocated if q is not None else 0)
        return allocated_freed((), r.plan.ingest) + q.purged_allocated
    # What moved into the quarantine left blobs/ by a rename: only its purge gives space back.
    return allocated_freed((), r.ingest_deleted) + (q.purged_allocated if q is not None else 0)


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _tag_cell(d: ExportDecision, no_trunc: bool) -> str:
    return names_cell(list(d.tags) + [f"{p} (pin)" for p in d.pins], no_trunc)


def gc_text(r: GcResult, now: datetime, no_trunc: bool = False) -> str:
    plan = r.plan
    verb = "would remove" if r.dry_run else "removed"
    rows = [
        [
            _digest(d.digest, no_trunc),
            _tag_cell(d, no_trunc),
            ago(d.created_ns, now),
            size(d.size),
            "kept: " + ", ".join(d.rules),
        ]
        for d in plan.kept
    ]
    rows += [
        [
            _digest(d.digest, no_trunc),
            _tag_cell(d, no_trunc),
            ago(d.created_ns, now),
            size(d.size),
            "dropped" + (" (max-size)" if d.reason == "max-size" else ""),
        ]
        for d in plan.dropped
    ]
    out = [table(rows, ["EXPORT", "TAGS", "EXPORTED", "SIZE", "GC"]) if rows else "no exports", ""]
    if r.expired:
        verb_t = "would expire" if r.dry_run else "expired"
        out.append(
            f"{verb_t} {_n(len(r.expired), 'tag')} (--expire-tags): "
            + ", ".join(f"{t} ({_digest(d, no_trunc)})" for t, d in r.expired)
        )
    if r.registry is not None:
        out.extend(registry_lines(r))
        if r.dry_run:
            out.append("dry run: nothing was changed")
        return "\n".join(out)
    removed = r.removed()
    kinds = [*BLOB_KINDS, KIND_INGEST]
    out.append(
        table(
            [
                [k + (" entries" if k == KIND_INGEST else " blobs"), str(removed[k][0]), size(removed[k][1])]
                for k in kinds
            ],
            ["WHAT", verb.upper(), "SIZE"],
        )
    )
    out.append("")
    # The sizes freed; and, when they overstate it (sparse files, hard links kept elsewhere),
    # what the disk gets back.
    on_disk = freed_allocated(r)
    shown = f" ({size(on_disk)} on disk)" if on_disk < r.freed_bytes else ""
    out.append(
        f"{'would free' if r.dry_run else 'freed'} {size(r.freed_bytes)}{shown}; "
        f"{size(r.kept_bytes)} kept ({_n(len(plan.kept), 'export')} kept, "
        f"{len(plan.dropped)} dropped)"
    )
    out.extend(quarantine_lines(r))
    if r.dry_run:
        out.append("dry run: nothing was changed")
    return "\n".join(out)


def deleted_lines(r: GcResult) -> list[str]:
    """For stderr, when the report of a real gc could not be written (stdout closed or full):
    what was deleted, one line each, so that it is not lost with the report."""
    removed = r.removed()
    blobs = sum(removed[k][0] for k in BLOB_KINDS)
    lines = [
        f"ocicache: gc removed {_n(blobs, 'blob')} and "
        f"{_n(removed[KIND_INGEST][0], 'ingest entry').replace('entrys', 'entries')} "
        f"({size(r.freed_bytes)}) but could not write its report; removed:"
    ]
    lines += [f"removed {b.kind} blobs/{b.algorithm}/{b.name} ({b.size} bytes)" for b in r.deleted]
    lines += [safe(f"removed ingest/{i.name} ({i.bytes} bytes)") for i in r.ingest_deleted]
    return lines
