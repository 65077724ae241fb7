"""The fast layouts of big outputs are the same bytes as the libraries they stand in for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import humanize
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

from ocicache.base.timefmt import to_datetime
from ocicache.cli import render
from ocicache.cli.textsafe import safe

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
# JSON values hold any code point a document may decode to, lone surrogates included.
json_text = st.text(max_size=12)


@pytest.mark.skipif(render._wide_chars(), reason="tabulate measures by wcwidth here")
@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.lists(text, min_size=n, max_size=n),
            st.lists(st.lists(text, min_size=n, max_size=n), max_size=8),
        )
    )
)
def test_simple_table_is_tabulates_simple_format(case: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = case
    headers = [safe(h) for h in headers]
    cells = [[safe(c) for c in row] for row in rows]
    want = tabulate(cells, headers=headers, tablefmt="simple", disable_numparse=True)
    assert render.simple_table(cells, headers) == want


def test_tables_big_and_small_are_tabulates() -> None:
    """tabulate's own layout, to the byte, for a 501-row table and a 3-row one; and whether
    wcwidth is installed is what tabulate itself says."""
    import tabulate as tabulate_mod

    assert render._wide_chars() == bool(tabulate_mod.WIDE_CHARS_MODE)
    rows = [[f"sha256:{i:012x}", f"{i} Bytes", "layer", str(i % 7), " older ", "-"] for i in range(501)]
    heads = ["DIGEST", "SIZE", "KIND", "EXPORTS", "REACHED FROM", "MODIFIED"]
    want = tabulate(rows, headers=heads, tablefmt="simple", disable_numparse=True)
    assert render.table(rows, heads) == want
    assert render.table(rows[:3], heads) == tabulate(
        rows[:3], headers=heads, tablefmt="simple", disable_numparse=True
    )


def json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[object]:
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64)
        | json_text
        | st.sampled_from(["\x7f", "caf\u00e9", "\u2028", "\x00\x1f", "</"])
        | floats,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
        max_leaves=20,
    )


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(json_text, json_values(st.nothing()), max_size=6))
def test_dumps_is_json_dumps_indent_2(doc: dict[str, object]) -> None:
    assert render.dumps(doc) == json.dumps(doc, indent=2).encode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(json_text, json_values(st.floats(0, 1e9).map(lambda x: round(x, 3))), max_size=6))
def test_dumps_spells_floats_rounded_to_3_places_as_json_does(doc: dict[str, object]) -> None:
    """copy's elapsedSeconds (round(seconds, 3)) is the one float ocicache writes."""
    assert render.dumps(doc) == json.dumps(doc, indent=2).encode()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(json_text, json_values(st.floats(allow_nan=False, allow_infinity=False)), max_size=6))
def test_dumps_writes_any_float_as_the_same_value(doc: dict[str, object]) -> None:
    """Any other float may be spelled otherwise (`1e-05` as `0.00001`), never another value."""
    got = render.dumps(doc)
    assert got.isascii()
    assert json.loads(got) == json.loads(json.dumps(doc))


def test_dumps_keeps_a_lone_surrogate_as_json_writes_it() -> None:
    """A tag decoded from `\\udc80` (valid JSON, no valid UTF-16) is written back escaped."""
    doc = {"tag": "x\udc80y", "pair": "\ud83d\ude00"}
    assert render.dumps(doc) == json.dumps(doc, indent=2).encode()


@pytest.mark.parametrize(
    "delta",
    [
        timedelta(0),
        timedelta(microseconds=999_999),
        timedelta(seconds=59, microseconds=900_000),
        timedelta(days=3, seconds=5),
        timedelta(days=400),
        timedelta(seconds=-5),
        timedelta(days=-2),
    ],
)
def test_ago_is_humanize_naturaltime(delta: timedelta) -> None:
    now = datetime(2026, 12, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    ns = int((now - delta).timestamp() * 1e9)
    want = humanize.naturaltime(now - to_datetime(ns))
    assert render.ago(ns, now) == want
    assert render.ago(ns, now) == want  # remembered: the same answer


@settings(max_examples=500, deadline=None)
@given(st.integers(-(2**62), 2**62), st.integers(0, 2**62))
def test_ago_of_any_time_is_humanize_naturaltime(ns: int, now_ns: int) -> None:
    """ago's integer arithmetic and its memo give naturaltime(now - to_datetime(ns)) for any
    mtime, in the past or the future, asked twice."""
    now = to_datetime(now_ns)
    want = humanize.naturaltime(now - to_datetime(ns))
    assert render.ago(ns, now) == want
    assert render.ago(ns + 1, now) == humanize.naturaltime(now - to_datetime(ns + 1))
    assert render.ago(ns, now) == want
