"""REF resolution: a tag, a full digest, a unique digest prefix (7+ hex), or ~N (N exports back)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ocicache.base.errors import NotFoundError, UsageError
from ocicache.core.exports import Export
from ocicache.format.digest import is_valid_digest
from ocicache.format.model import IndexEntry

_BACK = re.compile(r"~(\d{1,9})")
_PREFIX = re.compile(r"(?:sha256:|sha512:)?([a-f0-9]{7,128})")
MIN_PREFIX = 7


def resolve(exports: Sequence[Export], ref: str, foreign: Sequence[IndexEntry] = ()) -> Export:
    """The one export `ref` names in `exports` (newest first), or raise NotFoundError/UsageError.

    `foreign`: the index.json entries naming foreign content; a REF that names one of those
    (and no export) says so, rather than that nothing has that name."""
    if not ref:
        raise UsageError("empty REF")
    m = _BACK.fullmatch(ref)
    if m:
        n = int(m.group(1))
        if n >= len(exports):
            raise NotFoundError(f"{ref}: only {len(exports)} export(s) on disk")
        return exports[n]
    if ":" in ref and is_valid_digest(ref):
        for e in exports:
            if e.digest == ref:
                return e
        _not_foreign(ref, [e for e in foreign if e.descriptor.digest == ref])
        raise NotFoundError(
            f"{ref}: no export with this manifest digest", hint="`ocicache history DIR` lists the exports"
        )
    by_tag = [e for e in exports if ref in e.tags or ref in e.pins]
    if by_tag:
        return by_tag[0]
    m = _PREFIX.fullmatch(ref)
    if m:
        hexpart = m.group(1)
        algorithm = ref.split(":", 1)[0] if ":" in ref else None
        hits = [
            e
            for e in exports
            if e.digest.split(":", 1)[1].startswith(hexpart)
            and (algorithm is None or e.digest.startswith(algorithm + ":"))
        ]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            names = ", ".join(e.digest[:19] for e in hits[:5])
            raise NotFoundError(
                f"{ref}: ambiguous digest prefix ({len(hits)} exports: {names})", hint="give more hex digits"
            )
    _not_foreign(
        ref,
        [e for e in foreign if e.ref_name == ref]
        or [
            e
            for e in foreign
            if m
            and e.descriptor.digest.split(":", 1)[1].startswith(m.group(1))
            and (":" not in ref or e.descriptor.digest.startswith(ref.split(":", 1)[0] + ":"))
        ],
    )
    known = sorted({t for e in exports for t in (*e.tags, *e.pins)})
    tags = ", ".join(known) if known else "none"
    raise NotFoundError(f"{ref}: no export with this tag or digest (tags: {tags})", hint=_hint(ref))


def _hint(ref: str) -> str:
    """What to do about a REF that names nothing; a path, where a shell expanded `~N` unquoted."""
    if ref.startswith("/"):
        # (no tag or digest starts with "/": bash and zsh read an unquoted ~0 as $PWD and ~N as
        # an entry of `dirs`, and pass the path on)
        return (
            "no tag or digest starts with `/`: if you typed ~N, your shell expanded it to a "
            "directory (bash and zsh read ~0 as the current one); quote it: '~N'"
        )
    return "REF is a tag, a digest, a digest prefix of 7+ hex digits, or ~N"


def _not_foreign(ref: str, hits: Sequence[IndexEntry]) -> None:
    """Raise NotFoundError naming the foreign entry `ref` names (an image, not an export)."""
    if not hits:
        return
    e = hits[0]
    d = e.descriptor
    tag = f", tag {e.ref_name}" if e.ref_name is not None else ""
    raise NotFoundError(
        f"{ref}: names foreign content, not a cache export: index.json manifests[{e.position}] "
        f"{d.digest} ({d.media_type.removeprefix('application/')}{tag}), an image or artifact",
        hint="gc keeps foreign content whole; it cannot be shown, compared, pinned or "
        "imported as a cache; `ocicache history --all DIR` lists it",
    )
