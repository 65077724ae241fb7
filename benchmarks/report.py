"""Printing the benchmark's tables: fixed-width text, one verdict word per target column."""

from __future__ import annotations

from dataclasses import dataclass

LABEL = 53  # the longest read line, `gc --dry-run --keep-within 1h --max-size 1GB --json`, fits


def secs(x: float) -> str:
    return f"{x:8.3f}" if x == x else f"{'-':>8}"


def ratio(x: float | None) -> str:
    return f"{x:7.1f}x" if x is not None and x == x else f"{'-':>8}"


def mb(x: float) -> str:
    return f"{x:7.1f} MB" if x == x else f"{'-':>10}"


def verdict(met: bool | None) -> str:
    return "" if met is None else ("  met" if met else "  NOT")


def pct(x: float) -> str:
    return f"{x:6.0%}"


def row(label: str, *cells: str) -> str:
    text = label if len(label) <= LABEL else label[: LABEL - 1] + "~"
    return (f"{text:<{LABEL}}" + "".join(cells)).rstrip()


@dataclass(frozen=True)
class Target:
    """One line of the final table: what was promised, what was measured, whether it holds."""

    name: str
    measured: str
    met: bool | None  # None: not measured

    def as_dict(self) -> dict[str, object]:
        return {"target": self.name, "measured": self.measured, "met": self.met}


def targets_table(targets: list[Target]) -> list[str]:
    width = max(len(t.name) for t in targets) + 2
    mwidth = max(len(t.measured) for t in targets) + 2
    out = [f"{'target':<{width}}{'measured':<{mwidth}}met?"]
    for t in targets:
        word = "not measured" if t.met is None else ("met" if t.met else "NOT met")
        out.append(f"{t.name:<{width}}{t.measured:<{mwidth}}{word}")
    return out
