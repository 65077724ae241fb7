"""Parse the human durations (`36h`, `7d`, `0`) and sizes (`5GB`, `500MiB`) that options take."""

from __future__ import annotations

import re

from ocicache.errors import UsageError

NS_PER_S = 1_000_000_000
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# Sizes: SI by default (like `humanize.naturalsize`, which our tables print), IEC with an `i`.
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)(b?)", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_duration_ns(text: str, option: str) -> int:
    """`90m`, `36h`, `7d`, `1h30m`, `30s` or `0` as nanoseconds; UsageError naming `option`."""
    s = text.strip().lower()
    if s == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"{option}: {text!r} is not a duration (e.g. 30s, 90m, 36h, 7d, 0)")
    return int(total * NS_PER_S)


def parse_size(text: str, option: str) -> int:
    """`5GB` (10^9), `500MiB` (2^20), `1.5G`, `123` (bytes) as bytes; UsageError naming `option`."""
    m = _SIZE.fullmatch(text.strip())
    if not m or (m.group(3) and not m.group(2)):
        raise UsageError(f"{option}: {text!r} is not a size (e.g. 5GB, 500MiB, 1.5G, 1000000)")
    number, prefix, iec, _ = m.groups()
    base = 1024 if iec else 1000
    return int(float(number) * base ** _SIZE_POWER[prefix.lower()])
