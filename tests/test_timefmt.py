"""RFC 3339 text both ways (base/timefmt.py), against the standard library's own arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ocicache.base.timefmt import format_rfc3339, parse_rfc3339_ns

# Years 1..9999: what datetime can hold.
NS = st.integers(min_value=-62_135_596_800 * 10**9, max_value=253_402_300_799 * 10**9 + 999_999_999)


def _reference(ns: int) -> str:
    dt = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns % 1_000_000_000) // 1000:06d}Z"


@given(NS)
def test_format_is_strftime(ns: int) -> None:
    assert format_rfc3339(ns) == _reference(ns)


def test_format_edges() -> None:
    for ns in (0, 1, -1, 999_999_999, -1_000_000_000, 86_400 * 10**9 - 1, 1_790_000_000_123_456_789):
        assert format_rfc3339(ns) == _reference(ns)
    assert format_rfc3339(1_790_000_000_123_456_789) == "2026-09-21T14:13:20.123456Z"


@given(st.integers(min_value=0, max_value=253_402_300_799 * 10**9))
def test_format_then_parse_keeps_the_microseconds(ns: int) -> None:
    assert parse_rfc3339_ns(format_rfc3339(ns)) == ns - ns % 1000


# The fast path (`_parse_go`, BuildKit's own form, asked only of 30 characters ending in Z)
# against the general regex parser, on the form itself and on near misses: any character
# anywhere before the Z, out-of-range fields.
_GO_CHARS = st.sampled_from("0123456789-T:.Zz +_٣tx\u00e9")


def _go_form(ns: int) -> str:
    """`2026-09-21T10:11:12.123456789Z` (years zero-padded, which strftime's %Y is not)."""
    d = datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC)
    return (
        f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
        f".{ns % 1_000_000_000:09d}Z"
    )


@given(NS)
def test_go_form_parses_as_the_general_parser_does(ns: int) -> None:
    from ocicache.base import timefmt

    text = _go_form(ns)
    assert len(text) == 30
    got = timefmt._parse_go(text)
    want = None if text.startswith("0001") else ns
    assert got == want == timefmt._parse_general(text)


@given(NS, st.integers(min_value=0, max_value=28), _GO_CHARS)
def test_go_form_near_misses_agree_with_the_general_parser(ns: int, at: int, ch: str) -> None:
    from ocicache.base import timefmt

    text = _go_form(ns)
    text = text[:at] + ch + text[at + 1 :]
    fast = timefmt._parse_go(text)
    if fast is not None:  # (None: the general parser decides)
        assert fast == timefmt._parse_general(text)


def test_go_form_edges() -> None:
    from ocicache.base import timefmt

    for text in (
        "2026-02-29T00:00:00.000000000Z",  # no such day
        "2024-02-29T23:59:59.999999999Z",  # a leap day
        "2026-09-21T24:00:00.000000000Z",
        "2026-09-21T23:60:00.000000000Z",
        "2026-09-21T23:59:60.000000000Z",  # a leap second: datetime refuses it
        "0001-01-01T00:00:00.000000000Z",  # Go's zero time
        "1969-12-31T23:59:59.999999999Z",
        "2026-09-21T10:11:12.1_3456789Z",
        "2026-09-21T10:11:12.+23456789Z",
        "2026-09-21T10:11:1٣.123456789Z",
    ):
        assert timefmt._parse_go(text) in (None, timefmt._parse_general(text)), text
        assert timefmt.parse_rfc3339_ns(text) == timefmt._parse_general(text), text
    assert timefmt._parse_go("2024-02-29T23:59:59.999999999Z") == 1_709_251_199_999_999_999
