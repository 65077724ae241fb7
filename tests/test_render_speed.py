"""The fast layouts of big outputs are the same bytes as the libraries they stand in for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import humanize
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tabulate import tabulate

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


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | json_text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(json_text, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(json_text, json_values, max_size=6))
def test_dumps_is_json_dumps_indent_2(doc: dict[str, object]) -> None:
    assert render.dumps(doc) == json.dumps(doc, indent=2).encode()


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
    want = humanize.naturaltime(now - render.to_datetime(ns))
    assert render.ago(ns, now) == want
    assert render.ago(ns, now) == want  # remembered: the same answer
