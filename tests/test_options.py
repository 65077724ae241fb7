"""Numeric, duration and size options: any value a user can type is either taken exactly or is
a usage error (exit 2, `ocicache: error: ...` naming the option), never a crash (exit 70)."""

from __future__ import annotations

import pytest
from clirun import run_inprocess
from conftest import FIXTURES, copy_tree

from ocicache.base.errors import UsageError
from ocicache.base.units import MAX_BYTES, MAX_NS, NS_PER_S, parse_duration_ns, parse_size

HUGE = "9" * 400
HUGER = "9" * 5000  # past int()'s own 4300-digit limit
# What a user (or a script gone wrong) may type where a number goes.
NUMBERS = [
    HUGE,
    HUGER,
    "1e400",
    "1e3",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "-0",
    "0x10",
    "1_000",
    "\u0661",
    "\uff11",
    "1.5.5",
    "",
    " ",
    "--",
    "1" + "0" * 30,
    f"0.{HUGER}",
]
DURATIONS = [
    *NUMBERS,
    f"{HUGE}h",
    f"{HUGER}s",
    "1e400s",
    "nan s",
    "infh",
    "-1h",
    "1h-1m",
    f"{2**63}s",
    "106752d",
    f"0.{HUGER}h",
    "\u0661h",
]
SIZES = [
    *NUMBERS,
    f"{HUGE}GB",
    f"{HUGER}KiB",
    "1e400B",
    "nanGB",
    "8EiB",
    "9.3EB",
    f"{2**63}",
    f"0.{HUGER}GB",
    "\u0661GB",
    "5XB",
]
OPTIONS = {"--grace": DURATIONS, "--keep-within": DURATIONS, "--max-size": SIZES, "--keep-last": NUMBERS}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(copy_tree(FIXTURES / "a-history-min", tmp_path_factory.mktemp("o") / "a"))


@pytest.mark.parametrize(
    ("option", "value"),
    [(o, v) for o, values in OPTIONS.items() for v in values],
    ids=lambda x: x[:24] if isinstance(x, str) else x,
)
def test_gc_option_values(cache: str, option: str, value: str) -> None:
    r = run_inprocess("gc", cache, "--dry-run", option, value)
    assert r.code in (0, 2), f"{option} {value[:30]!r}: exit {r.code}\n{r.err[:500]}"
    assert "internal error" not in r.err and "Traceback" not in r.err
    if r.code == 2:
        assert r.err.startswith("ocicache: error: "), r.err[:300]
        assert option in r.err.splitlines()[0]
        assert len(r.err) < 1000  # a 5,000-digit value is not echoed whole
        assert r.out == ""


@pytest.mark.parametrize("value", [*NUMBERS, "2000", "1025", "1024"], ids=lambda x: x[:24])
def test_check_jobs_values(cache: str, value: str) -> None:
    r = run_inprocess("check", "--quick", "-j", value, cache)
    assert r.code in (0, 2), f"-j {value[:30]!r}: exit {r.code}\n{r.err[:500]}"
    assert "internal error" not in r.err
    if r.code == 2:
        assert r.err.startswith("ocicache: error: ") and "--jobs" in r.err


def test_exact_and_bounded_durations() -> None:
    assert parse_duration_ns("1.5h", "--grace") == 5400 * NS_PER_S
    assert parse_duration_ns("0.000000001s", "--grace") == 1
    assert parse_duration_ns("106751d", "--grace") == 106751 * 86400 * NS_PER_S
    assert parse_duration_ns(f"0.{'9' * 5000}s", "--grace") == NS_PER_S - 1
    assert parse_duration_ns(f"{'0' * 500}1s", "--grace") == NS_PER_S
    for text in (f"{HUGE}h", f"{2**63}s", "106752d", f"{'9' * 25}w"):
        with pytest.raises(UsageError, match=r"--grace: .* is too long"):
            parse_duration_ns(text, "--grace")
    with pytest.raises(UsageError):
        parse_duration_ns("\u0661h", "--grace")  # ASCII digits only
    assert parse_duration_ns(f"{MAX_NS // NS_PER_S}s", "--grace") <= MAX_NS


def test_exact_and_bounded_sizes() -> None:
    assert parse_size("1.5G", "--max-size") == 1_500_000_000
    assert parse_size("0.5KiB", "--max-size") == 512
    assert parse_size("7EiB", "--max-size") == 7 << 60
    assert parse_size(str(MAX_BYTES), "--max-size") == MAX_BYTES
    for text in (HUGE, str(MAX_BYTES + 1), "8EiB", f"{HUGER}KiB"):
        with pytest.raises(UsageError, match=r"--max-size: .* is too large"):
            parse_size(text, "--max-size")
    for text in ("1e400", "nan", "inf", "-5", "\u0661"):
        with pytest.raises(UsageError, match="is not a size"):
            parse_size(text, "--max-size")
