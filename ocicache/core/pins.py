"""Pins: index.json entries that `ocicache pin` adds so an older export has a ref name.

BuildKit resolves `--cache-from type=local,src=DIR,tag=NAME` through index.json, and both gc and
BuildKit's own `reset=true` keep whatever index.json reaches (FORMAT.md, "Import"). A pin is an
entry like the ones BuildKit appends (manifest media type, digest, size, ref name) plus our mark
`dev.ocicache.pinned: <RFC 3339 time>`, so `unpin` only ever removes what ocicache added.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ocicache.base.errors import CorruptError, NotFoundError, RefusedError, UsageError
from ocicache.core.exports import Export
from ocicache.format import documents as docs
from ocicache.format.digest import parse_digest
from ocicache.format.indexdoc import RawEntry, Transform
from ocicache.format.model import ANN_PINNED, ANN_REF_NAME
from ocicache.store.base import Store, blob_relpath

# image-spec annotations.md, org.opencontainers.image.ref.name:
#   ref       ::= component ("/" component)*
#   component ::= alphanum (separator alphanum)*
#   alphanum  ::= [A-Za-z0-9]+
#   separator ::= [-._:@+] | "--"
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
REF_NAME = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")


def validate_name(name: str) -> None:
    """Raise UsageError unless `name` matches the OCI ref-name grammar."""
    if not REF_NAME.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid OCI ref name",
            hint="letters and digits, separated by one of - . _ : @ + or --, "
            "components joined by /; e.g. release-1.2 or team/base",
        )


@dataclass(frozen=True)
class PinResult:
    name: str
    export: Export
    replaced: tuple[str, ...]  # digests of entries with this name that the pin replaced
    changed: bool  # False when the name already pinned this export


@dataclass(frozen=True)
class UnpinResult:
    name: str
    removed: tuple[tuple[str, bool], ...]  # (digest, was an ocicache pin) of each removed entry


def _entry_name(entry: RawEntry) -> str | None:
    ann = entry.doc.get("annotations")
    if isinstance(ann, dict):
        name = ann.get(ANN_REF_NAME)
        return name if isinstance(name, str) else None
    return None


def _is_pin(entry: RawEntry) -> bool:
    ann = entry.doc.get("annotations")
    return isinstance(ann, dict) and ANN_PINNED in ann


def pin_entry(e: Export, name: str, now: datetime) -> RawEntry:
    """The index.json entry of a pin: like BuildKit's entries, plus our mark."""
    assert e.media_type is not None
    when = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return RawEntry.new(
        {
            "mediaType": e.media_type,
            "digest": e.digest,
            "size": e.manifest_size,
            "annotations": {ANN_REF_NAME: name, ANN_PINNED: when},
        }
    )


def verify_manifest(store: Store, e: Export) -> None:
    """Re-read the manifest blob (under the lock) and check its digest: never pin what is gone."""
    d = parse_digest(e.digest)
    try:
        data = store.read_blob(d, max(e.manifest_size, 1))
    except FileNotFoundError:
        raise RefusedError(
            "the manifest blob disappeared (a concurrent gc or reset?)", file=blob_relpath(d)
        ) from None
    except CorruptError as err:
        raise RefusedError(f"cannot re-read the manifest: {err.message}", file=blob_relpath(d)) from None
    if d.algorithm == "sha256" and hashlib.sha256(data).hexdigest() != d.encoded:
        raise RefusedError("the manifest blob does not match its digest", file=blob_relpath(d))


def names_foreign(store: Store, digest: str) -> bool:
    """True when the blob an index.json entry names is a manifest or index that is not a cache
    manifest (an image, an artifact). One bounded read; False when it cannot be told."""
    try:
        d = parse_digest(digest)
        data = store.read_blob(d, docs.JSON_LIMIT)
        return docs.classify(docs.loads_blob(data, blob_relpath(d))) == docs.KIND_MANIFEST
    except (OSError, CorruptError, UsageError):
        return False


