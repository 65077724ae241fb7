"""Turn results into output: versioned JSON documents and human tables (tabulate + humanize)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ocicache.base.timefmt import format_rfc3339
from ocicache.cli.textsafe import safe
from ocicache.core.diff import new_layers
from ocicache.core.exports import Export
from ocicache.core.reports import BlobRow, ForeignEntry, StackLayer, Usage, foreign_entries
from ocicache.core.snapshot import ShowResult, Snapshot
from ocicache.format.names import QUARANTINE
from ocicache.store.base import QuarantineScan

if TYPE_CHECKING:
    from ocicache.core.check import CheckResult

SHORT = 19  # "sha256:" + 12 hex
# A TAGS cell names this many tags and pins, then "+N more" (--no-trunc and --json: all).
TAGS_SHOWN = 3
MAX_DOTS = 12  # `show` indents a layer by one dot per level up to this depth


def dumps(doc: dict[str, Any]) -> bytes:
    """`json.dumps(doc, indent=2)` as ASCII bytes (what stdout gets: a 20 MB document is never
    decoded to text and encoded back), ~4x faster: msgspec writes compact JSON (~8x the stdlib's
    C encoder) and re-indents it. Where msgspec spells a value as json does not (a character
    outside printable ASCII, which json escapes and msgspec writes as UTF-8) the stdlib's C
    encoder writes the compact text instead. Byte for byte json.dumps's but for one thing: a
    float is spelled as msgspec spells it (the same value; `1e-05` is `0.00001`). ocicache's
    documents hold one float, copy's `elapsedSeconds`, rounded to 3 places: spelled alike."""
    import msgspec

    # (one copy of the document's text alive at a time: a 50k-blob `blobs --json` is 20 MB)
    try:
        compact = msgspec.json.encode(doc)
        if not compact.isascii() or b"\x7f" in compact:
            compact = None
    except (UnicodeEncodeError, TypeError):  # a lone surrogate; a value json refuses too (it says so)
        compact = None
    if compact is None:
        compact = json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()
    del doc  # (a document passed as a temporary, `dumps(blobs_json(...))`, is freed here)
    try:
        formatted = msgspec.json.format(compact, indent=2)
    except msgspec.DecodeError:  # a lone surrogate json wrote as \udXXX: msgspec refuses it
        return json.dumps(json.loads(compact), indent=2, sort_keys=False).encode()
    return formatted


def _t(ns: int | None) -> str | None:
    return format_rfc3339(ns) if ns is not None else None


def _digest(d: str, no_trunc: bool) -> str:
    return d if no_trunc else d[:SHORT]


def size(n: int | None) -> str:
    if n is None:
        return "-"
    text = _SIZES.get(n)
    if text is None:
        import humanize

        text = _SIZES[n] = str(humanize.naturalsize(n))
    return text


_SIZES: dict[int, str] = {}


def ago(ns: int | None, now: datetime) -> str:
    """humanize.naturaltime(now - to_datetime(ns)), by integer arithmetic (a `blobs` table asks
    50k times)."""
    if ns is None:
        return "-"
    now_us = _NOW_US.get(now)
    if now_us is None:
        now_us = _NOW_US[now] = (now - _EPOCH) // _MICROSECOND
    delta_us = now_us - ns // 1000  # (to_datetime's microseconds)
    days, rest = divmod(delta_us, 86_400_000_000)
    if days < 0:
        import humanize

        return str(humanize.naturaltime(timedelta(microseconds=delta_us)))
    # humanize reads the whole seconds of a past delta under a day, and only its days past
    # that: one answer per second or per day.
    key = (now, days, rest // 1_000_000 if days == 0 else 0)
    text = _AGO.get(key)
    if text is None:
        import humanize

        text = _AGO[key] = str(humanize.naturaltime(timedelta(microseconds=delta_us)))
    return text


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NOW_US: dict[datetime, int] = {}
_AGO: dict[tuple[datetime, int, int], str] = {}


def table(rows: list[list[Any]], headers: list[str]) -> str:
    """A plain table (tabulate's "simple" format, every cell text); every cell escaped
    (textsafe.safe): a name holding a newline or an escape sequence stays in its cell, inert."""
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in headers]
    return columns_table(columns, headers)


