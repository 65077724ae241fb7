"""diff: two exports side by side, step by step, and which export came before which on a tag.

Pure: values in, values out (no I/O); every walk is iterative (chains can be thousands deep).

What the evidence is. A cache config records a forest of steps: `layers[i]` is a layer blob
and `layers[i].parent` the step it was built on (FORMAT.md). BuildKit stores no Dockerfile
text and its cache keys are opaque digests, so what can be compared is each step's layer
digest, its size, its createdAt and its place in the tree. Which instruction or which file
changed cannot be told; where the chains part can.

Definitions (README, "diff"):
- A step is a layer built at a time: its content (the layer's uncompressed digest, diffID,
  when the manifest gives it, else the blob digest: the same step re-exported with another
  compression is one step) and its createdAt (BuildKit keeps it across re-exports and imports;
  a step that ran again gets a new one even when it wrote a byte-identical layer, such as the
  empty layer of a `RUN` that changes no file, and so is not the same step).
- A step's *place* is the chain of steps from its root to its parent: two steps are at the
  same place when their parents are the same steps all the way down. Its *position*
  is its depth in that chain, 1 for a root (for one chain: "step N of the stack"; base-image
  layers count). Siblings (steps with one parent) are ordered as `show` lists them: by
  createdAt, then by config index; `ordinal` is a step's 1-based rank among them.
- `shared`: B has the same step at the same place as A (every step below it is shared too).
- `changed`: the step where B diverges: its parent is shared (or it is a root) and B has a
  different step where A had one under that same parent. When several steps under one
  parent changed at once, B's and A's are paired in sibling order (the evidence cannot say
  which replaced which).
- `rebuilt`: a step above a changed or rebuilt step: its parent changed, so it ran again.
- `new`: B has a step where A has none (a step under a shared parent with no unpaired A step
  there, or anything above a new step).
- A divergence is one branch point: a shared parent (or the roots) under which B and A differ;
  it names A's and B's layers there (either may be missing: B added a step, or dropped one).
- Built before A: a step of B that A does not share, built (createdAt) before A's newest step.
  B's build did not run it: BuildKit re-used it, from its own cache or an older export (a
  toggle back to an older build, or a stage that a `mode=min` A built but did not export).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ocicache.base.errors import CorruptError, NotFoundError
from ocicache.core.exports import Export
from ocicache.core.refs import resolve
from ocicache.format.model import CacheConfig, Descriptor, IndexEntry

SHARED = "shared"
CHANGED = "changed"
REBUILT = "rebuilt"
NEW = "new"
STATUSES = (SHARED, CHANGED, REBUILT, NEW)

A_GIVEN = "given"
A_PREVIOUS_ON_TAG = "previous-on-tag"
A_PREVIOUS_IN_HISTORY = "previous-in-history"

EVIDENCE = ("layer digest", "size", "createdAt", "position")
LIMIT = (
    "cache keys are opaque digests and BuildKit stores no Dockerfile text, so this shows "
    "where the chains part, not which instruction or file changed"
)

SizeOf = Callable[[str], int | None]


# -- which export came before which ------------------------------------------------------------
def previous_on_tag(exports: Sequence[Export], i: int) -> int | None:
    """The export before `exports[i]` (newest first) on the same tag, or None.

    An export nothing points at any more has lost its tag: BuildKit replaced its index.json
    entry and kept no record of the name. So an older export is known to be on X's tag only
    when it carries one of X's tags, or when the directory has one tag in all (then every
    export was written to it). With several tags, an untagged export's tag is unknown.
    """
    return previous_exports(exports)[i]


def previous_exports(exports: Sequence[Export]) -> list[int | None]:
    """previous_on_tag for every export at once (one pass, oldest first)."""
    names = {t for e in exports for t in e.tags}
    if any(e.current and not e.tags for e in exports):
        names.add("")  # an index.json entry without a ref name (very old clients)
    one_tag = len(names) <= 1
    newest_with: dict[str, int] = {}  # tag -> the newest export seen so far carrying it
    out: list[int | None] = [None] * len(exports)
    for i in range(len(exports) - 1, -1, -1):
        tags = exports[i].tags
        older = [newest_with[t] for t in tags if t in newest_with]
        if older:
            out[i] = min(older)  # the newest of them (newest first: the smallest ~N)
        elif one_tag and i + 1 < len(exports) and (not tags or set(tags) == names):
            out[i] = i + 1
        for t in tags:
            newest_with[t] = i
    return out


def new_layers(exports: Sequence[Export]) -> list[int | None]:
    """Per export (newest first): how many of its distinct layers the export before it on the
    same tag did not have; None when there is none, or when either manifest is unreadable."""
    out: list[int | None] = []
    for e, j in zip(exports, previous_exports(exports), strict=True):
        if j is None or e.shape is None or exports[j].shape is None:
            out.append(None)
            continue
        before = {d.digest for d in exports[j].layers}
        out.append(sum(1 for d in e.layers if d.digest not in before))
    return out


# -- an export's tree of steps -----------------------------------------------------------------
class Places:
    """Numbers places: (the parent's number, content, createdAt) -> a small int. The trees
    compared share one Places, so equal numbers mean the same step on the same chain of
    parents."""

    def __init__(self) -> None:
        self._ids: dict[tuple[int, str, int | None], int] = {}

    def key(self, parent: int, content: str, created: int | None = None) -> int:
        k = (parent, content, created)
        v = self._ids.get(k)
        if v is None:
            v = self._ids[k] = len(self._ids)
        return v


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an export: a layer at its place in the cache config's tree."""

    key: int  # Places number: same key in two trees = same step on the same chain of parents
    index: int  # the cache config's layers[] index (the first, when the config repeats a step)
    layer: str
    parent: int  # the parent's number in Tree.steps, -1 for a root
    depth: int  # position: 1 for a root
    ordinal: int  # 1-based rank among its siblings
    size: int | None
    created_ns: int | None


@dataclass(frozen=True, slots=True)
class Tree:
    """An export's steps in stack order (parents first, depth first, siblings in order)."""

    steps: tuple[Step, ...]
    children: tuple[tuple[int, ...], ...]  # per step, in sibling order
    roots: tuple[int, ...]

    def kids(self, i: int) -> tuple[int, ...]:
        return self.roots if i < 0 else self.children[i]


def _blob_path(digest: str) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"blobs/{algorithm}/{encoded}"


def require_config(e: Export, role: str) -> CacheConfig:
    """The usable cache config of `e`, or CorruptError naming the file at fault."""
    hint = "`ocicache check DIR` says what is wrong; without a cache config the steps are unknown"
    if e.shape is None:
        why = e.problems[0] if e.problems else "unreadable"
        raise CorruptError(f"{role} ({e.digest}) cannot be used: {why}", file=_blob_path(e.digest), hint=hint)
    if e.config is None:
        raise CorruptError(
            f"{role} ({e.digest}): the manifest names no cache config", file=_blob_path(e.digest), hint=hint
        )
    config = e.cache_config
    if config is None:
        if e.config.digest in e.missing:
            why = "is missing"
        else:
            found = next(
                (p for p in e.problems if p.startswith("cache config unreadable: ")),
                "cache config unreadable: unknown",
            )
            why = "cannot be used: " + found[len("cache config unreadable: ") :]
        raise CorruptError(
            f"the cache config of {role} ({e.digest}) {why}", file=_blob_path(e.config.digest), hint=hint
        )
    if config.problems:
        raise CorruptError(
            f"the cache config of {role} ({e.digest}) is invalid: {config.problems[0]}",
            file=_blob_path(config.digest),
            hint=hint,
        )
    return config


def tree_of(
    config: CacheConfig,
    descriptors: Mapping[str, Descriptor],
    places: Places,
    size_of: SizeOf | None = None,
    diff_ids: Mapping[str, str] | None = None,
) -> Tree:
    """The steps of a (problem-free) cache config in stack order.

    A step the config lists twice at the same place is one step (its children are merged).
    Sizes come from the manifest's descriptors, else `size_of` (the blob on disk); times from
    the records' createdAt, else the descriptor's buildkit/createdat. A step's content is its
    layer's diffID: from `diff_ids` (blob -> diffID, from every export compared, so all trees
    name one blob alike), else the descriptor's, else the blob digest.
    """
    layers = config.layers
    n = len(layers)

    def content(blob: str) -> str:
        v = diff_ids.get(blob) if diff_ids is not None else None
        if v is None:
            d = descriptors.get(blob)
            v = d.diff_id if d else None
        return v or blob

    def created(i: int) -> int | None:
        t = config.layer_created.get(i)
        if t:
            return t
        d = descriptors.get(layers[i].blob)
        return d.created_ns if d else None

    order = {i: (created(i) or 0, i) for i in range(n)}
    kids: dict[int, list[int]] = {}
    for i, layer in enumerate(layers):
        kids.setdefault(layer.parent if 0 <= layer.parent < n else -1, []).append(i)
    # Pass 1: number every config index's place (parents first); merge repeats of one place.
    group: dict[int, int] = {}  # key -> group number
    group_indexes: list[list[int]] = []  # group -> config indexes (first one names the step)
    group_key: list[int] = []
    group_parent: list[int] = []
    seen = [False] * n
    todo = [(i, -1) for i in sorted(kids.get(-1, []), key=order.__getitem__, reverse=True)]
    while todo:
        i, parent_group = todo.pop()
        if seen[i]:
            continue  # a loop; the reader reports those and require_config refuses them
        seen[i] = True
        key = places.key(
            group_key[parent_group] if parent_group >= 0 else -1, content(layers[i].blob), created(i)
        )
        g = group.get(key)
        if g is None:
            g = group[key] = len(group_key)
            group_key.append(key)
            group_parent.append(parent_group)
            group_indexes.append([])
        group_indexes[g].append(i)
        for c in sorted(kids.get(i, []), key=order.__getitem__, reverse=True):
            todo.append((c, g))
    group_kids: list[list[int]] = [[] for _ in group_key]
    root_groups: list[int] = []
    for g, p in enumerate(group_parent):
        (group_kids[p] if p >= 0 else root_groups).append(g)

    def group_order(g: int) -> tuple[int, int]:
        return order[group_indexes[g][0]]

    # Pass 2: stack order over the merged groups.
    steps: list[Step] = []
    children: list[list[int]] = []
    roots: list[int] = []
    stack = [(g, -1, i + 1) for i, g in reversed(list(enumerate(sorted(root_groups, key=group_order))))]
    while stack:
        g, parent, ordinal = stack.pop()
        i = group_indexes[g][0]
        blob = layers[i].blob
        d = descriptors.get(blob)
        size = d.size if d else (size_of(blob) if size_of else None)
        me = len(steps)
        steps.append(
            Step(
                group_key[g],
                i,
                blob,
                parent,
                steps[parent].depth + 1 if parent >= 0 else 1,
                ordinal,
                size,
                created(i),
            )
        )
        children.append([])
        (children[parent] if parent >= 0 else roots).append(me)
        ordered = sorted(group_kids[g], key=group_order)
        for k in range(len(ordered) - 1, -1, -1):
            stack.append((ordered[k], me, k + 1))
    return Tree(tuple(steps), tuple(tuple(c) for c in children), tuple(roots))


# -- two trees side by side ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Divergence:
    """One branch point: under a shared parent (or at the roots), A's and B's steps differ."""

    parent: int  # B's step (shared with A) they sit on; -1: at the roots
    a: int  # A's step there, -1 when B added one where A had none
    b: int  # B's step there, -1 when B has none where A had one
    below_a: int  # A's steps built on `a` (none of them in B)
    below_b: int  # B's steps built on `b` (rebuilt when b changed, new when b is new)


@dataclass(frozen=True, slots=True)
class Row:
    """A line of the side-by-side listing: A's and B's step at one place (-1: none)."""

    a: int
    b: int
    level: int  # how many branch points lie below it (for indenting)


@dataclass(frozen=True, slots=True)
class Comparison:
    """B's steps against A's: a status and A's step at the same place for each."""

    a: Tree
    b: Tree
    status: tuple[str, ...]  # per B step
    counterpart: tuple[int, ...]  # per B step: A's step at the same place, -1 for none
    divergences: tuple[Divergence, ...]  # in B's stack order (A-only ones after B's there)
    only_a: tuple[int, ...]  # A's steps at no place B has a step, in A's stack order
    rows: tuple[Row, ...]  # both trees merged, in B's stack order, A-only steps after B's

    def count(self, status: str) -> int:
        return sum(1 for s in self.status if s == status)


def _below(tree: Tree) -> list[int]:
    """How many steps are built on each step (its descendants)."""
    below = [0] * len(tree.steps)
    for i in range(len(tree.steps) - 1, -1, -1):
        p = tree.steps[i].parent
        if p >= 0:
            below[p] += below[i] + 1
    return below


def compare(a: Tree, b: Tree) -> Comparison:
    """B against A (two trees numbered by one Places)."""
    a_at = {s.key: i for i, s in enumerate(a.steps)}
    b_keys = {s.key for s in b.steps}
    nb = len(b.steps)
    status = [NEW] * nb
    cp = [-1] * nb
    paired_a: set[int] = set()
    divergences: list[Divergence] = []
    below_a, below_b = _below(a), _below(b)

    def place(pb: int) -> None:
        """Status and counterpart of B's steps on pb (-1: the roots), from pb's own."""
        pa = cp[pb] if pb >= 0 else -1
        b_kids = b.kids(pb)
        a_kids = a.kids(pa) if (pb < 0 or pa >= 0) else ()
        parent_shared = pb < 0 or status[pb] == SHARED
        b_open = []
        for k in b_kids:
            hit = a_at.get(b.steps[k].key)
            if hit is not None:
                status[k], cp[k] = SHARED, hit
                paired_a.add(hit)
            else:
                b_open.append(k)
        a_open = [k for k in a_kids if a.steps[k].key not in b_keys]
        for n, k in enumerate(b_open):
            if n < len(a_open):
                cp[k] = a_open[n]
                paired_a.add(a_open[n])
            if parent_shared:
                status[k] = CHANGED if cp[k] >= 0 else NEW
            else:
                status[k] = NEW if status[pb] == NEW else REBUILT
            if parent_shared:
                divergences.append(Divergence(pb, cp[k], k, below_a[cp[k]] if cp[k] >= 0 else 0, below_b[k]))
        if parent_shared:
            for k in a_open[len(b_open) :]:
                divergences.append(Divergence(pb, k, -1, below_a[k], 0))

    place(-1)
    for i in range(nb):
        place(i)
    only_a = tuple(i for i in range(len(a.steps)) if i not in paired_a)
    rows = _rows(a, b, cp, paired_a)
    # List the divergences as the rows list their steps (B's stack order, A-only ones where
    # the side-by-side listing shows them).
    b_row = {r.b: n for n, r in enumerate(rows) if r.b >= 0}
    a_row = {r.a: n for n, r in enumerate(rows) if r.b < 0}
    divergences.sort(key=lambda d: b_row[d.b] if d.b >= 0 else a_row[d.a])
    return Comparison(a, b, tuple(status), tuple(cp), tuple(divergences), only_a, tuple(rows))


def _rows(a: Tree, b: Tree, cp: list[int], paired_a: set[int]) -> list[Row]:
    """Both trees merged into one listing (depth first, iteratively)."""

    def merged_kids(pa: int, pb: int) -> list[tuple[int, int]]:
        out = [(cp[k], k) for k in b.kids(pb)] if (pb >= 0 or pa < 0) else []
        if pa >= 0 or pb < 0:
            out.extend((k, -1) for k in a.kids(pa) if k not in paired_a)
        return out

    rows: list[Row] = []
    roots = merged_kids(-1, -1)
    stack = [(ka, kb, 0) for ka, kb in reversed(roots)]
    while stack:
        ka, kb, level = stack.pop()
        rows.append(Row(ka, kb, level))
        kids = merged_kids(ka, kb)
        step = level + (1 if len(kids) > 1 else 0)
        stack.extend((x, y, step) for x, y in reversed(kids))
    return rows


# -- the whole answer --------------------------------------------------------------------------
@dataclass(frozen=True)
class Diff:
    """Two exports compared: which they are, how A was chosen, the steps and the bytes."""

    a: Export
    b: Export
    a_position: int  # N in ~N
    b_position: int
    a_from: str  # A_GIVEN, A_PREVIOUS_ON_TAG or A_PREVIOUS_IN_HISTORY
    comparison: Comparison
    also_in: tuple[int, ...]  # per B step: the newest other export (~N) with this step, or -1
    built_before_a: tuple[bool, ...]  # per B step: not shared, and built before A's newest step
    exports: tuple[str, ...]  # every export's digest, newest first (what ~N names)
    shared_bytes: int  # distinct layer blobs in both
    only_a_bytes: int
    only_b_bytes: int  # the layers exporting B added over A

    @property
    def same_export(self) -> bool:
        return self.a.digest == self.b.digest

    @property
    def common_steps(self) -> int:
        return self.comparison.count(SHARED)


def layer_sizes(e: Export, size_of: SizeOf | None = None) -> dict[str, int]:
    """Every distinct layer blob of `e` (the manifest's and the cache config's) and its size
    (the descriptor's, else the blob on disk, else 0)."""
    out = {d.digest: d.size for d in e.layers}
    if e.cache_config is not None:
        for layer in e.cache_config.layers:
            if layer.blob not in out:
                out[layer.blob] = (size_of(layer.blob) if size_of else None) or 0
    return out


def diff_exports(
    exports: Sequence[Export],
    a_ref: str | None,
    b_ref: str | None,
    size_of: SizeOf | None = None,
    foreign: Sequence[IndexEntry] = (),
) -> Diff:
    """Resolve A and B (REFs as in `show`) and compare them.

    B defaults to the newest export; A to the export before B on the same tag, else the one
    before it in history. Raises NotFoundError when a REF names nothing (or B is the oldest
    and no A is given), CorruptError when a manifest or cache config cannot be used.
    """
    if not exports:
        raise NotFoundError("no exports in this directory")
    b = resolve(exports, b_ref, foreign) if b_ref is not None else exports[0]
    bi = exports.index(b)
    if a_ref is not None:
        a, a_from = resolve(exports, a_ref, foreign), A_GIVEN
    else:
        j = previous_on_tag(exports, bi)
        a_from = A_PREVIOUS_ON_TAG
        if j is None:
            j, a_from = bi + 1, A_PREVIOUS_IN_HISTORY
        if j >= len(exports):
            what = "the only export in this directory" if len(exports) == 1 else "the oldest export"
            raise NotFoundError(
                f"{b.digest} is {what}: nothing before it to compare it with",
                hint="give A and B: `ocicache diff DIR A B`",
            )
        a = exports[j]
    places = Places()
    configs = [require_config(e, role) for e, role in ((a, "A"), (b, "B"))]
    diff_ids = _diff_ids((a, b))
    trees = [
        tree_of(config, {d.digest: d for d in e.layers}, places, size_of, diff_ids)
        for e, config in zip((a, b), configs, strict=True)
    ]
    comparison = compare(trees[0], trees[1])
    sa, sb = layer_sizes(a, size_of), layer_sizes(b, size_of)
    return Diff(
        a=a,
        b=b,
        a_position=exports.index(a),
        b_position=bi,
        a_from=a_from,
        comparison=comparison,
        also_in=_also_in(exports[bi + 1 :], bi + 1, a.digest, comparison, places, size_of, diff_ids),
        built_before_a=built_before(comparison),
        exports=tuple(e.digest for e in exports),
        shared_bytes=sum(s for d, s in sb.items() if d in sa),
        only_a_bytes=sum(s for d, s in sa.items() if d not in sb),
        only_b_bytes=sum(s for d, s in sb.items() if d not in sa),
    )


def _diff_ids(exports: Sequence[Export]) -> dict[str, str]:
    """blob -> diffID from the layer descriptors of `exports` (one blob, one diffID)."""
    out: dict[str, str] = {}
    for e in exports:
        for d in e.layers:
            if d.diff_id and d.digest not in out:
                out[d.digest] = d.diff_id
    return out


def built_before(c: Comparison) -> tuple[bool, ...]:
    """Per B step: A does not share it and it was built (createdAt) before A's newest step.

    B's build ran after A's, and BuildKit gives a step the time it was first built and keeps
    it, so B's build did not run such a step: BuildKit re-used it (from its own cache, or an
    older export; not from A, which does not hold it there). Unknown times prove nothing.
    """
    times = [s.created_ns for s in c.a.steps if s.created_ns]
    if not times:
        return (False,) * len(c.b.steps)
    newest_a = max(times)
    return tuple(
        st != SHARED and s.created_ns is not None and 0 < s.created_ns < newest_a
        for s, st in zip(c.b.steps, c.status, strict=True)
    )


def _also_in(
    older: Sequence[Export],
    first: int,
    skip: str,
    c: Comparison,
    places: Places,
    size_of: SizeOf | None,
    diff_ids: dict[str, str] | None = None,
) -> tuple[int, ...]:
    """Per B step A does not share: the newest export older than B (A aside, `first` being
    the ~N of older[0]) that holds that same step at the same place, else -1. BuildKit may
    have re-used the step from there (or from its own cache: that leaves no trace here)."""
    wanted = {s.key for s, st in zip(c.b.steps, c.status, strict=True) if st != SHARED}
    found: dict[int, int] = {}
    ids = dict(diff_ids or {})  # A's and B's names for a blob stay (their keys are made)
    for n, e in enumerate(older, start=first):
        if not wanted:
            break
        if e.digest == skip or e.cache_config is None or e.cache_config.problems:
            continue
        for d in e.layers:
            if d.diff_id:
                ids.setdefault(d.digest, d.diff_id)
        tree = tree_of(e.cache_config, {d.digest: d for d in e.layers}, places, size_of, ids)
        for s in tree.steps:
            if s.key in wanted:
                found[s.key] = n
                wanted.discard(s.key)
    return tuple(found.get(s.key, -1) for s in c.b.steps)
