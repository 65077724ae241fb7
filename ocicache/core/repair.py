"""`repair`: rebuild a torn, invalid or missing index.json from what is still readable and blobs/.

BuildKit rewrites index.json in place (not atomically): a crash can leave it truncated
(FORMAT.md). The plan keeps every entry that can still be salvaged (complete descriptor objects
at the start of a torn `manifests` array whose manifest blob is on disk) and, unless a kept entry
already carries the default tag `latest`, adds the newest complete cache manifest in blobs/ as
`latest` (BuildKit's default import tag). Other tags cannot be recovered: blobs do not record
them. The new index.json is written atomically under BuildKit's index.json lock.

A valid index.json that names nothing on disk (no entries, or only entries whose manifest is
gone) is repaired the same way: gc and BuildKit's reset=true would delete every blob on its
word. Repair refuses (RefusedError, nothing written) rather than drop what it cannot read (an
index.json over ocicache's size limit) or write an index.json with no entries while blobs/
holds blobs. No count limit: every entry that parses is salvaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ocicache.base.errors import CorruptError, RefusedError, TooLargeError
from ocicache.core.exports import build_exports
from ocicache.core.inventory import Inventory
from ocicache.format import documents as docs
from ocicache.format import mediatypes as mt
from ocicache.format.decoder import accepts
from ocicache.format.digest import is_valid_digest
from ocicache.format.model import ANN_REF_NAME
from ocicache.format.names import INDEX_JSON
from ocicache.store.base import Store

DEFAULT_TAG = "latest"


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What `repair` would do: nothing (`needed` False), or write `document` as index.json."""

    needed: bool
    reason: str  # why index.json needs rebuilding (or that it is healthy)
    kept: tuple[dict[str, Any], ...]  # entries salvaged from the old index.json
    added: dict[str, Any] | None  # the newest complete cache manifest, as `latest`
    dropped: int  # salvaged entries dropped (their manifest blob is not on disk)
    document: dict[str, Any] | None
    added_missing: int = 0  # blobs the added export lacks (0: it is complete)

    @property
    def data(self) -> bytes:
        """The new index.json, compact like BuildKit writes it."""
        return json.dumps(self.document, separators=(",", ":")).encode()


def plan(store: Store, inv: Inventory) -> RepairPlan:
    """Decide what a repair of `store` would write (pure: it works on the inventory's read).

    Refuses (RefusedError) rather than write an index.json that drops entries it could not
    read (one over ocicache's size limit) or that names nothing while blobs/ holds blobs."""
    err = inv.index_error
    if isinstance(err, TooLargeError):
        raise RefusedError(
            f"{err.message}: repair would drop every entry it cannot read; nothing written",
            file=INDEX_JSON,
            hint="if it is garbage, move it aside and run repair again",
        )
    empty = err is None and inv.names_nothing_present()
    if err is None and not empty:
        return RepairPlan(False, "index.json is healthy", (), None, 0, None)
    raw = inv.index_raw  # None: absent, a symlink, not a file: nothing to salvage
    salvaged = salvage_entries(raw) if raw else []
    kept: list[dict[str, Any]] = []
    dropped = 0
    for entry in salvaged:
        if entry["digest"] in inv.blobs:
            kept.append(entry)
        else:
            dropped += 1
    added: dict[str, Any] | None = None
    added_missing = 0
    if not any((e.get("annotations") or {}).get(ANN_REF_NAME) == DEFAULT_TAG for e in kept):
        exports = build_exports(inv)  # newest first
        # The newest complete export; failing that, the newest one BuildKit can still import
        # (manifest and cache config present; missing layers only make their steps rebuild):
        # an index with no entry would let the next gc or reset=true drop every export.
        importable = [
            e for e in exports if not e.problems and e.config is not None and e.config.digest not in e.missing
        ]
        candidates = [e for e in exports if e.complete] or importable
        if candidates:
            newest = candidates[0]
            added_missing = len(newest.missing)
            added = {
                "mediaType": newest.media_type or mt.OCI_MANIFEST,
                "digest": newest.digest,
                "size": newest.manifest_size,
                "annotations": {ANN_REF_NAME: DEFAULT_TAG},
            }
    entries = [*kept, *([added] if added else [])]
    if empty:
        n = len(inv.index.entries) if inv.index is not None else 0
        reason = (
            f"names nothing on disk ({n} entr{'y' if n == 1 else 'ies'}, no manifest "
            "present): the next gc or reset=true would delete every blob"
        )
        if added is None:
            return RepairPlan(
                False,
                f"index.json {reason}, and blobs/ holds no importable cache manifest to point it at",
                (),
                None,
                0,
                None,
            )
    else:
        assert err is not None
        reason = ": ".join(p for p in (err.where, err.message) if p)
    if not entries and inv.blobs:
        n = len(inv.blobs)
        raise RefusedError(
            f"{reason}; blobs/ holds {n} blob{'' if n == 1 else 's'} but no importable cache "
            "manifest: repair would write an index.json with no entries, and the next gc (or "
            "BuildKit's reset=true) would delete every blob; nothing written",
            file=INDEX_JSON,
            hint="an export to DIR (--cache-to type=local,dest=DIR) writes a new index.json",
        )
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries}
    return RepairPlan(True, reason, tuple(kept), added, dropped, document, added_missing)


def salvage_entries(raw: bytes) -> list[dict[str, Any]]:
    """Complete, valid descriptors from the `manifests` array of a torn or invalid index.json."""
    text = raw.decode("utf-8", "replace")
    try:
        whole = docs.loads_strict(raw, INDEX_JSON)
    except CorruptError:
        whole = None
    items: list[object] = []
    if isinstance(whole, dict) and isinstance(whole.get("manifests"), list):
        items = list(whole["manifests"])
    else:
        items = _leading_objects(text)
    out: list[dict[str, Any]] = []
    for item in items:
        # the decoder, not jsonschema: that costs ~0.5 ms a descriptor (15 s for 30k entries).
        if isinstance(item, dict) and accepts(item, "descriptor") and is_valid_digest(item["digest"]):
            out.append(item)
    return out


def _leading_objects(text: str) -> list[object]:
    """The JSON values that parse completely at the start of a truncated `"manifests": [` array."""
    key = text.find('"manifests"')
    if key < 0:
        return []
    start = text.find("[", key)
    if start < 0:
        return []
    decoder = json.JSONDecoder()
    pos = start + 1
    out: list[object] = []
    while True:  # no count limit: every entry that parses is kept (the text is bounded)
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            break
        out.append(value)
    return out