def columns_table(columns: list[list[Any]], headers: list[str]) -> str:
    """`table` of the cells given column by column (what a 50k-row table is built as).

    When tabulate would measure text by len() (wcwidth not installed) the same text is laid
    out here, without loading tabulate (~25 ms a start) or its per-cell type guessing (~2 s for
    a 50k-blob `blobs` table); tests/test_render_speed.py checks both agree."""
    every = list(itertools.chain.from_iterable(columns))
    if set(map(type, every)) <= {str} and "".join(every).isprintable():
        cells = columns  # the common case, checked in one go: nothing to escape
    else:
        cells = [[safe(c) for c in column] for column in columns]
    del every
    if not _wide_chars():
        return _simple_columns(cells, headers)
    from tabulate import tabulate

    rows = [list(r) for r in zip(*cells, strict=True)]
    return str(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))


def _wide_chars() -> bool:
    """True when tabulate measures cells by their display width (it does with wcwidth)."""
    import importlib.util

    return importlib.util.find_spec("wcwidth") is not None


def simple_table(cells: list[list[str]], headers: list[str]) -> str:
    """tabulate(cells, headers, tablefmt="simple", disable_numparse=True) for text cells
    measured by len(): cells stripped (headers not), each column as wide as its widest cell or its header
    plus 2, left-aligned, two spaces between columns, a dashed rule under the headers, no trailing
    spaces."""
    columns = [list(c) for c in zip(*cells, strict=True)] if cells else [[] for _ in headers]
    return _simple_columns(columns, headers)


