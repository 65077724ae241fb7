"""Output of `diff`: the ocicache/diff@1 document and the side-by-side text."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ocicache.cli.render import _digest, _t, _tag_cell, ago, size, table
from ocicache.core.diff import (
    A_PREVIOUS_IN_HISTORY,
    A_PREVIOUS_ON_TAG,
    CHANGED,
    EVIDENCE,
    LIMIT,
    NEW,
    REBUILT,
    SHARED,
    Diff,
    Divergence,
    Step,
    Tree,
)

KIND_ONLY_A = "onlyA"  # a divergence where A had a step and B has none
BUILT_BEFORE_A = "built before A"  # ALSO IN: no export holds it, but it predates A's build
_MAX_INDENT = 8


def _step_ref(tree: Tree, i: int) -> dict[str, Any] | None:
    if i < 0:
        return None
    s = tree.steps[i]
    return {"layer": s.layer, "index": s.index, "size": s.size, "createdAt": _t(s.created_ns)}


def _step_json(tree: Tree, s: Step) -> dict[str, Any]:
    parent = tree.steps[s.parent] if s.parent >= 0 else None
    return {
        "position": s.depth,
        "ordinal": s.ordinal,
        "index": s.index,
        "layer": s.layer,
        "size": s.size,
        "createdAt": _t(s.created_ns),
        "parent": parent.layer if parent else None,
        "parentIndex": parent.index if parent else -1,
    }


def _export_ref(r: Diff, n: int) -> str | None:
    return r.exports[n] if n >= 0 else None


def _kind(r: Diff, d: Divergence) -> str:
    return KIND_ONLY_A if d.b < 0 else r.comparison.status[d.b]


def _divergence_json(r: Diff, d: Divergence) -> dict[str, Any]:
    c = r.comparison
    parent = c.b.steps[d.parent] if d.parent >= 0 else None
    return {
        "position": parent.depth + 1 if parent else 1,
        "kind": _kind(r, d),
        "parent": parent.layer if parent else None,
        "a": c.a.steps[d.a].layer if d.a >= 0 else None,
        "b": c.b.steps[d.b].layer if d.b >= 0 else None,
        "aStep": _step_ref(c.a, d.a),
        "bStep": _step_ref(c.b, d.b),
        "aAfter": d.below_a,
        "bAfter": d.below_b,
    }


def diff_json(
    directory: str | None, r: Diff, warnings: list[str], target: str | None = None
) -> dict[str, Any]:
    c = r.comparison
    steps = []
    for i, s in enumerate(c.b.steps):
        doc = _step_json(c.b, s)
        doc["status"] = c.status[i]
        doc["counterpart"] = _step_ref(c.a, c.counterpart[i])
        doc["alsoIn"] = _export_ref(r, r.also_in[i])
        doc["builtBeforeA"] = r.built_before_a[i]
        steps.append(doc)
    divergences = [_divergence_json(r, d) for d in c.divergences]
    return {
        "schema": "ocicache/diff@1",
        "directory": directory,
        "target": target if target is not None else directory,
        "a": r.a.digest,
        "b": r.b.digest,
        "aPosition": r.a_position,
        "bPosition": r.b_position,
        "aTags": list(r.a.tags),
        "bTags": list(r.b.tags),
        "aChosen": r.a_from,
        "sameExport": r.same_export,
        "commonSteps": r.common_steps,
        "counts": {
            "shared": c.count(SHARED),
            "changed": c.count(CHANGED),
            "rebuilt": c.count(REBUILT),
            "new": c.count(NEW),
            "aSteps": len(c.a.steps),
            "bSteps": len(c.b.steps),
            "onlyA": len(c.only_a),
        },
        "steps": steps,
        "onlyASteps": [_step_json(c.a, c.a.steps[i]) for i in c.only_a],
        "divergences": divergences,
        "firstDivergence": divergences[0] if divergences else None,
        "sharedBytes": r.shared_bytes,
        "onlyABytes": r.only_a_bytes,
        "onlyBBytes": r.only_b_bytes,
        "evidence": list(EVIDENCE),
        "limit": LIMIT,
        "warnings": warnings,
    }


# -- text ----------------------------------------------------------------------------------------
def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _when(ns: int | None) -> str:
    return f"built {_t(ns)}" if ns is not None else "build time unknown"


def _about(tree: Tree, i: int, no_trunc: bool) -> str:
    s = tree.steps[i]
    return f"{_digest(s.layer, no_trunc)} ({size(s.size)}, {_when(s.created_ns)})"


def divergence_text(r: Diff, d: Divergence, no_trunc: bool = False) -> str:
    """One branch point in words."""
    c = r.comparison
    parent = c.b.steps[d.parent] if d.parent >= 0 else None
    where = (
        f"position {parent.depth + 1} (on {_digest(parent.layer, no_trunc)})"
        if parent
        else "position 1 (a root)"
    )
    kind = _kind(r, d)
    if kind == CHANGED:
        again = " (the same layer, built again)" if c.a.steps[d.a].layer == c.b.steps[d.b].layer else ""
        after = (
            "; nothing is built on it"
            if not d.below_b
            else "; the step built on it was rebuilt (its parent changed)"
            if d.below_b == 1
            else f"; the {d.below_b} steps built on it were rebuilt (their parent changed)"
        )
        return (
            f"{where}: changed: B has {_about(c.b, d.b, no_trunc)} where A had "
            f"{_about(c.a, d.a, no_trunc)}{again}{after}"
        )
    if kind == NEW:
        after = f"; {_plural(d.below_b, 'more new step')} on it" if d.below_b else ""
        return f"{where}: new: B has {_about(c.b, d.b, no_trunc)} where A had no step{after}"
    after = f" and {_plural(d.below_a, 'step')} on it" if d.below_a else ""
    return f"{where}: only in A: A had {_about(c.a, d.a, no_trunc)}{after}; B has no step there"


def _head(r: Diff, now: datetime, no_trunc: bool) -> str:
    """Which two exports, as a small table (its cells escaped like every table's)."""
    how = {
        A_PREVIOUS_ON_TAG: "the export before B on its tag",
        A_PREVIOUS_IN_HISTORY: "the export before B in history",
    }.get(r.a_from, "")
    rows = [
        [name, f"~{pos}", _digest(e.digest, no_trunc), _tag_cell(e), ago(e.created_ns, now), note]
        for name, e, pos, note in (("A", r.a, r.a_position, how), ("B", r.b, r.b_position, ""))
    ]
    if not how:
        rows = [row[:-1] for row in rows]
    return table(
        rows,
        ["", "EXPORT", "DIGEST", "TAGS", "EXPORTED", "CHOSEN AS"]
        if how
        else ["", "EXPORT", "DIGEST", "TAGS", "EXPORTED"],
    )


def _stamp(ns: int | None) -> str:
    """A step's build time to the second (its steps are seconds apart: relative times blur)."""
    t = _t(ns)
    return f"{t[:10]} {t[11:19]}" if t else "-"


def _cells(tree: Tree, i: int, no_trunc: bool) -> list[str]:
    if i < 0:
        return ["-", "-", "-"]
    s = tree.steps[i]
    return [_digest(s.layer, no_trunc), size(s.size), _stamp(s.created_ns)]


def diff_text(r: Diff, now: datetime, no_trunc: bool = False) -> str:
    c = r.comparison
    out = [_head(r, now, no_trunc)]
    rows = []
    also = any(n >= 0 for n in r.also_in) or any(r.built_before_a)
    for row in c.rows:
        depth = (c.b.steps[row.b] if row.b >= 0 else c.a.steps[row.a]).depth
        indent = "· " * min(row.level, _MAX_INDENT) + ("… " if row.level > _MAX_INDENT else "")
        status = c.status[row.b] if row.b >= 0 else "only in A"
        cells = [f"{indent}{depth}", *_cells(c.a, row.a, no_trunc), status, *_cells(c.b, row.b, no_trunc)]
        if also:
            n = r.also_in[row.b] if row.b >= 0 else -1
            before = row.b >= 0 and r.built_before_a[row.b]
            cells.append(f"~{n}" if n >= 0 else BUILT_BEFORE_A if before else "")
        rows.append(cells)
    out.append("")
    if rows:
        headers = ["POS", "A LAYER", "A SIZE", "A CREATED", "STATUS", "B LAYER", "B SIZE", "B CREATED"]
        out.append(table(rows, [*headers, "ALSO IN"] if also else headers))
    else:
        out.append("neither export has a step")
    out.append("")
    if r.same_export:
        out.append("A and B are the same export: every step is shared")
    else:
        if not r.common_steps and c.b.steps and c.a.steps:
            out.append("no step in common: B shares no step with A (another base, or its first step changed)")
        divs = c.divergences
        if divs:
            out.append(f"first divergence: {divergence_text(r, divs[0], no_trunc)}")
            if len(divs) > 1:
                out.append(f"B diverges from A at {len(divs)} places in all; also at:")
                out.extend(f"  {divergence_text(r, d, no_trunc)}" for d in divs[1:])
        elif c.b.steps:
            out.append("no divergence: B has every step of A, at the same places")
    out.append(
        f"steps of B: {c.count(SHARED)} shared, {c.count(CHANGED)} changed, "
        f"{c.count(REBUILT)} rebuilt, {c.count(NEW)} new (of {len(c.b.steps)}); "
        f"A has {_plural(len(c.a.steps), 'step')}, {len(c.a.steps) - c.count(SHARED)} "
        "not in B"
    )
    n_before = sum(r.built_before_a)
    if n_before:
        out.append(
            f"built before A: {_plural(n_before, 'step')} of B that A does not share "
            f"{'was' if n_before == 1 else 'were'} built before A's newest step (createdAt): "
            "B's build did not run them, BuildKit re-used them (from its own cache or an "
            "older export)"
        )
    out.append(
        f"layers: {size(r.shared_bytes)} shared, {size(r.only_a_bytes)} only in A, "
        f"{size(r.only_b_bytes)} only in B"
    )
    out.append(f"evidence: each step's {', '.join(EVIDENCE[:-1])} and {EVIDENCE[-1]}; {LIMIT}")
    return "\n".join(out)
