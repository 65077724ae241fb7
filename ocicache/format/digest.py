"""Digest strings: parse and validate them before they ever become a path (OCI image-spec digest grammar)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocicache.base.errors import UsageError
from ocicache.format.names import HEX_LENGTHS

# image-spec descriptor.md: algorithm-component ([+._-] algorithm-component)* ":" encoded
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# Registered algorithms: the encoded part is lower-case hex of a fixed length.
_ENCODED = {algorithm: re.compile(f"[a-f0-9]{{{n}}}") for algorithm, n in HEX_LENGTHS.items()}
ALGORITHMS = tuple(_ENCODED)


@dataclass(frozen=True, order=True)
class Digest:
    """A validated digest of a registered algorithm; safe to use as a path component pair."""

    algorithm: str
    encoded: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


def parse_digest(text: object) -> Digest:
    """Parse `text` as a digest of a registered algorithm, or raise UsageError saying why not."""
    if not isinstance(text, str):
        raise UsageError(f"digest must be a string, not {type(text).__name__}")
    if len(text) > 200 or not _GRAMMAR.fullmatch(text):
        raise UsageError(f"{_short(text)!r} is not a digest (want algorithm:hex)")
    algorithm, encoded = text.split(":", 1)
    pattern = _ENCODED.get(algorithm)
    if pattern is None:
        raise UsageError(f"{_short(text)!r}: unsupported digest algorithm {algorithm!r}")
    if not pattern.fullmatch(encoded):
        raise UsageError(
            f"{_short(text)!r}: a {algorithm} digest is {_LEN[algorithm]} lower-case hex characters"
        )
    return Digest(algorithm, encoded)


_LEN = {"sha256": 64, "sha512": 128}


def is_valid_digest(text: object) -> bool:
    """True when `text` is a digest of a registered algorithm."""
    try:
        parse_digest(text)
    except UsageError:
        return False
    return True


def is_hex_name(algorithm: str, name: str) -> bool:
    """True when `name` is a valid encoded part for `algorithm` (used for file names in blobs/)."""
    pattern = _ENCODED.get(algorithm)
    return pattern is not None and pattern.fullmatch(name) is not None


def _short(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."
