"""Parse the human durations (`36h`, `7d`, `0`) and sizes (`5GB`, `500MiB`) that options take.

Exact integer arithmetic (no float: a 400-digit number is not infinity, `1.5G` is exactly
1500000000), ASCII digits only, and bounds: anything past MAX_NS or MAX_BYTES (2^63 - 1, Go's
int64, what BuildKit's own durations and sizes are) is a usage error that names the option.
"""

from __future__ import annotations

import re

from ocicache.base.errors import UsageError

NS_PER_S = 1_000_000_000
MAX_NS = 2**63 - 1  # about 292 years, Go's time.Duration
MAX_BYTES = 2**63 - 1  # 8 EiB
# Counts (`--keep-last N`): far past any directory's number of exports.
MAX_COUNT = 1_000_000_000
MAX_JOBS = 1024  # hashing threads (`check -j`)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_PART = re.compile(r"([0-9]+)(?:\.([0-9]+))?([smhdw])")
# Sizes: SI by default (like `humanize.naturalsize`, which our tables print), IEC with an `i`.
_SIZE = re.compile(r"([0-9]+)(?:\.([0-9]+))?\s*([kmgtpe]?)(i?)(b?)", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
# More integer digits than this is past every bound (10^30 > 2^63 x 604800 s x 10^9 ns):
# refused before int() (which refuses 4300+ digits with a ValueError of its own).
_MAX_DIGITS = 30
_MAX_FRACTION = 18  # digits after the point that can still matter (finer than 1 ns or 1 byte)


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "...")


def _scaled(whole: str, fraction: str | None, scale: int) -> int | None:
    """whole.fraction x scale, rounded down, exactly; None when it has too many digits."""
    whole = whole.lstrip("0") or "0"
    if len(whole) > _MAX_DIGITS:
        return None
    value = int(whole) * scale
    if fraction:
        fraction = fraction[:_MAX_FRACTION]
        value += int(fraction) * scale // 10 ** len(fraction)
    return value


def parse_duration_ns(text: str, option: str) -> int:
    """`90m`, `36h`, `7d`, `1h30m`, `30s` or `0` as nanoseconds; UsageError naming `option`."""
    s = text.strip().lower()
    if s == "0":
        return 0
    pos, total = 0, 0
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        part = _scaled(m.group(1), m.group(2), _DURATION_UNITS[m.group(3)] * NS_PER_S)
        if part is None:
            total = MAX_NS + 1
        else:
            total += part
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(f"{option}: {_shown(text)} is not a duration (e.g. 30s, 90m, 36h, 7d, 0)")
    if total > MAX_NS:
        raise UsageError(
            f"{option}: {_shown(text)} is too long (at most about 292 years, {MAX_NS // NS_PER_S // 86400}d)"
        )
    return total


def parse_size(text: str, option: str) -> int:
    """`5GB` (10^9), `500MiB` (2^20), `1.5G`, `123` (bytes) as bytes; UsageError naming `option`."""
    m = _SIZE.fullmatch(text.strip())
    if not m or (m.group(4) and not m.group(3)):
        raise UsageError(f"{option}: {_shown(text)} is not a size (e.g. 5GB, 500MiB, 1.5G, 1000000)")
    whole, fraction, prefix, iec, _ = m.groups()
    base = 1024 if iec else 1000
    value = _scaled(whole, fraction, base ** _SIZE_POWER[prefix.lower()])
    if value is None or value > MAX_BYTES:
        raise UsageError(f"{option}: {_shown(text)} is too large (at most 8 EiB, {MAX_BYTES} bytes)")
    return value
