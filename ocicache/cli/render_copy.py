"""Output of `copy`: a line per export (and totals) for people, `ocicache/copy@1` for programs."""

from __future__ import annotations

from typing import Any

from ocicache.cli.render import SHORT, size
from ocicache.ops.copy import Blob, CopyResult, ExportCopy

SCHEMA = "ocicache/copy@1"


def _count(blobs: list[Blob]) -> tuple[int, int]:
    return len(blobs), sum(b.size for b in blobs)


def _blobs(n: int) -> str:
    return f"{n} blob{'' if n == 1 else 's'}"


def _phrase(n: int, nbytes: int, what: str) -> str:
    return f"{_blobs(n)} {what} ({size(nbytes)})" if n else ""


def summary(c: ExportCopy) -> str:
    """`sha256:a1edab0103e6 latest: 6 blobs copied (2.2 MB), 0 already there`."""
    parts = [
        _phrase(*_count(c.copied), "copied"),
        _phrase(*_count(c.linked), "hard-linked"),
        _phrase(*_count(c.mounted), "mounted from the source repository"),
    ]
    done = [p for p in parts if p] or ["nothing to copy"]
    n, nbytes = _count(c.skipped)
    done.append(f"{n} already there" + (f" ({size(nbytes)})" if n else ""))
    if c.shared:
        done.append(f"{len(c.shared)} shared with an export above")
    if c.missing:
        done.append(f"{len(c.missing)} missing at the source ({size(sum(m.size for m in c.missing))})")
    return f"{c.digest[:SHORT]} {', '.join(c.tags)}: {', '.join(done)}"


def _moved(
    copied: tuple[int, int], linked: tuple[int, int], mounted: tuple[int, int], skipped: tuple[int, int]
) -> dict[str, int]:
    """The (count, bytes) of each way a blob reached DST, as copy@1 names them (an export's and
    the totals' alike)."""
    return {
        "copiedBlobs": copied[0] + linked[0] + mounted[0],
        "copiedBytes": copied[1] + linked[1] + mounted[1],
        "transferredBytes": copied[1],
        "linkedBlobs": linked[0],
        "mountedBlobs": mounted[0],
        "skippedBlobs": skipped[0],
        "skippedBytes": skipped[1],
    }


def totals(r: CopyResult) -> dict[str, int]:
    """Distinct blobs: one several exports share counts once."""

    def total(attr: str) -> tuple[int, int]:
        blobs = {b.digest: b for c in r.exports for b in getattr(c, attr)}
        return len(blobs), sum(b.size for b in blobs.values())

    copied, linked, mounted, skipped, every = (
        total(a) for a in ("copied", "linked", "mounted", "skipped", "blobs")
    )
    missing = list({m.digest: m for c in r.exports for m in c.missing}.values())
    return {
        "exports": len(r.exports),
        "blobs": every[0],
        "bytes": every[1],
        **_moved(copied, linked, mounted, skipped),
        "missingBlobs": len(missing),
        "missingBytes": sum(m.size for m in missing),
    }


def totals_line(r: CopyResult) -> str:
    t = totals(r)
    there = f"{t['skippedBlobs']} already there" + (
        f" ({size(t['skippedBytes'])})" if t["skippedBlobs"] else ""
    )
    return f"{t['exports']} exports: {_blobs(t['copiedBlobs'])} copied ({size(t['copiedBytes'])}), {there}"


def _export(c: ExportCopy) -> dict[str, Any]:
    copied, linked, mounted = (_count(x) for x in (c.copied, c.linked, c.mounted))
    skipped = _count(c.skipped)
    return {
        "digest": c.digest,
        "tag": c.tags[0] if c.tags else None,  # the (first) new tag at DST
        "tags": list(c.tags),
        "sourceTags": list(c.export.tags),
        "shape": c.export.shape,
        "mediaType": c.export.media_type,
        "blobs": len(c.blobs),
        "bytes": c.bytes,
        **_moved(copied, linked, mounted, skipped),
        "sharedBlobs": len(c.shared),
        "missing": [
            {
                "digest": m.digest,
                "size": m.size,
                "kind": m.kind,
                "message": m.message,
                "steps": [{"layer": s.layer, "digest": s.digest, "effect": s.effect} for s in m.steps],
            }
            for m in c.missing
        ],
        "movedTags": [{"tag": t, "from": d} for t, d in c.moved],
        "spec": c.spec,
    }


def copy_json(r: CopyResult) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "directory": r.target if r.local else None,
        "target": r.target,
        "source": r.source,
        "created": r.created,
        "exports": [_export(c) for c in r.exports],
        "totals": totals(r),
        "elapsedSeconds": round(r.elapsed, 3),
        "warnings": list(r.warnings),
    }
