"""`ocicache diff` against what real BuildKit v0.32.2 ran: every step its plain log shows.

One daemon builds a series of Dockerfiles per case into one cache dir per case, and after each
build `ocicache diff --json DIR A B` (A: the previous build's export, B: this one's, both the
digests the log printed) is held against the log: a step the log shows `CACHED` is `shared`,
or `alsoIn` an older export, or `builtBeforeA` (re-used from BuildKit's own cache: README,
"diff"); an executed one (`DONE`) is `changed` or `new` on a CACHED parent, `rebuilt` (or new)
on an executed one, and neither alsoIn nor builtBeforeA.

Mapping log steps to diff's steps exactly, not by counting. BuildKit stores no instruction
text, so every instruction here creates a file of its own name (its marker), and a step of B
is the instruction whose marker its layer's tar holds (a zstd layer is read through a gzip
blob with the same diffID) and whose previous instruction in the stage chain is the step's
parent. Every step the log shows must map to a step of B, and every step of B to a step in
the log, except the extra root a `COPY --link` layer also gets in mode=max. mode=min exports
the final stage's chain, and (seen here, not in FORMAT.md) other stages' steps that hit the
imported cache: d3 below re-exports the builder steps d2's mode=max export gave it, but not
the builder steps d3 ran. Instructions with one text in several stages (the
busybox prefix) are one vertex in BuildKit's log and one step in the cache config.

Cases: (a) one stage, a middle COPY's input changed, then a toggle back to the first build;
(b) two builder stages copied into a final stage (mode=max), one builder's input changed, then
(c) a change in the final stage, then a builder change that leaves its output the same (the
COPY --from stays CACHED); (d) mode=min then mode=max then mode=min with a builder change;
(e) `RUN true` -> `RUN true && true` (BuildKit runs it and writes the same empty layer), a
`COPY --link`, then a re-export with compression=zstd,force-compression=true (all CACHED).
Each case's texts carry its own name, so the daemon's cache cannot carry steps across cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from buildkit_helpers import Daemon, daemon, needs_buildkit
from clirun import run_inprocess

from ocicache import api

pytestmark = [needs_buildkit, pytest.mark.slow]  # real BuildKit: seconds a test

STEP_LINE = re.compile(r"^#(\d+) \[(?:(\S+) )?(\d+)/(\d+)\] (.*)$", re.M)
STATE_LINE = re.compile(r"^#(\d+) (CACHED|DONE|ERROR|CANCELED)\b", re.M)
MANIFEST_LINE = re.compile(r"writing cache (?:image )?manifest (sha256:[0-9a-f]{64})")
EPOCH = 1_767_225_600
BUSYBOX = ("COPY busybox /bin/busybox", "bin/busybox")
EMPTY = ""  # the marker of a step that changes no file: its layer is the empty tar
INSTALL = ('RUN ["/bin/busybox","--install","-s","/bin"]', "bin/sh")


@dataclass(frozen=True)
class Stage:
    name: str
    steps: tuple[tuple[str, str], ...]  # (instruction, the path it creates)
    base: str | None = None  # None: FROM scratch


def dockerfile(stages: list[Stage]) -> str:
    out = []
    for s in stages:
        out.append(f"FROM {s.base or 'scratch'} AS {s.name}")
        out.extend(text for text, _ in s.steps)
    return "\n".join(out) + "\n"


def chain_of(stages: list[Stage], final: str) -> list[str]:
    """The instructions of `final`'s chain: its base stages' and its own, in order."""
    by = {s.name: s for s in stages}
    out: list[str] = []
    s: Stage | None = by[final]
    while s is not None:
        out[:0] = [text for text, _ in s.steps]
        s = by[s.base] if s.base else None
    return out


def previous(stages: list[Stage]) -> dict[str, str | None]:
    """Instruction -> the instruction before it in its stage chain (None: on scratch)."""
    out: dict[str, str | None] = {}
    for s in stages:
        chain = chain_of(stages, s.name)
        for i, text in enumerate(chain):
            before = chain[i - 1] if i else None
            assert out.get(text, before) == before, f"{text!r}: two different parents"
            out[text] = before
    return out


def _mtime(data: bytes) -> int:
    """Same content, same mtime (reproducible COPY layers); new content, another mtime (or
    BuildKit's context sync would keep what it saw before)."""
    return EPOCH + int(hashlib.sha256(data).hexdigest()[:6], 16)


def write_context(root: Path, name: str, stages: list[Stage], files: dict[str, str]) -> Path:
    ctx = root / name
    ctx.mkdir(parents=True)
    shutil.copy("/bin/busybox", ctx / "busybox")
    os.utime(ctx / "busybox", (EPOCH, EPOCH))
    for rel, text in {**files, "Dockerfile": dockerfile(stages)}.items():
        p = ctx / rel
        p.write_text(text)
        os.utime(p, (_mtime(text.encode()), _mtime(text.encode())))
    return ctx


# -- one build and what its log says -------------------------------------------------------------
@dataclass
class Build:
    label: str
    stages: list[Stage]
    final: str
    mode: str
    manifest: str
    state: dict[str, str]  # instruction -> CACHED or DONE
    stage_of: dict[str, str] = field(default_factory=dict)  # instruction -> stage the log names


def parse_log(log: str) -> tuple[dict[str, str], dict[str, str]]:
    """Instruction -> its vertex's final state, and -> the stage the log names for it.
    `[internal] load ...` and the cache export lines are not steps."""
    text: dict[str, tuple[str, str]] = {}
    for m in STEP_LINE.finditer(log):
        text.setdefault(m[1], (m[5], m[2] or ""))
    states = {m[1]: m[2] for m in STATE_LINE.finditer(log)}
    state, stage = {}, {}
    for vertex, (instr, st) in text.items():
        assert instr not in state, f"{instr!r} is two vertices"
        state[instr] = states[vertex]
        stage[instr] = st
    return state, stage


@dataclass
class Case:
    bk: Daemon
    root: Path
    builds: list[Build] = field(default_factory=list)

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def build(
        self,
        label: str,
        stages: list[Stage],
        files: dict[str, str],
        mode: str = "max",
        final: str | None = None,
        extra: str = "",
    ) -> Build:
        ctx = write_context(self.root, label, stages, files)
        r = self.bk.build(
            ctx,
            "--export-cache",
            f"type=local,dest={self.cache},mode={mode}{extra}",
            "--import-cache",
            f"type=local,src={self.cache}",
        )
        assert r.returncode == 0, r.stderr[-3000:]
        state, stage_of = parse_log(r.stderr)
        assert set(state) == {t for s in stages for t, _ in s.steps}, state
        assert set(state.values()) <= {"CACHED", "DONE"}, state
        [manifest] = set(MANIFEST_LINE.findall(r.stderr))
        b = Build(label, stages, final or stages[-1].name, mode, manifest, state, stage_of)
        self.builds.append(b)
        return b


# -- a layer's files -------------------------------------------------------------------------------
def _open_tar(path: Path) -> set[str] | None:
    try:
        with tarfile.open(path) as t:  # gzip or plain tar
            return {m.name.removeprefix("./").rstrip("/") for m in t.getmembers()}
    except tarfile.ReadError:
        return None  # zstd


def layer_files(cache: Path, layer: str) -> set[str]:
    names = _open_tar(cache / "blobs" / "sha256" / layer[7:])
    if names is not None:
        return names
    exports = api.history(cache).exports
    diff_id = next(d.diff_id for e in exports for d in e.layers if d.digest == layer)
    for e in exports:
        for d in e.layers:
            if d.diff_id == diff_id and d.digest != layer:
                names = _open_tar(cache / "blobs" / "sha256" / d.digest[7:])
                if names is not None:
                    return names
    raise AssertionError(f"no readable blob with the content of {layer}")


def holds(files: set[str], marker: str) -> bool:
    return marker in files if marker != EMPTY else not files


# -- the check -------------------------------------------------------------------------------------
EXECUTED = {"changed", "rebuilt", "new"}


def diff_json(cache: Path, a: str, b: str) -> dict[str, Any]:
    r = run_inprocess("diff", str(cache), a, b, "--json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    assert (doc["a"], doc["b"]) == (a, b)
    return doc


def check(case: Case) -> dict[str, dict[str, Any]]:
    """diff(previous build's export, this one's) against this build's log, step by step.
    Returns instruction -> its step of B (the chain step, not a --link layer's own root)."""
    prev, cur = case.builds[-2], case.builds[-1]
    doc = diff_json(case.cache, prev.manifest, cur.manifest)
    steps = doc["steps"]
    marker = {text: m for s in cur.stages for text, m in s.steps}
    before = previous(cur.stages)
    by_index = {s["index"]: s for s in steps}
    files = {s["index"]: layer_files(case.cache, s["layer"]) for s in steps}
    # Parents first (stack order), each step is the instruction whose marker its layer holds
    # and whose previous instruction is its parent's.
    text_of: dict[int, str | None] = {}
    for s in steps:
        parent_text = text_of.get(s["parentIndex"]) if s["parentIndex"] >= 0 else None
        hits = [t for t, m in marker.items() if holds(files[s["index"]], m) and before[t] == parent_text]
        assert len(hits) <= 1, hits
        text_of[s["index"]] = hits[0] if hits else None
    mapped: dict[str, dict[str, Any]] = {}
    for s in steps:
        t = text_of[s["index"]]
        if t is None:
            link = [
                x
                for x, m in marker.items()
                if "--link" in x and m in files[s["index"]] and s["parentIndex"] < 0
            ]
            assert link, f"{cur.label}: B's step {s['layer']} is no step of the log"
            continue
        assert t not in mapped, f"{t!r} is two steps of B"
        mapped[t] = s
    if cur.mode == "max":
        assert set(mapped) == set(cur.state), (cur.label, set(cur.state) ^ set(mapped))
    else:  # the final chain, and other stages' steps only where they hit the imported cache
        final = set(chain_of(cur.stages, cur.final))
        assert final <= set(mapped), (cur.label, final - set(mapped))
        assert {cur.state[t] for t in set(mapped) - final} <= {"CACHED"}, cur.label
    for t, s in mapped.items():
        state = cur.state[t]
        parent = by_index.get(s["parentIndex"])
        parent_state = cur.state[before[t]] if before[t] is not None else None
        where = f"{cur.label}: {t!r} {state}, diff says {s['status']}"
        if state == "CACHED":
            assert s["status"] == "shared" or s["alsoIn"] or s["builtBeforeA"], where
        else:
            assert s["status"] in EXECUTED and not s["alsoIn"] and not s["builtBeforeA"], where
            if parent_state == "DONE":
                assert s["status"] in ("rebuilt", "new"), where
                assert parent is not None and parent["status"] in EXECUTED, where
            else:
                assert s["status"] in ("changed", "new"), where
        if s["status"] == "shared":
            assert state == "CACHED", where
    return mapped


def statuses(mapped: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {t: s["status"] for t, s in mapped.items()}


# -- the cases ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with daemon(tmp_path_factory.mktemp("bk")) as d:
        yield d


def _case(bk: Daemon, tmp_path: Path) -> Case:
    return Case(bk, tmp_path)


def _run(x: str, out: str) -> tuple[str, str]:
    return f"RUN echo {x} > /{out}", out


def test_single_stage_middle_step_then_toggle_back(bk: Daemon, tmp_path: Path) -> None:
    def stages() -> list[Stage]:
        return [
            Stage(
                "app",
                (
                    BUSYBOX,
                    INSTALL,
                    _run("a3", "a-3"),
                    ("COPY in.txt /a-4", "a-4"),
                    ("RUN cat /a-4 /a-3 > /a-5", "a-5"),
                    ("RUN ls / > /a-6", "a-6"),
                ),
            )
        ]

    c = _case(bk, tmp_path)
    c.build("a1", stages(), {"in.txt": "one\n"}, mode="min")
    c.build("a2", stages(), {"in.txt": "two!\n"}, mode="min")
    got = statuses(check(c))
    assert list(got.values()) == ["shared"] * 3 + ["changed", "rebuilt", "rebuilt"]
    # Back to a1's inputs: every step CACHED, and BuildKit re-points the tag at a1's manifest.
    back = c.build("a3", stages(), {"in.txt": "one\n"}, mode="min")
    assert set(back.state.values()) == {"CACHED"} and back.manifest == c.builds[0].manifest
    mapped = check(c)
    assert [s["builtBeforeA"] for s in mapped.values()] == [False] * 3 + [True] * 3


def _multi(case: str, b1: str = "", fin: str = "") -> list[Stage]:
    def builder(n: str, x: str) -> Stage:
        return Stage(
            n,
            (
                BUSYBOX,
                INSTALL,
                _run(f"{case}{n}{x}", f"{case}-{n}-3"),
                (f"COPY in-{n}.txt /{case}-{n}-4", f"{case}-{n}-4"),
                (f"RUN cat /{case}-{n}-4 /{case}-{n}-3 > /{case}-{n}-5", f"{case}-{n}-5"),
            ),
        )

    return [
        builder("b1", b1),
        builder("b2", ""),
        Stage(
            "final",
            (
                BUSYBOX,
                INSTALL,
                _run(f"{case}final{fin}", f"{case}-f-3"),
                (f"COPY --from=b1 /{case}-b1-5 /{case}-f-4", f"{case}-f-4"),
                (f"COPY --from=b2 /{case}-b2-5 /{case}-f-5", f"{case}-f-5"),
                (f"RUN cat /{case}-f-4 /{case}-f-5 > /{case}-f-6", f"{case}-f-6"),
            ),
        ),
    ]


def test_multi_stage_mode_max(bk: Daemon, tmp_path: Path) -> None:
    c = _case(bk, tmp_path)
    files = {"in-b1.txt": "one\n", "in-b2.txt": "two\n"}
    c.build("b1", _multi("m"), files)
    # (b) one builder's input changed: its last two steps, and the final stage from its
    # COPY --from on, ran; the other builder and the final stage's first steps were CACHED.
    run = c.build("b2", _multi("m"), {**files, "in-b1.txt": "ONE!\n"})
    got = statuses(check(c))
    assert sorted(t for t, st in run.state.items() if st == "DONE") == sorted(
        t for t, st in got.items() if st != "shared"
    )
    assert [got[t] for t, _ in _multi("m")[0].steps[3:]] == ["changed", "rebuilt"]
    assert [got[t] for t, _ in _multi("m")[2].steps[3:]] == ["changed", "rebuilt", "rebuilt"]
    # (c) the final stage changed: only it ran.
    c.build("c1", _multi("m", fin="X"), {**files, "in-b1.txt": "ONE!\n"})
    got = statuses(check(c))
    assert [got[t] for t, _ in _multi("m", fin="X")[2].steps[2:]] == [
        "changed",
        "rebuilt",
        "rebuilt",
        "rebuilt",
    ]
    assert sum(st == "shared" for st in got.values()) == 8
    # A builder's RUN changed, its output did not: COPY --from stays CACHED (BuildKit keys it
    # on the files' content), so the final stage is the one build b2 exported (alsoIn).
    again = c.build("c2", _multi("m", b1=" "), {**files, "in-b1.txt": "ONE!\n"})
    mapped = check(c)
    fin = [t for t, _ in _multi("m")[2].steps]
    assert all(again.state[t] == "CACHED" for t in fin)
    assert {mapped[t]["alsoIn"] for t in fin[2:]} == {c.builds[1].manifest}


def test_mode_min_then_max_then_min(bk: Daemon, tmp_path: Path) -> None:
    c = _case(bk, tmp_path)
    files = {"in-b1.txt": "one\n", "in-b2.txt": "two\n"}
    c.build("d1", _multi("n"), files, mode="min")
    # mode=max of the same build: everything CACHED; the builder stages, which the mode=min
    # export left out, are new to diff, and were built before A's newest step.
    c.build("d2", _multi("n"), files, mode="max")
    mapped = check(c)
    builders = {t for s in _multi("n")[:2] for t, _ in s.steps} - {BUSYBOX[0], INSTALL[0]}
    assert {(mapped[t]["status"], mapped[t]["builtBeforeA"]) for t in builders} == {("new", True)}
    assert {mapped[t]["status"] for t in set(mapped) - builders} == {"shared"}
    # mode=min with a builder change: the builder's steps ran but only the final chain is
    # exported; of it, COPY --from=b1 changed and what follows was rebuilt.
    run = c.build("d3", _multi("n"), {**files, "in-b1.txt": "ONE!\n"}, mode="min")
    got = statuses(check(c))
    assert [got[t] for t in chain_of(_multi("n"), "final")] == ["shared"] * 3 + [
        "changed",
        "rebuilt",
        "rebuilt",
    ]
    # ... and the builder steps it took from the imported cache, not those it ran.
    extra = set(got) - set(chain_of(_multi("n"), "final"))
    assert extra == {t for t in builders if run.state[t] == "CACHED"} and extra
    assert {got[t] for t in extra} == {"shared"}


def test_the_same_layer_built_again_link_and_recompression(bk: Daemon, tmp_path: Path) -> None:
    def stages(noop: str) -> list[Stage]:
        return [
            Stage(
                "e",
                (
                    BUSYBOX,
                    INSTALL,
                    _run("e3", "e-3"),
                    (noop, EMPTY),
                    _run("e5", "e-5"),
                    ("COPY --link in.txt /e-6", "e-6"),
                    _run("e7", "e-7"),
                ),
            )
        ]

    c = _case(bk, tmp_path)
    files = {"in.txt": "linked\n"}
    c.build("e1", stages("RUN true"), files)
    # BuildKit runs the new command and writes the same empty layer at the same place.
    c.build("e2", stages("RUN true && true"), files)
    doc = diff_json(c.cache, c.builds[0].manifest, c.builds[1].manifest)
    [div] = doc["divergences"]
    assert div["a"] == div["b"] and div["position"] == 4 and div["kind"] == "changed"
    got = statuses(check(c))  # the empty layer holds no marker: its step maps to no text
    assert [got[t] for t, _ in stages("")[0].steps[4:]] == ["rebuilt"] * 3
    # Re-exported as zstd: new blobs for every step, every step CACHED: all shared.
    run = c.build("e3", stages("RUN true && true"), files, extra=",compression=zstd,force-compression=true")
    assert set(run.state.values()) == {"CACHED"}
    doc = diff_json(c.cache, c.builds[1].manifest, run.manifest)
    assert {s["status"] for s in doc["steps"]} == {"shared"} and doc["sharedBytes"] == 0
    check(c)
