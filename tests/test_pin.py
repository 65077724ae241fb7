"""`ocicache pin` / `unpin`: pins survive gc and BuildKit's reset=true, every other index.json
entry stays byte-identical, and a crash during the rewrite never leaves a torn index.json."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pin_helpers import CASES, copy_case, run

from ocicache import api
from ocicache.base.errors import RefusedError, UsageError
from ocicache.core.pins import validate_name
from ocicache.format.indexdoc import split_index
from ocicache.format.model import ANN_PINNED, ANN_REF_NAME
from ocicache.format.schema import validate
from ocicache.store import indexwrite

NOW = datetime(2026, 11, 27, 21, 0, 0, tzinfo=UTC)
WITH_INDEX = [c for c in CASES if c != "k-interrupted-export"] + ["k-interrupted-export"]


def _entries(d: Path) -> list[str]:
    return [e.text for e in split_index((d / "index.json").read_bytes())[1]]


def _tops(d: Path) -> list[tuple[str, str, str]]:
    members = split_index((d / "index.json").read_bytes())[0]
    return [(k, rk, rv) for k, rk, rv in members if k != "manifests"]


def reset_true(d: Path) -> set[str]:
    """What BuildKit's `reset=true` does (FORMAT.md): delete every blob that no index.json entry
    reaches (manifest, its cache config and layers). Returns the deleted digests."""
    index = json.loads((d / "index.json").read_bytes())
    keep: set[str] = set()
    for entry in index["manifests"]:
        keep.add(entry["digest"])
        path = d / "blobs" / "sha256" / entry["digest"][7:]
        if not path.exists():
            continue
        doc = json.loads(path.read_bytes())
        children = [doc["config"], *doc["layers"]] if "config" in doc else doc["manifests"]
        keep.update(c["digest"] for c in children)
    gone = set()
    for blob in (d / "blobs" / "sha256").iterdir():
        if "sha256:" + blob.name not in keep:
            blob.unlink()
            gone.add("sha256:" + blob.name)
    return gone


# -- pin / unpin keep every other entry -------------------------------------------------------
@pytest.mark.parametrize("case", WITH_INDEX)
def test_pin_unpin_leave_other_entries_untouched(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = copy_case(case, tmp_path / case)
    original = (d / "index.json").read_bytes()
    before, tops = _entries(d), _tops(d)
    oldest = api.history(d).exports[-1]
    code, out, err = run(capsys, "pin", str(d), oldest.digest, "keep-1")
    assert code == 0, err
    assert out == f"type=local,src={d},tag=keep-1\n"
    after = _entries(d)
    assert after[:-1] == before and _tops(d) == tops  # byte-identical
    added = json.loads(after[-1])
    assert added["digest"] == oldest.digest and added["size"] == oldest.manifest_size
    assert added["mediaType"] == oldest.media_type
    assert added["annotations"][ANN_REF_NAME] == "keep-1"
    assert ANN_PINNED in added["annotations"]
    raw = (d / "index.json").read_bytes()
    assert b"\n" not in raw.rstrip(b"\n") and b": " not in raw  # compact, like BuildKit
    # history shows the pin; ref and explain resolve it.
    code, out, _ = run(capsys, "history", str(d))
    assert "keep-1 (pin)" in out
    assert run(capsys, "ref", str(d), "keep-1")[1] == (f"type=local,src={d},digest={oldest.digest}\n")
    code, out, _ = run(capsys, "ref", "--explain", f"type=local,src={d},tag=keep-1")
    assert code == 0, out
    code, out, _ = run(capsys, "unpin", str(d), "keep-1")
    assert (code, out) == (0, f"unpinned keep-1 {oldest.digest}\n")
    assert (d / "index.json").read_bytes() == original
    assert sorted(os.listdir(d)) == sorted(os.listdir(tmp_path / case))  # no temp, no lock


def test_pin_json_and_repin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("a-history-min", tmp_path / "a")
    exports = api.history(d).exports
    code, out, _ = run(capsys, "pin", str(d), "~3", "release/1.0", "--json")
    doc = json.loads(out)
    assert validate(doc, "pin") == [] and doc["changed"] and doc["replaced"] == []
    # Same name, same export: nothing written. Same name, another export: replaced, still last.
    mtime = (d / "index.json").stat().st_mtime_ns
    code, _, err = run(capsys, "pin", str(d), "~3", "release/1.0")
    assert code == 0 and "nothing changed" in err
    assert (d / "index.json").stat().st_mtime_ns == mtime
    # Another export: refused (the first would lose its protection) unless --force, which
    # says what moved.
    before = (d / "index.json").read_bytes()
    code, out, err = run(capsys, "pin", str(d), "~2", "release/1.0", "--json")
    assert code == 6 and out == "" and "already pins " + exports[3].digest in err
    assert "--force" in err and (d / "index.json").read_bytes() == before
    code, out, err = run(capsys, "pin", str(d), "~2", "release/1.0", "--json", "--force")
    doc = json.loads(out)
    assert code == 0 and doc["replaced"] == [exports[3].digest]
    assert f"moved release/1.0 from {exports[3].digest} to {exports[2].digest}" in err
    entries = [json.loads(t) for t in _entries(d)]
    assert [e["digest"] for e in entries if e["annotations"].get(ANN_REF_NAME) == "release/1.0"] == [
        exports[2].digest
    ]
    code, out, _ = run(capsys, "unpin", str(d), "release/1.0", "--json")
    doc = json.loads(out)
    assert validate(doc, "unpin") == []
    assert doc["removed"] == [{"digest": exports[2].digest, "pin": True}]


def test_buildkit_entries_need_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    original = (d / "index.json").read_bytes()
    code, _, err = run(capsys, "pin", str(d), "~3", "alpha")
    assert code == 6 and "BuildKit wrote" in err
    code, _, err = run(capsys, "unpin", str(d), "beta")
    assert code == 6 and "--force" in err
    code, _, err = run(capsys, "unpin", str(d), "nosuch")
    assert code == 5
    assert (d / "index.json").read_bytes() == original
    # --force: the pin replaces BuildKit's alpha entry; unpin --force removes a BuildKit tag.
    assert run(capsys, "pin", str(d), "~3", "alpha", "--force")[0] == 0
    names = [json.loads(t)["annotations"][ANN_REF_NAME] for t in _entries(d)]
    assert names == ["beta", "latest", "alpha"]
    code, out, _ = run(capsys, "unpin", str(d), "beta", "--force")
    assert code == 0 and out.startswith("removed tag beta ")


@pytest.mark.parametrize("name", ["a", "v1.2.3", "team/base", "a--b", "a_b:c@d+e", "A/B/C9"])
def test_ref_name_grammar_accepts(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    "name", ["", "-a", "a-", "a//b", "/a", "a/", "a b", "a---b", "a..b", "é", "a\n", "a,b", "a=b"]
)
def test_ref_name_grammar_rejects(name: str) -> None:
    with pytest.raises(UsageError):
        validate_name(name)


def test_refuses_what_ref_refuses(tmp_path: Path) -> None:
    d = copy_case("a-history-min", tmp_path / "a")
    oldest = api.history(d).exports[-1]
    assert oldest.config is not None
    (d / "blobs" / "sha256" / oldest.config.digest[7:]).unlink()
    before = (d / "index.json").read_bytes()
    with pytest.raises(RefusedError, match="cache config"):
        api.pin(d, oldest.digest, "old", now=NOW)
    assert (d / "index.json").read_bytes() == before


def test_torn_index_is_never_rewritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    torn = (d / "index.json").read_bytes()[:200]
    (d / "index.json").write_bytes(torn)
    code, _, _ = run(capsys, "pin", str(d), "sha256:43435069dfdb", "x")
    assert code == 4 and (d / "index.json").read_bytes() == torn


# -- pins survive reset=true and gc --------------------------------------------------------------
def test_pin_survives_buildkit_reset(tmp_path: Path) -> None:
    d = copy_case("a-history-min", tmp_path / "a")
    exports = api.history(d).exports
    api.pin(d, exports[2].digest, "keep", now=NOW)
    gone = reset_true(d)
    after = {e.digest: e for e in api.history(d).exports}
    assert exports[2].digest in after and after[exports[2].digest].complete
    assert after[exports[2].digest].pins == ("keep",)
    assert exports[0].digest in after and after[exports[0].digest].complete
    # The unpinned older exports are what reset deleted.
    assert exports[1].digest in gone and exports[3].digest in gone
    assert set(after) == {exports[0].digest, exports[2].digest}


def test_reset_simulation_matches_buildkit(tmp_path: Path) -> None:
    """Our reset_true keeps exactly what BuildKit's own reset=true kept in j-reset."""
    from pin_helpers import groundtruth

    d = copy_case("j-reset", tmp_path / "j")
    assert reset_true(d) == set()
    final = groundtruth("j-reset")["final"]
    assert {b["digest"] for b in final["blobs_on_disk"]} == set(final["reachable_from_index"])


