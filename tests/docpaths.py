"""Where a JSON document can be mutated: shared by the fast-path soundness tests."""

from __future__ import annotations

from typing import Any


def json_paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into `doc` (keys and the first three indexes of each list), root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(json_paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:3]):
            out.extend(json_paths(v, (*prefix, i)))
    return out
