"""What a blob reaches, and what dropping some roots frees: the one rule gc and history share.

A cache manifest reaches its cache config, its layers and any other descriptor it lists; a cache
config reaches the layer blobs it names; a foreign manifest or index reaches its children. A
blob is freed by dropping a group of roots when that group reaches it and nothing that stays
does (`Holders`). `gc` deletes what the exports it drops free (then spares what is younger than
`--grace`), and an export's UNIQUE (`history`, `show`) is what dropping that export alone frees
while every other export stays: one rule, one implementation, so the two cannot disagree.

Pure: no I/O; sizes are the sizes of the files on disk (a blob that is missing frees nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from ocicache.core.inventory import Inventory

K = TypeVar("K", bound=Hashable)


def children(inv: Inventory, digest: str) -> list[str]:
    """The blobs one document references directly (none for a layer or an unknown blob)."""
    manifest = inv.manifests.get(digest)
    if manifest is not None:
        out = [d.digest for d in (*manifest.layers, *manifest.others)]
        if manifest.config is not None:
            out.append(manifest.config.digest)
        return out
    config = inv.configs.get(digest)
    if config is not None:
        # The cache config names its layer blobs too (normally the manifest's layers).
        return [layer.blob for layer in config.layers]
    other = inv.foreign.get(digest)
    if other is not None:
        return [d.digest for d in other.children]
    return []


def documents(inv: Inventory) -> set[str]:
    """Every digest `children` can name children of (the parsed documents): any other blob is
    a leaf. Keep it in step with `children`."""
    return set(inv.manifests) | set(inv.configs) | set(inv.foreign)


def closure(
    inv: Inventory,
    roots: Iterable[str],
    stop: set[str] | frozenset[str] = frozenset(),
    docs: set[str] | None = None,
) -> set[str]:
    """`roots` and every blob they reference, transitively (iterative: any depth), and the OCI
    referrers (documents in blobs/ whose `subject` is one of them) of everything reached, with
    what they reference; the walk does not enter `stop` (a set closed under references, that
    the caller already has). `docs`: `documents(inv)`, when the caller walks many times."""
    if docs is None:
        docs = documents(inv)
    referrers = inv.referrers
    seen = set(roots)
    seen.difference_update(stop)
    frontier = list(seen)
    while frontier:  # level by level, set operations doing the work
        found: set[str] = set()
        for digest in frontier:
            if digest in docs:
                found.update(children(inv, digest))
            if digest in referrers:
                found.update(referrers[digest])
        found.difference_update(seen)
        found.difference_update(stop)
        seen.update(found)
        frontier = list(found)
    return seen


def always_kept(inv: Inventory) -> list[str]:
    """Roots no policy drops, whatever the clock: everything a foreign index.json entry reaches,
    and JSON that failed to parse (it could be a manifest whose references are unknown)."""
    return sorted(set(inv.foreign_closure) | set(inv.bad_docs))


class Holders(Generic[K]):
    """Which groups of roots hold each blob, and what dropping a group frees: the one rule of
    gc's plan (`drop`, `unheld`) and of an export's UNIQUE (`alone`).

    `kept` (with everything it reaches) is never freed; a blob on disk is freed when no group
    that is still held reaches it. `closed`: each group already is a closure (what `closure`
    returned for its roots), so it is not walked again.
    """

    def __init__(
        self, inv: Inventory, groups: Mapping[K, Iterable[str]], kept: Iterable[str], *, closed: bool = False
    ) -> None:
        self.inv = inv
        docs = documents(inv)
        self.kept = closure(inv, kept, docs=docs)
        self.reached: dict[K, set[str]] = {
            key: (roots if isinstance(roots, set) else set(roots))
            if closed
            else closure(inv, roots, self.kept, docs)
            for key, roots in groups.items()
        }
        self.count: Counter[str] = Counter()
        for blobs in self.reached.values():
            self.count.update(blobs)

    def alone(self, key: K) -> set[str]:
        """What dropping the group `key` alone frees now: the blobs on disk it reaches that no
        other held group and nothing kept reaches."""
        count, kept, on_disk = self.count, self.kept, self.inv.blobs
        return {d for d in self.reached[key] if count[d] == 1 and d in on_disk and d not in kept}

    def drop(self, key: K) -> set[str]:
        """Drop the group `key`: the blobs that frees (`alone(key)` just before)."""
        freed = self.alone(key)
        count = self.count
        for d in self.reached.pop(key):
            count[d] -= 1
        return freed

    def unheld(self) -> set[str]:
        """The blobs on disk that nothing kept and no held group reaches (what dropping
        everything but the held groups and `kept` frees)."""
        count, kept = self.count, self.kept
        return {d for d in self.inv.blobs if not count.get(d) and d not in kept}


def freed_bytes(inv: Inventory, digests: set[str]) -> int:
    """Bytes the files of these blobs take on disk (absent ones: none)."""
    on_disk = inv.blobs
    return sum([on_disk[d].size for d in digests if d in on_disk])
