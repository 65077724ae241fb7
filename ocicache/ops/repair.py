"""Repair applied: plan under BuildKit's lock and replace index.json atomically (core/repair.py plans)."""

from __future__ import annotations

import os

from ocicache.core.repair import RepairPlan, plan
from ocicache.ops.read import read_inventory
from ocicache.store.indexwrite import replace_index, require_readable_size
from ocicache.store.layout import Layout
from ocicache.store.lock import index_lock


def repair(directory: str | os.PathLike[str], dry_run: bool = False) -> RepairPlan:
    """Plan a repair of DIR and, unless `dry_run`, write the new index.json atomically."""
    with Layout(directory) as layout:
        first = plan(layout, read_inventory(layout))
        if dry_run or not first.needed:
            return first
        with index_lock(layout.root_fd):
            # BuildKit may have written index.json since we looked: plan again under the lock.
            final = plan(layout, read_inventory(layout))
            if final.needed:
                data = final.data
                require_readable_size(data)
                replace_index(layout.root_fd, data)
        return final
