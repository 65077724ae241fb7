"""One mutation of a JSON document, for the decoder's property tests."""

from __future__ import annotations

import copy
from typing import Any


def mutate(doc: Any, path: tuple[Any, ...], action: str, key: str, value: Any) -> Any:
    """A copy of `doc` with the value at `path` replaced ("set"), removed ("delete"), or, when
    it is an object, given `key` = `value` ("add"); the empty path is the document itself."""
    doc = copy.deepcopy(doc)
    if not path:
        if action == "set":
            return value
        if action == "add" and isinstance(doc, dict):
            doc[key] = value
        return doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "set":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent[last], dict):
        parent[last][key] = value
    return doc