def test_pin_survives_gc(tmp_path: Path) -> None:
    from ocicache.core.gc_plan import Policy

    d = copy_case("a-history-min", tmp_path / "a")
    exports = api.history(d).exports
    oldest = exports[3]
    api.pin(d, oldest.digest, "keep", now=NOW)
    result = api.gc(d, Policy(keep_last=0, grace_ns=0))
    assert result.deleted, "gc deleted nothing: the test would prove nothing"
    after = {e.digest: e for e in api.history(d).exports}
    # the pinned export and the current one survive complete; the two others are gone
    assert set(after) == {oldest.digest, exports[0].digest}
    assert after[oldest.digest].complete and after[oldest.digest].pins == ("keep",)
    assert api.gc(d, Policy(keep_last=0, grace_ns=0)).deleted == ()


# -- crash safety ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fail_at", ["write", "fsync", "rename", "transform"])
def test_failure_mid_rewrite_leaves_old_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    before = (d / "index.json").read_bytes()
    real_write = os.write

    def boom(*args: Any, **kwargs: Any) -> Any:
        if fail_at == "write":  # a short write, then the disk is full
            real_write(args[0], bytes(args[1])[:10])
        raise OSError(28, "injected failure")

    if fail_at == "transform":

        def bad_name(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected failure")

        monkeypatch.setattr("ocicache.core.pins.pin_entry", bad_name)
    else:
        monkeypatch.setattr(indexwrite.os, fail_at, boom)
    # an OS failure is refused cleanly (exit 6), naming index.json; the transform's own error
    # propagates as it is
    with pytest.raises((RefusedError, RuntimeError)) as info:
        api.pin(d, "~3", "keep", now=NOW)
    if fail_at != "transform":
        assert isinstance(info.value, RefusedError) and "index.json" in str(info.value)
    monkeypatch.undo()
    assert (d / "index.json").read_bytes() == before
    assert sorted(os.listdir(d)) == ["blobs", "index.json", "oci-layout"]


def test_stale_temp_is_removed_by_next_rewrite(tmp_path: Path) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    (d / (indexwrite.TEMP_PREFIX + "deadbeef")).write_bytes(b'{"schemaVer')
    api.pin(d, "~3", "keep", now=NOW)
    assert sorted(os.listdir(d)) == ["blobs", "index.json", "oci-layout"]


_LOOP = """
import sys
from ocicache import api
d = sys.argv[1]
print("ready", flush=True)
while True:
    api.pin(d, "~3", "keep")
    api.unpin(d, "keep")
"""


@pytest.mark.slow
def test_sigkill_during_rewrites_never_tears_index(tmp_path: Path) -> None:
    """Kill a process that pins and unpins in a loop at random moments: index.json is always
    the old or the new document, never torn, and no temp file outlives the next rewrite."""
    d = copy_case("f-tags", tmp_path / "f")
    old = (d / "index.json").read_bytes()
    api.pin(d, "~3", "keep")
    pinned_entries = _entries(d)
    api.unpin(d, "keep")
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    states = {"old": 0, "new": 0}
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, "-c", _LOOP, str(d)], env=env, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = (d / "index.json").read_bytes()
        if data == old:
            states["old"] += 1
        else:
            assert _entries(d)[:-1] == pinned_entries[:-1]  # parses, others untouched
            assert json.loads(_entries(d)[-1])["annotations"][ANN_REF_NAME] == "keep"
            states["new"] += 1
        # The next rewrite (under the lock) cleans whatever the killed one left.
        api.pin(d, "~3", "keep")
        api.unpin(d, "keep")
        assert (d / "index.json").read_bytes() == old
        assert sorted(os.listdir(d)) == ["blobs", "index.json", "oci-layout"]
    assert states["old"] + states["new"] == 8


def test_busy_lock_refuses(tmp_path: Path) -> None:
    import fcntl

    from ocicache.base.errors import BusyError
    from ocicache.store.layout import Layout

    d = copy_case("f-tags", tmp_path / "f")
    before = (d / "index.json").read_bytes()
    with open(d / "index.json.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BuildKit is writing
        with Layout(d) as layout, pytest.raises(BusyError):
            indexwrite.rewrite_index(layout, lambda entries: entries[:1], timeout=0.05)
    assert (d / "index.json").read_bytes() == before


def test_ref_works_with_a_torn_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("a-history-min", tmp_path / "a")
    oldest = api.history(d).exports[-1]
    (d / "index.json").write_bytes(b'{"schemaVersion":2,"manif')
    code, out, err = run(capsys, "ref", str(d), oldest.digest)
    assert (code, out) == (0, f"type=local,src={d},digest={oldest.digest}\n")
    assert "index.json" in err
