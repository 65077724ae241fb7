"""What a command's target names, and the store that reads it: a cache directory (Layout) or a
repository of a registry (RegistryStore).

A target is a directory path, `registry://HOST[:PORT]/REPO[:TAG]`, or a BuildKit spec as users
paste it from --cache-to / --cache-from (`type=registry,ref=HOST/REPO:TAG`). `RegistrySource`
carries what a registry read may also be told: plain HTTP, the registry's storage directory
(--registry-storage), digests of older exports to look for, and whether to keep ocicache's record
of the repository's tags (record.py).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ocicache.store.listing import Listing

if TYPE_CHECKING:
    from ocicache.store.registry.target import RegistryTarget


@dataclass(frozen=True)
class RegistrySource:
    """A registry target with the options that say how to read it."""

    target: RegistryTarget
    storage: str | None = None  # --registry-storage ROOT
    digests: tuple[str, ...] = ()  # older exports the user names

    def with_digests(self, *digests: str) -> RegistrySource:
        return replace(self, digests=tuple(dict.fromkeys((*self.digests, *digests))))


Target = str | os.PathLike[str] | RegistrySource


def resolve_target(target: Target, *, insecure: bool = False, storage: str | None = None) -> Target:
    """A RegistrySource for a registry target (raises UsageError when malformed), else the
    path unchanged."""
    if isinstance(target, RegistrySource):
        return target
    parsed = None
    if isinstance(target, str) and _maybe_registry(target):
        from ocicache.store.registry.target import parse_target

        parsed = parse_target(target, insecure=insecure)
    if parsed is None:
        if storage is not None:
            from ocicache.base.errors import UsageError

            raise UsageError("--registry-storage is for a registry target (registry://HOST/REPO)")
        return target
    return RegistrySource(parsed, storage, (parsed.digest,) if parsed.digest else ())


def _maybe_registry(text: str) -> bool:
    """Cheap: could `text` be a registry target (else the registry modules are not loaded)?"""
    low = text.lower()
    return low.startswith("registry://") or ("type=" in low and "registry" in low)


def is_registry(target: Target) -> bool:
    return isinstance(resolve_target(target), RegistrySource)


def open_store(
    target: Target, listing: Listing | None = None, *, use_cache: bool = False, verify: bool = False
):  # type: ignore[no-untyped-def]
    """The store for `target`, to use as a context manager. For a registry, ocicache's record of
    the repository's tags names older exports to look for, and is brought up to date only with
    `use_cache` (a library call writes nothing unless asked)."""
    resolved = resolve_target(target)
    if not isinstance(resolved, RegistrySource):
        from ocicache.store.layout import Layout

        return Layout(resolved, listing)
    from ocicache.store.registry import record
    from ocicache.store.registry.storage import DistributionStorage
    from ocicache.store.registry.store import RegistryStore

    t = resolved.target
    storage = DistributionStorage(resolved.storage, t.repo) if resolved.storage is not None else None
    seen = record.load(t.host, t.repo) if use_cache else {}
    older = [*resolved.digests, *(s.digest for hist in seen.values() for s in hist)]
    first: dict[str, int] = {}
    for hist in seen.values():
        for s in hist:
            first[s.digest] = min(first.get(s.digest, s.first_seen_ns), s.first_seen_ns)
    history = {tag: [(s.digest, s.first_seen_ns) for s in hist] for tag, hist in seen.items()}
    store = RegistryStore(t, storage=storage, older=older, seen=first, verify=verify, history=history)
    if use_cache:
        store.on_read = lambda tags: record.update(t.host, t.repo, tags, time.time_ns())
    return store