def pin_transform(
    e: Export,
    name: str,
    now: datetime,
    force: bool,
    found: dict[str, object],
    is_foreign: Callable[[str], bool] = lambda digest: False,
) -> Transform:
    """The index.json transform of `pin`: drop our entries with `name`, append the new one.

    Refuses (unless `force`) to replace an entry BuildKit wrote, or to move a pin that names
    another export: either would silently take that export's protection away. `is_foreign`
    tells an entry naming an image or artifact (foreign content) from a cache export's tag."""

    def transform(entries: list[RawEntry]) -> list[RawEntry]:
        same = [x for x in entries if _entry_name(x) == name]
        theirs = [x for x in same if not _is_pin(x)]
        if theirs and not force:
            digest = str(theirs[0].doc.get("digest"))
            if is_foreign(digest):
                raise RefusedError(
                    f"{name!r} names an image or artifact in index.json ({digest}), not a cache export",
                    hint="choose another NAME; --force replaces that entry, and gc then "
                    "deletes what only that image reaches",
                )
            raise RefusedError(
                f"{name!r} is a tag BuildKit wrote (it names {digest})",
                hint="choose another NAME, or --force to replace that entry",
            )
        if len(same) == 1 and _is_pin(same[0]) and same[0].doc.get("digest") == e.digest:
            found["replaced"] = ()
            return entries  # already pinned: nothing to write
        moved = [x for x in same if _is_pin(x) and x.doc.get("digest") != e.digest]
        if moved and not force:
            raise RefusedError(
                f"{name!r} already pins {moved[0].doc.get('digest')}; not moved to {e.digest} "
                "(that export would lose the pin's protection from gc and reset=true)",
                hint="--force moves the pin; or choose another NAME",
            )
        found["replaced"] = tuple(str(x.doc.get("digest")) for x in same)
        kept = [x for x in entries if _entry_name(x) != name]
        return [*kept, pin_entry(e, name, now)]

    return transform


def unpin_transform(
    name: str, force: bool, found: dict[str, object], is_foreign: Callable[[str], bool] = lambda digest: False
) -> Transform:
    """The index.json transform of `unpin`: remove our entries named `name`. `is_foreign`
    tells an entry naming an image or artifact from a cache export's tag (for the refusal)."""

    def transform(entries: list[RawEntry]) -> list[RawEntry]:
        same = [x for x in entries if _entry_name(x) == name]
        if not same:
            names = sorted({n for x in entries if (n := _entry_name(x)) is not None})
            raise NotFoundError(
                f"{name!r}: no index.json entry has this ref name (names: {', '.join(names) or 'none'})"
            )
        ours = [x for x in same if _is_pin(x)]
        if not ours and not force:
            digest = str(same[0].doc.get("digest"))
            if is_foreign(digest):
                raise RefusedError(
                    f"{name!r} names an image or artifact in index.json ({digest}), not an ocicache pin",
                    hint="--force removes it anyway (the image then has nothing pointing at "
                    "it: gc deletes what only it reaches)",
                )
            raise RefusedError(
                f"{name!r} is a tag BuildKit wrote, not an ocicache pin",
                hint="--force removes it anyway (its export then has nothing pointing at it)",
            )
        drop = same if force else ours
        found["removed"] = tuple((str(x.doc.get("digest")), _is_pin(x)) for x in drop)
        ids = {id(x) for x in drop}
        return [x for x in entries if id(x) not in ids]

    return transform


# -- tags that `ocicache copy` adds ---------------------------------------------------------------
@dataclass(frozen=True)
class NewTag:
    """An index.json entry `copy` adds: a tag on an export, written as BuildKit writes one."""

    name: str
    digest: str
    media_type: str
    size: int


def tag_entry(t: NewTag) -> RawEntry:
    """The entry BuildKit's exporter appends for a tag: media type, digest, size, ref name."""
    return RawEntry.new(
        {"mediaType": t.media_type, "digest": t.digest, "size": t.size, "annotations": {ANN_REF_NAME: t.name}}
    )


def tag_transform(
    tags: list[NewTag], found: dict[str, object], is_foreign: Callable[[str], bool] = lambda digest: False
) -> Transform:
    """The index.json transform of `copy`: as BuildKit's exporter does for each tag, drop the
    entries of that name and append the new one; every other entry is kept as it is.

    A name that already names the same export (an entry BuildKit or copy wrote, or a pin) is
    left as it is: a re-run writes nothing. Refuses to replace an ocicache pin of another export
    (it would take the pin's protection away) or an entry naming an image or artifact.
    `found["moved"]` gets (name, digest it named before) of each tag moved off another export."""

    def transform(entries: list[RawEntry]) -> list[RawEntry]:
        moved: list[tuple[str, str]] = []
        todo: list[NewTag] = []
        for t in tags:
            same = [x for x in entries if _entry_name(x) == t.name]
            if len(same) == 1 and same[0].doc.get("digest") == t.digest:
                continue  # already there
            for x in same:
                digest = str(x.doc.get("digest"))
                if digest == t.digest:
                    continue
                if _is_pin(x):
                    raise RefusedError(
                        f"{t.name!r} is an ocicache pin of {digest} in the destination's index.json; "
                        "not replaced",
                        hint=f"`ocicache unpin DST {t.name}` first, or give the copy another name with --tag",
                    )
                if is_foreign(digest):
                    raise RefusedError(
                        f"{t.name!r} names an image or artifact in the destination's index.json ({digest}); "
                        "not replaced",
                        hint="give the copy another name with --tag",
                    )
                moved.append((t.name, digest))
            todo.append(t)
        found["moved"] = tuple(moved)
        if not todo:
            return entries
        names = {t.name for t in todo}
        kept = [x for x in entries if _entry_name(x) not in names]
        return [*kept, *(tag_entry(t) for t in todo)]

    return transform