def _simple_columns(cells: list[list[str]], headers: list[str]) -> str:
    """simple_table of cells given column by column (C-level map/zip over 50k rows)."""
    heads = list(headers)
    columns = [list(map(str.strip, column)) for column in cells]
    widths = [
        max(len(h) + 2, max(map(len, column), default=0)) for h, column in zip(heads, columns, strict=True)
    ]
    padded = [[c.ljust(w) for c in column] for column, w in zip(columns, widths, strict=True)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    lines.extend(map(str.rstrip, map("  ".join, zip(*padded, strict=True))))
    return "\n".join(lines)


def names_cell(names: list[str], no_trunc: bool = False, shown: int = TAGS_SHOWN) -> str:
    """Tags and pins for one cell: the first `shown`, then "+N more" (all with no_trunc)."""
    if not names:
        return "-"
    if no_trunc or len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", +{len(names) - shown} more"


# -- history ---------------------------------------------------------------------------------
def export_json(e: Export, position: int) -> dict[str, Any]:
    return {
        "digest": e.digest,
        "position": position,
        "shape": e.shape,
        "mediaType": e.media_type,
        "tags": list(e.tags),
        "pins": list(e.pins),
        "current": e.current,
        "created": _t(e.created_ns),
        "createdFrom": e.created_from,
        "mtimeRejected": e.mtime_rejected,
        "mtime": _t(e.mtime_ns),
        "newestStep": _t(e.newest_step_ns),
        "layers": len(e.layers),
        "size": e.size,
        "missingBytes": e.missing_bytes,
        "uniqueSize": e.unique_size,
        "manifestSize": e.manifest_size,
        "config": e.config.digest if e.config else None,
        "configSize": e.config.size if e.config else None,
        "records": e.cache_config.record_count if e.cache_config else None,
        "complete": e.complete,
        "missing": list(e.missing),
        "wrongSize": list(e.wrong_size),
        "problems": list(e.problems),
    }


def foreign_json(f: ForeignEntry) -> dict[str, Any]:
    return {
        "digest": f.digest,
        "mediaType": f.media_type,
        "refName": f.ref_name,
        "position": f.position,
        "kind": f.kind,
        "artifactType": f.artifact_type,
        "blobs": f.blobs,
        "size": f.size,
        "complete": f.complete,
        "missing": list(f.missing),
        "problems": list(f.problems),
    }


def history_json(snap: Snapshot) -> dict[str, Any]:
    return {
        "schema": "ocicache/history@1",
        "directory": snap.directory,
        "target": snap.target,
        "exports": [
            export_json(e, i) | {"newLayers": n}
            for i, (e, n) in enumerate(zip(snap.exports, new_layers(snap.exports), strict=True))
        ],
        "foreign": [foreign_json(f) for f in foreign_entries(snap.inventory)],
        "quarantine": quarantine_json(snap.inventory.quarantine),
        "warnings": snap.warnings,
    }


def quarantine_json(q: QuarantineScan) -> dict[str, Any]:
    """gc's quarantine as history and check report it (quarantine.py)."""
    return {
        "directory": QUARANTINE,
        "blobs": len(q.blobs),
        "bytes": q.bytes,
        "since": format_rfc3339(min(b.batch_ns for b in q.blobs)) if q.blobs else None,
    }


def quarantine_line(q: QuarantineScan) -> str | None:
    """One line on what gc holds in its quarantine, or None when it is empty."""
    if not q.blobs:
        return None
    n = len(q.blobs)
    return (
        f"{QUARANTINE}/ holds {size(q.bytes)} ({n} blob{'' if n == 1 else 's'}) gc moved "
        "out of blobs/: put back when an export needs them, deleted by a gc once older "
        "than --grace"
    )


def _tag_cell(e: Export, no_trunc: bool = False, shown: int = TAGS_SHOWN) -> str:
    names = list(e.tags) + [f"{p} (pin)" for p in e.pins]
    if e.current and not e.tags:
        names.insert(0, "(unnamed entry)")
    return names_cell(names, no_trunc, shown)


def history_table(snap: Snapshot, now: datetime, no_trunc: bool = False, show_foreign: bool = False) -> str:
    """The exports; with `show_foreign` (`--all`), then the foreign index.json entries."""
    out = _exports_table(snap, now, no_trunc)
    foreign = foreign_entries(snap.inventory)
    registry = snap.inventory.kind == "registry"
    if foreign and show_foreign:
        out += "\n\n" + _foreign_table(foreign, no_trunc, registry)
    elif foreign:
        bad = sum(1 for f in foreign if not f.complete)
        what = (
            f"tag{'' if len(foreign) == 1 else 's'}"
            if registry
            else f"index.json entr{'y' if len(foreign) == 1 else 'ies'}"
        )
        out += (
            f"\n+ {len(foreign)} foreign {what}"
            " (images or artifacts, not cache exports; gc keeps them whole"
            + (f"; {bad} incomplete or unreadable" if bad else "")
            + "): `history --all` lists them"
        )
    return out


def _foreign_table(foreign: list[ForeignEntry], no_trunc: bool, registry: bool = False) -> str:
    rows = []
    for f in foreign:
        kind = f.media_type.rsplit("/", 1)[-1]
        if f.artifact_type:
            kind += f" ({f.artifact_type.rsplit('/', 1)[-1]})"
        state = "ok" if f.complete else ("UNREADABLE" if f.problems else "INCOMPLETE")
        rows.append(
            [
                "tag" if registry else f"manifests[{f.position}]",
                _digest(f.digest, no_trunc),
                f.ref_name or "-",
                kind,
                str(f.blobs),
                size(f.size),
                state,
            ]
        )
    return table(rows, ["FOREIGN", "DIGEST", "TAGS", "TYPE", "BLOBS", "SIZE", "STATE"])


def _size_cell(e: Export) -> str:
    """Bytes on disk; what the missing blobs would take, apart (they are not on disk)."""
    return size(e.size) + (f" (+{size(e.missing_bytes)} missing)" if e.missing else "")


_NO_MTIME = (
    "no credible manifest mtime (a copy's, or older than its steps): time of the newest "
    "step built (createdAt)"
)


_NO_PUSH_TIME = (
    "the registry does not say when it was pushed (--registry-storage ROOT would): time of "
    "the newest step built (createdAt)"
)


def _exports_table(snap: Snapshot, now: datetime, no_trunc: bool) -> str:
    rows = []
    for i, e in enumerate(snap.exports):
        created = ago(e.created_ns, now)
        if e.created_from == "createdat":
            created += " *"
        state = "ok" if e.complete else "INCOMPLETE"
        rows.append(
            [
                f"~{i}",
                _digest(e.digest, no_trunc),
                _tag_cell(e, no_trunc),
                created,
                str(len(e.layers)),
                _size_cell(e),
                size(e.unique_size),
                e.shape or "?",
                state,
            ]
        )
    out = table(rows, ["REF", "DIGEST", "TAGS", "EXPORTED", "LAYERS", "SIZE", "UNIQUE", "SHAPE", "STATE"])
    if any(e.created_from == "createdat" for e in snap.exports):
        out += "\n* " + (_NO_PUSH_TIME if snap.inventory.untimed else _NO_MTIME)
    held = quarantine_line(snap.inventory.quarantine)
    if held:
        out += "\n" + held
    return out


# -- show --------------------------------------------------------------------------------------
def layer_json(layer: StackLayer) -> dict[str, Any]:
    return {
        "index": layer.index,
        "parent": layer.parent,
        "depth": layer.depth,
        "digest": layer.digest,
        "mediaType": layer.media_type,
        "size": layer.size,
        "created": _t(layer.created_ns),
        "diffID": layer.diff_id,
        "origins": list(layer.origins),
        "present": layer.present,
    }


def show_json(r: ShowResult) -> dict[str, Any]:
    doc = export_json(r.export, r.position)
    doc["stack"] = [layer_json(x) for x in r.layers]
    return {
        "schema": "ocicache/show@1",
        "directory": r.snapshot.directory,
        "target": r.snapshot.target,
        "export": doc,
        "warnings": r.snapshot.warnings,
    }


def show_text(r: ShowResult, now: datetime, no_trunc: bool = False) -> str:
    e = r.export
    head = [
        f"export    ~{r.position}  {e.digest}",
        f"tags      {_tag_cell(e, no_trunc, 10)}",
        f"exported  {ago(e.created_ns, now)} ({_t(e.created_ns) or 'unknown'}, from {e.created_from}"
        + (f", mtime rejected: {e.mtime_rejected})" if e.mtime_rejected else ")"),
        f"shape     {e.shape} ({e.media_type})",
        f"size      {size(e.size)} total, {size(e.unique_size)} unique"
        + (f", {size(e.missing_bytes)} missing" if e.missing else ""),
        f"config    {_digest(e.config.digest, no_trunc) if e.config else '-'} "
        f"({size(e.config.size) if e.config else '-'}, "
        f"{e.cache_config.record_count if e.cache_config else '?'} records)",
        f"state     {'complete' if e.complete else 'INCOMPLETE'}",
    ]
    for p in e.problems:
        head.append(f"problem   {p}")
    for d in e.missing:
        head.append(f"missing   {d}")
    rows = []
    for x in r.layers:
        # A dot per level, then the level as a number (a chain can be thousands deep).
        indent = "· " * x.depth if x.depth <= MAX_DOTS else f"(depth {x.depth}) "
        origin = ", ".join(x.origins) if x.origins else ""
        rows.append(
            [
                f"{indent}{x.index}",
                _digest(x.digest, no_trunc),
                (x.media_type or "?").rsplit("/", 1)[-1],
                size(x.size),
                ago(x.created_ns, now),
                _digest(x.diff_id, no_trunc) if x.diff_id else "-",
                ("" if x.present else "MISSING ") + origin,
            ]
        )
    return (
        "\n".join(map(safe, head))
        + "\n\n"
        + table(rows, ["LAYER", "DIGEST", "TYPE", "SIZE", "CREATED", "DIFF ID", "NOTE"])
    )


# -- blobs -------------------------------------------------------------------------------------
def blobs_json(snap: Snapshot, rows: list[BlobRow]) -> dict[str, Any]:
    return {
        "schema": "ocicache/blobs@1",
        "directory": snap.directory,
        "target": snap.target,
        "blobs": [
            {
                "digest": b.digest,
                "size": b.size,
                "kind": b.kind,
                "exports": b.exports,
                "fromIndex": b.from_index,
                "referenced": b.exports > 0 or b.from_index,
                "mtime": format_rfc3339(b.mtime_ns),
                "mode": f"{b.mode & 0o7777:04o}",
            }
            for b in rows
        ],
        "strays": [{"path": s.relpath, "reason": s.reason} for s in snap.inventory.strays],
        "warnings": snap.warnings,
    }


def blobs_table(snap: Snapshot, rows: list[BlobRow], now: datetime, no_trunc: bool = False) -> str:
    digests, sizes, kinds, exports, from_index, mtimes, _ = zip(*rows, strict=True) if rows else ((),) * 7
    columns = [
        list(digests) if no_trunc else [d[:SHORT] for d in digests],
        list(map(size, sizes)),
        list(kinds),
        list(map(str, exports)),
        [
            "index" if i else ("older" if e else "UNREFERENCED")
            for i, e in zip(from_index, exports, strict=True)
        ],
        list(map(ago, mtimes, itertools.repeat(now))),
    ]
    text = columns_table(columns, ["DIGEST", "SIZE", "KIND", "EXPORTS", "REACHED FROM", "MODIFIED"])
    for s in snap.inventory.strays:
        text += "\n" + safe(f"stray: {s.relpath}: {s.reason}")
    return text


# -- du ----------------------------------------------------------------------------------------
_LABELS = {
    "index": "reachable from index.json",
    "older-exports": "only from older exports",
    "unreferenced": "from no export",
    "ingest": "stale ingest/ (interrupted writes)",
    "quarantine": "gc quarantine (.ocicache/)",
    "stray": "stray entries in blobs/",
    "metadata": "index.json, oci-layout, lock",
}
# A registry: its tags stand for index.json, its _uploads/ for ingest/ (with --registry-storage).
_REGISTRY_LABELS = _LABELS | {
    "index": "reachable from a tag",
    "ingest": "uploads left (_uploads/)",
}
_NOT_IN_A_REGISTRY = ("quarantine", "stray", "metadata")


def du_json(snap: Snapshot, usage: list[Usage]) -> dict[str, Any]:
    return {
        "schema": "ocicache/du@1",
        "directory": snap.directory,
        "target": snap.target,
        # bytes: apparent sizes; allocatedBytes: disk blocks, each inode once (reports.Usage)
        "categories": [
            {"category": u.category, "files": u.files, "bytes": u.bytes, "allocatedBytes": u.allocated}
            for u in usage
        ],
        "total": {
            "files": sum(u.files for u in usage),
            "bytes": sum(u.bytes for u in usage),
            "allocatedBytes": sum(u.allocated for u in usage),
        },
        "exports": {
            "total": len(snap.exports),
            "current": sum(1 for e in snap.exports if e.referenced_by_index),
        },
        "warnings": snap.warnings,
    }


def du_table(snap: Snapshot, usage: list[Usage], apparent: bool = False) -> str:
    """SIZE (what the files hold) and ON DISK (the blocks they take, a hard-linked file once;
    SHARE is of that), as `du` counts; `apparent`: SIZE alone (`du --apparent-size`)."""

    def measure(u: Usage) -> int:
        return u.bytes if apparent else u.allocated

    labels = _LABELS
    if snap.inventory.kind == "registry":
        labels = _REGISTRY_LABELS
        usage = [u for u in usage if u.category not in _NOT_IN_A_REGISTRY]
    total = sum(map(measure, usage)) or 1
    rows = [
        [labels[u.category], str(u.files), size(u.bytes)]
        + ([] if apparent else [size(u.allocated)])
        + [f"{100 * measure(u) / total:.1f}%"]
        for u in usage
    ]
    rows.append(
        ["total", str(sum(u.files for u in usage)), size(sum(u.bytes for u in usage))]
        + ([] if apparent else [size(sum(u.allocated for u in usage))])
        + ["100.0%"]
    )
    return table(rows, ["WHERE", "FILES", "SIZE", *([] if apparent else ["ON DISK"]), "SHARE"])


# -- check -------------------------------------------------------------------------------------
def check_json(r: CheckResult) -> dict[str, Any]:
    return {
        "schema": "ocicache/check@1",
        "directory": str(r.directory) if r.local else None,
        "target": str(r.directory),
        "ok": r.ok,
        "hashed": r.hashed,
        "counts": {
            "errors": r.count("error"),
            "warnings": r.count("warning"),
            "notes": r.count("note"),
            "exports": r.exports,
            "blobs": r.blobs,
            "blobBytes": r.blob_bytes,
            "hashedBlobs": r.hashed_blobs,
            "hashedBytes": r.hashed_bytes,
        },
        "findings": [
            {
                "severity": f.severity,
                "code": f.code,
                "file": f.file,
                "digest": f.digest,
                "where": f.where,
                "message": f.message,
                "export": f.export,
                "steps": [{"layer": s.layer, "digest": s.digest, "effect": s.effect} for s in f.steps],
            }
            for f in r.findings
        ],
    }


def check_text(r: CheckResult, no_trunc: bool = False) -> str:
    """One line per finding, `git fsck` style, then a summary line."""
    lines = []
    for f in r.findings:
        subject = f.file if not f.where else f"{f.file}: {f.where}"
        if not no_trunc and f.digest and f.file.endswith(f.digest.split(":", 1)[-1]):
            subject = subject.replace(f.digest.split(":", 1)[-1], f.digest.split(":", 1)[-1][:12])
        message = f.message
        if not no_trunc and f.export:
            message = message.replace(f.export, _digest(f.export, False))
        lines.append(safe(f"{f.severity}: {f.code}: {subject}: {message}"))
        for s in f.steps:
            at = f"layers[{s.layer}]" if s.layer >= 0 else "(not placed)"
            lines.append(safe(f"    {s.effect:<7} {at} {_digest(s.digest, no_trunc)}"))
    hashed = (
        f"{r.hashed_blobs} blobs ({size(r.hashed_bytes)}) hashed"
        if r.hashed
        else f"{r.blobs} blobs (not hashed: --quick)"
        if r.local
        else f"{r.blobs} blobs (each HEADed, not downloaded: --deep hashes them)"
    )
    verdict = "OK" if r.ok else "PROBLEMS FOUND"
    lines.append(
        f"{r.exports} exports, {hashed}: {r.count('error')} errors, "
        f"{r.count('warning')} warnings, {r.count('note')} notes: {verdict}"
    )
    return "\n".join(lines)
