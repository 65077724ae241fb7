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
