"""Output of `ref`, `ref --explain`, `pin` and `unpin`: spec lines and versioned JSON documents."""

from __future__ import annotations

from typing import Any

from ocicache.base.timefmt import format_rfc3339
from ocicache.cli.textsafe import safe
from ocicache.core import cachefrom
from ocicache.core import spec as spec_mod
from ocicache.core.exports import Export
from ocicache.core.pins import PinResult, UnpinResult
from ocicache.core.snapshot import RefResult, Snapshot

LINE_FORMATS = tuple(f for f in spec_mod.FORMATS if f != "json")


def _export(e: Export, position: int) -> dict[str, Any]:
    return {
        "digest": e.digest,
        "position": position,
        "tags": list(e.tags),
        "pins": list(e.pins),
        "created": format_rfc3339(e.created_ns) if e.created_ns is not None else None,
        "complete": e.complete,
    }


def ref_item(r: RefResult) -> dict[str, Any]:
    """One export's import spec (spec and lines null when refused, with the reason)."""
    lines = {f: spec_mod.render(r.spec, f) for f in LINE_FORMATS} if r.spec is not None else None
    registry = r.spec is not None and r.spec.startswith("type=registry")
    return {
        "type": "registry" if registry else "local",
        "src": r.src,
        "digest": r.export.digest,
        "spec": r.spec,
        "lines": lines,
        "export": _export(r.export, r.position),
        "complete": r.export.complete,
        "refused": r.readiness.refusal,
        "missingLayers": list(r.readiness.missing_layers),
        "missingBaseLayers": list(r.readiness.missing_base),
        "warnings": list(r.readiness.warnings),
    }


def ref_json(snap: Snapshot, r: RefResult) -> dict[str, Any]:
    return {"schema": "ocicache/ref@1", "directory": snap.directory, "target": snap.target, **ref_item(r)}


def refs_json(snap: Snapshot, results: list[RefResult]) -> dict[str, Any]:
    return {
        "schema": "ocicache/refs@1",
        "directory": snap.directory,
        "target": snap.target,
        "refs": [ref_item(r) for r in results],
        "warnings": snap.warnings,
    }


def explain_json(x: cachefrom.Explanation) -> dict[str, Any]:
    return {
        "schema": "ocicache/explain@1",
        "input": x.input,
        "type": x.type,
        "attrs": dict(x.attrs),
        "directory": x.directory,
        "outcome": x.outcome,
        "works": x.works,
        "findings": [{"severity": f.severity, "key": f.key, "message": f.message} for f in x.findings],
        "corrected": x.corrected,
        "changed": x.changed,
        "export": _export(x.export, -1) | {"position": None} if x.export else None,
    }


def explain_text(x: cachefrom.Explanation, fmt: str = "bare") -> str:
    lines = []
    for f in x.findings:
        key = f.key or "-"
        lines.append(f"{f.severity:<8}  {key:<7} {f.message}")
    lines.append(f"outcome   {x.outcome}: {cachefrom.OUTCOME_TEXT[x.outcome]}")
    if x.corrected is None:
        lines.append("corrected (none: see above)")
    elif x.changed:
        lines.append(f"corrected {spec_mod.render(x.corrected, fmt)}")
    else:
        lines.append(f"spec      {spec_mod.render(x.corrected, fmt)}  (unchanged)")
    return "\n".join(map(safe, lines))


def pin_json(
    snap_root: str, p: PinResult, r: RefResult, digest_spec: str, local: bool = True
) -> dict[str, Any]:
    return {
        "schema": "ocicache/pin@1",
        "directory": snap_root if local else None,
        "target": snap_root,
        "name": p.name,
        "digest": p.export.digest,
        "changed": p.changed,
        "replaced": list(p.replaced),
        "spec": r.spec,
        "digestSpec": digest_spec,
        "warnings": list(r.readiness.warnings),
    }


def unpin_json(snap_root: str, u: UnpinResult, local: bool = True) -> dict[str, Any]:
    return {
        "schema": "ocicache/unpin@1",
        "directory": snap_root if local else None,
        "target": snap_root,
        "name": u.name,
        "removed": [{"digest": d, "pin": pin} for d, pin in u.removed],
    }
