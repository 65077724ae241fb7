"""index.json as text: its entries with their exact bytes, and new entries as Go's encoding/json writes them.

A rewrite (store/indexwrite.py) keeps every untouched entry's bytes; core/pins.py decides the
new list of entries in these terms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocicache.base.errors import CorruptError
from ocicache.format import documents as docs
from ocicache.format.names import INDEX_JSON

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class RawEntry:
    """One element of index.json `manifests`: its exact JSON text and its decoded value."""

    text: str
    doc: dict[str, Any]

    @classmethod
    def new(cls, doc: dict[str, Any]) -> RawEntry:
        return cls(go_json(doc), doc)


@dataclass(frozen=True)
class Rewrite:
    """What a rewrite did: the entries before and after, and whether the file changed."""

    before: tuple[RawEntry, ...]
    after: tuple[RawEntry, ...]
    changed: bool


Transform = Callable[[list[RawEntry]], list[RawEntry]]


def go_json(doc: object) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML-safe escapes, raw UTF-8)."""
    text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for char, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, esc)
    return text


def _skip(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _expect(text: str, i: int, char: str) -> int:
    if text[i : i + 1] != char:
        raise CorruptError(f"expected {char!r} at offset {i}", file=INDEX_JSON)
    return _skip(text, i + 1)


def _members(text: str, i: int) -> tuple[list[tuple[str, str, str]], int]:
    """(key, raw key, raw value) of the object starting at text[i] == '{'; the end offset."""
    out: list[tuple[str, str, str]] = []
    i = _expect(text, i, "{")
    if text[i : i + 1] == "}":
        return out, i + 1
    while True:
        start = i
        key, i = _DECODER.raw_decode(text, i)
        raw_key = text[start:i]
        i = _expect(text, _skip(text, i), ":")
        start = i
        _, i = _DECODER.raw_decode(text, i)
        out.append((key, raw_key, text[start:i]))
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        if text[i : i + 1] != "}":
            raise CorruptError(f"expected ',' or '}}' at offset {i}", file=INDEX_JSON)
        return out, i + 1


def _elements(text: str) -> list[str]:
    """The raw text of each element of a JSON array."""
    out: list[str] = []
    i = _expect(text, _skip(text, 0), "[")
    if text[i : i + 1] == "]":
        return out
    while True:
        start = i
        _, i = _DECODER.raw_decode(text, i)
        out.append(text[start:i])
        i = _skip(text, i)
        if text[i : i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        return out


def split_index(data: bytes) -> tuple[list[tuple[str, str, str]], list[RawEntry], str]:
    """index.json as (top-level members, entries with their raw text, trailing text).

    Raises CorruptError when index.json is torn or invalid: we never rewrite what we cannot read.
    """
    doc = docs.loads_strict(data, INDEX_JSON)
    docs.parse_index(doc)  # validates against the image-index schema
    text = data.decode("utf-8")
    members, end = _members(text, _skip(text, 0))
    raw = dict((k, v) for k, _, v in members)
    entries = [RawEntry(t, e) for t, e in zip(_elements(raw["manifests"]), doc["manifests"], strict=True)]
    return members, entries, text[end:]


def join_index(members: list[tuple[str, str, str]], entries: list[RawEntry], tail: str) -> bytes:
    """The compact document: every top-level member as it was, `manifests` replaced."""
    manifests = "[" + ",".join(e.text for e in entries) + "]"
    parts = [f"{rk}:{manifests if k == 'manifests' else rv}" for k, rk, rv in members]
    return ("{" + ",".join(parts) + "}" + tail).encode("utf-8")
