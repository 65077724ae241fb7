"""RFC 3339 times as integer nanoseconds since the epoch, both ways (BuildKit writes nanoseconds)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9})\d*)?"
    r"(Z|z|[+-]\d{2}:\d{2})"
)


def parse_rfc3339_ns(text: object) -> int | None:
    """Nanoseconds since the epoch, or None for a missing, malformed or zero time.

    BuildKit writes Go's zero time `0001-01-01T00:00:00Z` for unknown times (FORMAT.md).
    """
    if not isinstance(text, str) or len(text) > 64:
        return None
    # A big cache holds ~100k of these, most of them several times (a layer's createdat is
    # in every manifest and config that lists it): remember each answer.
    try:
        return _memo[text]
    except KeyError:
        pass
    value = _parse(text)
    if len(_memo) < _MEMO_MAX:
        _memo[text] = value
    return value


_memo: dict[str, int | None] = {}


_MEMO_MAX = 1 << 20
_days: dict[tuple[int, int, int], int | None] = {}


def _parse(text: str) -> int | None:
    if len(text) == 30 and text[29] == "Z":
        fast = _parse_go(text)
        if fast is not None:
            return fast
    return _parse_general(text)


def _parse_general(text: str) -> int | None:
    """Any RFC 3339 time (the regex), whatever its precision and offset."""
    m = _RFC3339.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    if year == "0001":
        return None
    h, mi, s = int(hour), int(minute), int(second)
    if h > 23 or mi > 59 or s > 59:  # what datetime() refuses
        return None
    midnight = _midnight(int(year), int(month), int(day))
    if midnight is None:
        return None
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    seconds = midnight + h * 3600 + mi * 60 + s - offset
    nanos = int((frac or "0").ljust(9, "0"))
    return seconds * 1_000_000_000 + nanos


def _midnight(year: int, month: int, day: int) -> int | None:
    """Seconds since the epoch at 00:00 UTC of that day (None for no such day); remembered,
    since a cache's times fall on few days."""
    key = (year, month, day)
    if key not in _days:
        try:
            _days[key] = int(datetime(year, month, day, tzinfo=UTC).timestamp())
        except ValueError:
            _days[key] = None
    return _days[key]


def _parse_go(text: str) -> int | None:
    """The form BuildKit writes (`2026-09-21T10:11:12.123456789Z`, ASCII digits), with
    datetime's C parser for the seconds (~5x the Python slicing it replaced: a big cache has
    ~30k distinct times); None sends anything else (and anything odd) to the general parser."""
    frac = text[20:29]
    if (
        text[4] != "-"
        or text[7] != "-"
        or text[10] != "T"
        or text[13] != ":"
        or text[16] != ":"
        or text[19] != "."
        or not text.isascii()
        or not frac.isdigit()
        or text[:4] == "0001"
    ):
        return None
    try:
        # (fromisoformat checks every other character is a digit and the date and time exist;
        # a whole-second timestamp of years 1..9999 is exact in a float)
        seconds = datetime.fromisoformat(text[:19] + "+00:00").timestamp()
    except ValueError:
        return None
    return int(seconds) * 1_000_000_000 + int(frac)


def format_rfc3339(ns: int) -> str:
    """`2026-11-27T19:16:57.260096Z`: UTC, microsecond precision (`blobs --json` writes one per
    blob: the date of each day is made once, the time of day by arithmetic)."""
    seconds, frac = divmod(ns, 1_000_000_000)
    day, second = divmod(seconds, 86_400)
    date = _dates.get(day)
    if date is None:
        date = datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")
        _dates[day] = date
    hours, second = divmod(second, 3600)
    minutes, second = divmod(second, 60)
    return f"{date}T{hours:02d}:{minutes:02d}:{second:02d}.{frac // 1000:06d}Z"


_dates: dict[int, str] = {}


def to_datetime(ns: int) -> datetime:
    """An aware UTC datetime for `ns`, to the microsecond (the ones below are dropped)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
