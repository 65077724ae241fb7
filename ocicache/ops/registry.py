"""What changes a registry: gc (DELETE of cache manifests), pin (PUT of a tag), unpin (a tag
removed without deleting the manifest it names).

gc deletes **only cache manifests**, by digest, and never one that a tag names (now: the tags
are listed again just before deleting) or that foreign content (an image index, a foreign tag)
reaches. The layers and cache configs a deleted manifest alone named stay in the registry until
its own garbage collector runs (distribution: `registry garbage-collect`); gc says how many
bytes that then frees. A registry that refuses deletion (405, 400 UNSUPPORTED) is a refusal.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ocicache.base.errors import NotFoundError, OcicacheError, RefusedError
from ocicache.core import reach
from ocicache.core.exports import build_exports
from ocicache.core.gc_plan import KIND_MANIFEST, BlobDeletion, Plan, Policy, expired_tags, make_plan
from ocicache.core.inventory import Inventory
from ocicache.format import mediatypes as mt
from ocicache.ops.read import read_inventory
from ocicache.store.registry.store import RegistryStore
from ocicache.store.registry.target import validate_tag


@dataclass(frozen=True)
class RegistryGc:
    """What a registry gc did beyond the plan: the manifests deleted (or that would be), those
    kept after all and why, and what the registry's own garbage collector then frees."""

    deleted: tuple[BlobDeletion, ...]
    skipped: tuple[tuple[str, str], ...]  # (digest, why kept)
    pending_blobs: int  # configs and layers no kept export names any more
    pending_bytes: int
    expired: tuple[tuple[str, str], ...] = ()  # (tag, digest) removed by --expire-tags


def plan_gc(
    store: RegistryStore, policy: Policy, now_ns: int
) -> tuple[Inventory, Plan, list[tuple[str, str]]]:
    """The plan (as for a directory), and the tags --expire-tags drops."""
    inv = read_inventory(store)
    exports = build_exports(inv)
    return inv, make_plan(inv, exports, policy, now_ns), expired_tags(exports, policy, now_ns)


def apply_gc(
    store: RegistryStore,
    inv: Inventory,
    plan: Plan,
    dry_run: bool,
    warn: Callable[[str], None],
    expire: Sequence[tuple[str, str]] = (),
) -> RegistryGc:
    """Remove the tags --expire-tags drops, then delete the plan's cache manifests (nothing
    with dry_run); see the module docstring."""
    gone_tags: list[tuple[str, str]] = []
    for tag, digest in expire:
        if dry_run:
            gone_tags.append((tag, digest))
            continue
        now = store.client.head_manifest(tag)
        if now is None or now[0] != digest:
            warn(f"tag {tag}: not expired: it was moved during gc")
            continue
        unpin(store, tag)
        gone_tags.append((tag, digest))
    dropped = {t for t, _ in gone_tags}
    tagged = {d for t, d in store.found.tags.items() if t not in dropped}
    candidates: list[BlobDeletion] = []
    skipped: list[tuple[str, str]] = []
    for b in plan.blobs:
        if b.kind != KIND_MANIFEST:
            continue
        if b.digest not in inv.manifests:
            skipped.append((b.digest, "not a cache manifest (gc deletes only cache manifests)"))
        elif b.digest in inv.foreign_closure:
            skipped.append((b.digest, "foreign content reaches it"))
        elif b.digest in tagged:
            skipped.append((b.digest, "a tag names it"))
        else:
            candidates.append(b)
    if dry_run or not candidates:
        return _result(inv, plan, candidates, skipped, gone_tags)
    # Just before deleting: a tag pushed meanwhile may name one of them (a re-export of the
    # same manifest, a pin from elsewhere). distribution deletes a manifest's tags with it.
    now_tagged = _current_tags(store)
    deleted: list[BlobDeletion] = []
    for b in candidates:
        if b.digest in now_tagged:
            skipped.append((b.digest, f"tag {now_tagged[b.digest]} was pushed onto it during gc"))
            continue
        if store.client.delete_manifest(b.digest):
            deleted.append(b)
        else:
            warn(f"{b.digest}: already gone from the registry")
    return _result(inv, plan, deleted, skipped, gone_tags)


def _result(
    inv: Inventory,
    plan: Plan,
    deleted: list[BlobDeletion],
    skipped: list[tuple[str, str]],
    expired: list[tuple[str, str]],
) -> RegistryGc:
    """What the registry's garbage collector frees once these manifests are gone: the plan's
    configs and layers that no manifest left in the repository (kept, or skipped) still names,
    and the deleted manifests themselves. (At most: another repository of the same registry
    may name a blob too.)"""
    still = reach.closure(inv, [d for d, _ in skipped]) if skipped else set()
    gone = {b.digest for b in deleted}
    pending = [
        b for b in plan.blobs if (b.kind != KIND_MANIFEST and b.digest not in still) or b.digest in gone
    ]
    return RegistryGc(
        tuple(deleted), tuple(skipped), len(pending), sum(b.size for b in pending), tuple(expired)
    )


def _current_tags(store: RegistryStore) -> dict[str, str]:
    """digest -> a tag naming it, as the registry answers now."""
    client = store.client
    tags = client.tags()
    heads = client.map(client.head_manifest, tags)
    out: dict[str, str] = {}
    for tag, head in zip(tags, heads, strict=True):
        if head is not None:
            out.setdefault(head[0], tag)
    return out


# -- pin / unpin ---------------------------------------------------------------------------------
def pin(store: RegistryStore, digest: str, name: str, force: bool) -> tuple[bool, tuple[str, ...]]:
    """Point tag `name` at manifest `digest` (the same bytes and media type). Returns (changed,
    the digests the tag pointed at before). Refuses to move an existing tag without `force`."""
    validate_tag(name)
    doc = store.found.docs.get(digest)
    if doc is None:
        raise NotFoundError(f"{digest}: manifest not found in {store.target}")
    current = store.client.head_manifest(name)
    if current is not None and current[0] == digest:
        return False, ()
    if current is not None and not force:
        raise RefusedError(
            f"tag {name} already names {current[0]}; not moved",
            file=store.target,
            hint="--force moves it (the export it names then loses that tag)",
        )
    got = store.client.put_manifest(name, doc.data, doc.media_type)
    if got != digest:
        raise RefusedError(f"the registry stored tag {name} as {got}, not {digest}", file=store.target)
    return True, (current[0],) if current is not None else ()


def unpin(store: RegistryStore, name: str) -> str:
    """Remove tag `name` and nothing else: distribution cannot delete a tag by name, so a
    throwaway manifest (an empty image index, unique) is pushed over the tag and deleted by
    digest. The manifest the tag named stays, with its other tags. Returns that digest."""
    validate_tag(name)
    client = store.client
    current = client.head_manifest(name)
    if current is None:
        raise NotFoundError(f"no tag {name} in {store.target}")
    old_digest = current[0]
    old = client.get_manifest(old_digest)
    throwaway = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_INDEX,
            "manifests": [],
            "annotations": {
                "org.opencontainers.image.description": "ocicache unpin: a placeholder deleted at once",
                "io.ocicache.unpin": f"{time.time_ns()}-{secrets.token_hex(8)}",
            },
        },
        separators=(",", ":"),
    ).encode()
    placeholder = client.put_manifest(name, throwaway, mt.OCI_INDEX)
    try:
        client.delete_manifest(placeholder)
    except OcicacheError:
        # Deletion refused: put the tag back where it was before saying so.
        if old is not None:
            client.put_manifest(name, old.data, old.media_type)
        raise
    return old_digest
