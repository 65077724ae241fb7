"""ocicache gc: the plan's rules, the apply step's safety, the CLI contract, and real fixtures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from gc_helpers import (
    FIXTURE_NAMES,
    FIXTURES,
    assert_consistent,
    blob_names,
    cli,
    copy_fixture,
    stable_history,
)

from ocicache import api
from ocicache.base.errors import NotFoundError, RefusedError, UsageError
from ocicache.base.units import parse_duration_ns, parse_size
from ocicache.core.gc_plan import HOUR_NS, Policy
from ocicache.format.schema import validate
from ocicache.synth import BASE_NS, Builder, history_dir

S = 1_000_000_000
FAR = BASE_NS + 1000 * 24 * HOUR_NS  # "now" long after every synthetic write


# -- units ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("36h", 36 * 3600),
        ("7d", 7 * 86400),
        ("90m", 5400),
        ("30s", 30),
        ("0", 0),
        ("1h30m", 5400),
        ("2w", 14 * 86400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_ns(text, "--grace") == seconds * S


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("5GB", 5 * 10**9),
        ("500MiB", 500 << 20),
        ("1.5G", 1_500_000_000),
        ("1234", 1234),
        ("10kB", 10_000),
        ("2KiB", 2048),
        ("0", 0),
    ],
)
def test_sizes(text: str, n: int) -> None:
    assert parse_size(text, "--max-size") == n


@pytest.mark.parametrize("text", ["", "h", "-1h", "5x", "1h 2", "1.h"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--keep-within"):
        parse_duration_ns(text, "--keep-within")


@pytest.mark.parametrize("text", ["GB", "-1", "5XB", "1iB", "lots"])
def test_bad_sizes_name_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--max-size"):
        parse_size(text, "--max-size")


# -- plan rules on small synthetic histories -------------------------------------------------
def _history(tmp: Path, n: int = 5, tags: tuple[str, ...] = ("latest",)) -> tuple[Path, Builder]:
    root = tmp / "cache"
    return root, history_dir(root, exports=n, layers=3, orphans=2, tags=tags)


def _rules(result: Any) -> dict[str, list[str]]:
    return {d.digest: list(d.rules) for d in result.plan.kept}


def test_default_keeps_only_index_and_deletes_the_rest(tmp_path: Path) -> None:
    root, _ = _history(tmp_path)
    before = api.history(root)
    current = before.exports[0]
    r = api.gc(root, Policy(), now_ns=FAR)
    assert _rules(r) == {current.digest: ["index"]}
    assert {d.digest for d in r.plan.dropped} == {e.digest for e in before.exports[1:]}
    assert r.removed()["manifest"][0] == 4 and r.removed()["cache-config"][0] == 4
    assert r.removed()["unknown"][0] == 2  # the orphans
    assert blob_names(root) == {d.split(":")[1] for d in current.blobs}
    assert_consistent(root)


def test_keep_last_within_and_ref(tmp_path: Path) -> None:
    root, _ = _history(tmp_path, n=6)
    ex = api.history(root).exports
    newest_older = ex[1].created_ns
    assert newest_older is not None
    r = api.gc(
        root,
        Policy(keep_last=1, keep_refs=(ex[5].digest[:19],), keep_within_ns=FAR - ex[2].created_ns),  # type: ignore[operator]
        now_ns=FAR,
        dry_run=True,
    )
    rules = _rules(r)
    assert rules[ex[0].digest] == ["index", "keep-within"]
    assert rules[ex[1].digest] == ["keep-last", "keep-within"]
    assert rules[ex[2].digest] == ["keep-within"]
    assert rules[ex[5].digest] == ["keep"]
    assert {d.digest for d in r.plan.dropped} == {ex[3].digest, ex[4].digest}


def test_keep_ref_not_found_deletes_nothing(tmp_path: Path) -> None:
    root, _ = _history(tmp_path)
    names = blob_names(root)
    with pytest.raises(NotFoundError):
        api.gc(root, Policy(keep_refs=("nosuchtag",)), now_ns=FAR)
    assert blob_names(root) == names


def test_every_tag_and_pin_is_kept(tmp_path: Path) -> None:
    root, b = _history(tmp_path, n=6, tags=("a", "b", "c"))
    old = api.history(root).exports[-1]
    b.point("keepme", old.digest, old.manifest_size, extra_annotations={"dev.ocicache.pinned": "true"})
    r = api.gc(root, Policy(), now_ns=FAR)
    kept = _rules(r)
    assert len(kept) == 4 and kept[old.digest] == ["pinned"]
    assert_consistent(root)


def test_max_size_drops_oldest_soft_kept_never_index(tmp_path: Path) -> None:
    root, _ = _history(tmp_path, n=5)
    ex = api.history(root).exports
    full = api.gc(root, Policy(keep_last=4), now_ns=FAR, dry_run=True)
    assert full.plan.dropped == ()
    # Room for about two exports' own blobs fewer: the two oldest go, the newest stay.
    limit = full.plan.kept_bytes - ex[4].unique_size - ex[3].unique_size
    r = api.gc(root, Policy(keep_last=4, max_size=limit), now_ns=FAR, dry_run=True)
    assert [d.digest for d in r.plan.dropped] == [ex[3].digest, ex[4].digest]
    assert all(d.reason == "max-size" for d in r.plan.dropped)
    assert r.plan.kept_bytes <= limit and not r.warnings
    tiny = api.gc(root, Policy(keep_last=4, max_size=1), now_ns=FAR)
    assert _rules(tiny) == {ex[0].digest: ["index"]}
    assert any("still over --max-size" in w for w in tiny.warnings)
    assert_consistent(root)


def test_grace_protects_young_blobs_and_manifests_with_old_layers(tmp_path: Path) -> None:
    root, b = _history(tmp_path, n=3)
    ex = api.history(root).exports
    # An export in progress: re-uses the oldest export's (old) layers, writes a young config
    # and manifest, and has not updated index.json yet.
    layer_docs = [
        {"mediaType": x.media_type, "digest": x.digest, "size": x.size, "annotations": dict(x.annotations)}
        for x in ex[2].layers
    ]
    b.tick(5 * 3600)  # the history is hours old; the export in progress is minutes old
    new_layer = b.layer("in-progress")
    now = b.clock_ns + 10 * 60 * S
    young = b.export([*layer_docs, new_layer], tag=None, mtime_ns=now - 60 * S)
    r = api.gc(root, Policy(), now_ns=now)  # default grace 1h: only our young export is young
    rules = _rules(r)
    assert rules[young] == ["grace"]
    assert ex[2].digest in {d.digest for d in r.plan.dropped}
    after = api.history(root)
    assert next(e for e in after.exports if e.digest == young).complete
    assert_consistent(root)


def test_young_config_without_manifest_keeps_its_layers(tmp_path: Path) -> None:
    root, b = _history(tmp_path, n=2)
    ex = api.history(root).exports
    old = ex[1]
    assert old.config is not None
    # Copy the old config under a new digest (one extra record) with a fresh mtime.
    data = json.loads((root / "blobs/sha256" / old.config.digest[7:]).read_bytes())
    data["records"].append({"digest": "sha256:" + "ab" * 32})
    now = b.clock_ns + HOUR_NS * 100
    b.blob(json.dumps(data).encode(), mtime_ns=now)
    api.gc(root, Policy(), now_ns=now)
    names = blob_names(root)
    assert all(layer.digest[7:] in names for layer in old.layers)
    assert old.digest[7:] not in names  # the old manifest itself is dropped


def test_stale_ingest_removed_fresh_kept(tmp_path: Path) -> None:
    root, b = _history(tmp_path, n=2)
    now = b.clock_ns + 2 * HOUR_NS
    b.ingest("a" * 64, 100, 200, mtime_ns=now - 3 * HOUR_NS)
    b.ingest("b" * 64, 100, 200, mtime_ns=now - 60 * S)
    r = api.gc(root, Policy(), now_ns=now)
    assert r.removed()["ingest"][0] == 1
    assert sorted(p.name for p in (root / "ingest").iterdir()) == ["b" * 64]


def test_torn_index_refuses(tmp_path: Path) -> None:
    root, _ = _history(tmp_path)
    names = blob_names(root)
    data = (root / "index.json").read_bytes()
    (root / "index.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(RefusedError, match="nothing deleted"):
        api.gc(root, Policy(), now_ns=FAR)
    assert blob_names(root) == names


def test_unparseable_kept_manifest_refuses(tmp_path: Path) -> None:
    root, b = _history(tmp_path)
    names = blob_names(root)
    bad = b.blob(b'{"schemaVersion": 2, "config": ')  # JSON-looking, truncated
    b.point("broken", bad, 31)
    with pytest.raises(RefusedError, match="cannot be parsed"):
        api.gc(root, Policy(), now_ns=FAR)
    assert blob_names(root) == names | {bad[7:]}


def test_unparseable_config_of_kept_export_refuses(tmp_path: Path) -> None:
    root, _ = _history(tmp_path)
    cur = api.history(root).exports[0]
    assert cur.config is not None
    path = root / "blobs/sha256" / cur.config.digest[7:]
    os.chmod(path, 0o644)
    path.write_bytes(b'{"layers": [')
    with pytest.raises(RefusedError, match="cache config"):
        api.gc(root, Policy(), now_ns=FAR)


def test_unparseable_json_blob_is_kept_with_a_warning(tmp_path: Path) -> None:
    root, b = _history(tmp_path)
    bad = b.blob(b'{"manifests": [')
    r = api.gc(root, Policy(), now_ns=FAR)
    assert bad[7:] in blob_names(root)
    assert any("unparseable JSON" in w for w in r.warnings)


def test_missing_index_manifest_refuses(tmp_path: Path) -> None:
    root, b = _history(tmp_path)
    b.point("ghost", "sha256:" + "cd" * 32, 100)
    with pytest.raises(RefusedError, match="missing"):
        api.gc(root, Policy(), now_ns=FAR)


def test_not_a_cache_dir(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "x").mkdir()
    code, _, err = cli(capsys, "gc", str(tmp_path / "x"))
    assert code == 3 and "not a cache directory" in err


def test_strays_and_symlinks_are_never_touched(tmp_path: Path) -> None:
    root, _ = _history(tmp_path)
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    blobs = root / "blobs" / "sha256"
    (blobs / ("ee" * 32)).symlink_to(outside)
    (blobs / "not-a-digest").write_bytes(b"x")
    os.utime(blobs / "not-a-digest", ns=(BASE_NS, BASE_NS))
    (root / "ingest").mkdir()
    (root / "ingest" / ("ff" * 32)).symlink_to(tmp_path)
    r = api.gc(root, Policy(), now_ns=FAR)
    assert outside.read_bytes() == b"precious"
    assert (blobs / ("ee" * 32)).is_symlink() and (blobs / "not-a-digest").exists()
    assert sorted(r.plan.strays) == [f"blobs/sha256/{'ee' * 32}", "blobs/sha256/not-a-digest"]
    assert any("not-a-digest" in w for w in r.warnings)
    assert (tmp_path / "outside").exists() and (tmp_path / "cache").exists()


def test_read_only_filesystem_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = _history(tmp_path)
    names = blob_names(root)
    real = os.fstatvfs

    class RO:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_flag = st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "fstatvfs", lambda fd: RO(real(fd)))
    with pytest.raises(RefusedError, match="read-only"):
        api.gc(root, Policy(), now_ns=FAR)
    assert blob_names(root) == names
    assert api.gc(root, Policy(), now_ns=FAR, dry_run=True).plan.blobs  # dry run still plans


def test_concurrent_index_change_replans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """index.json changes between plan and delete: gc re-plans and keeps the new tag's export."""
    from ocicache.ops import gc_apply

    root, b = _history(tmp_path, n=4)
    ex = api.history(root).exports
    real = gc_apply.make_plan
    calls = {"n": 0}

    def plan_then_repoint(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:  # after the first plan, a build re-points a tag at an old export
            b.point("again", ex[3].digest, ex[3].manifest_size)
        return plan

    monkeypatch.setattr(gc_apply, "make_plan", plan_then_repoint)
    r = api.gc(root, Policy(), now_ns=FAR)
    assert r.replans == 1
    assert _rules(r)[ex[3].digest] == ["index"]
    assert_consistent(root)


def test_held_lock_is_never_contended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process holding index.json.lock while index.json holds still (a stuck holder, not a
    write): gc never takes the lock (BuildKit's exporter fails the build at once on any
    holder), reads index.json as it is, says so, and goes on; the dry run too."""
    import fcntl

    import ocicache.store.indexread as indexread
    from ocicache.ops import gc_apply

    # Each of gc's reads of index.json waits this long for the holder first (2 s by default:
    # 16 s for the two runs); how long is not what is tested here (test_index_safety.py).
    monkeypatch.setattr(indexread, "WAIT_S", 0.2)
    root, _ = _history(tmp_path)
    fd = os.open(root / "index.json.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        dry = gc_apply.gc(root, Policy(grace_ns=0), now_ns=FAR, dry_run=True)
        assert dry.plan.blobs
        r = gc_apply.gc(root, Policy(grace_ns=0), now_ns=FAR)
        assert r.deleted and any("index.json.lock" in w for w in r.warnings), r.warnings
        assert_consistent(root)
    finally:
        os.close(fd)


# -- CLI -------------------------------------------------------------------------------------
def test_cli_json_matches_schema_and_dry_run_predicts(tmp_path: Path, capsys: Any) -> None:
    root, _ = _history(tmp_path, n=5)
    code, out, err = cli(capsys, "gc", str(root), "--dry-run", "--json", "--keep-last", "1")
    assert code == 0, err
    dry = json.loads(out)
    assert validate(dry, "gc") == []
    assert dry["dryRun"] is True and dry["schema"] == "ocicache/gc@1"
    names = blob_names(root)
    code, out, err = cli(capsys, "gc", str(root), "--json", "--keep-last", "1")
    assert code == 0, err
    real = json.loads(out)
    assert validate(real, "gc") == []
    for key in ("kept", "dropped", "removed", "blobs", "ingest", "keptBytes", "freedBytes"):
        assert real[key] == dry[key], key
    assert names - blob_names(root) == {b["digest"][7:] for b in real["blobs"]}
    assert [k["rules"] for k in real["kept"]] == [["index"], ["keep-last"]]
    code, out, _ = cli(capsys, "gc", str(root), "--json", "--keep-last", "1")
    assert json.loads(out)["blobs"] == [] and json.loads(out)["freedBytes"] == 0


def test_cli_text_report(tmp_path: Path, capsys: Any) -> None:
    root, _ = _history(tmp_path, n=3)
    code, out, _ = cli(capsys, "gc", str(root), "--dry-run", "--keep-within", "0")
    assert code == 0
    assert "kept: index" in out and "dropped" in out and "WOULD REMOVE" in out
    assert "dry run: nothing was changed" in out


@pytest.mark.parametrize(
    ("opt", "value"), [("--grace", "soon"), ("--keep-within", "-1d"), ("--max-size", "big")]
)
def test_cli_bad_values_exit_2_naming_the_option(tmp_path: Path, capsys: Any, opt: str, value: str) -> None:
    root, _ = _history(tmp_path, n=2)
    code, _, err = cli(capsys, "gc", str(root), opt, value)
    assert code == 2 and opt in err


def test_cli_refusal_exit_code(tmp_path: Path, capsys: Any) -> None:
    root, _ = _history(tmp_path, n=2)
    (root / "index.json").write_text("{")
    code, _, err = cli(capsys, "gc", str(root))
    assert code == 6 and "nothing deleted" in err


# -- real BuildKit fixtures --------------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_gc_on_real_fixtures(tmp_path: Path, name: str) -> None:
    root, newest = copy_fixture(name, tmp_path)
    now = newest + 2 * HOUR_NS
    before = api.history(root)
    kept_index = {e.digest for e in before.exports if e.referenced_by_index}
    history_before = stable_history(root)
    dry = api.gc(root, Policy(), now_ns=now, dry_run=True)
    names = blob_names(root)
    real = api.gc(root, Policy(), now_ns=now)
    assert [b.digest for b in real.deleted] == [b.digest for b in dry.plan.blobs]
    assert names - blob_names(root) == {b.name for b in dry.plan.blobs}
    assert {d.digest for d in real.plan.kept} == kept_index
    assert_consistent(root)
    after = stable_history(root)
    assert after == {d: h for d, h in history_before.items() if d in kept_index}
    assert not api.gc(root, Policy(), now_ns=now).deleted  # the second run deletes nothing
    truth = json.loads((FIXTURES / f"{name}.groundtruth.json").read_text())
    reachable = set(truth["final"]["reachable_from_index"])
    assert {f"sha256:{n}" for n in blob_names(root)} == reachable


def test_default_grace_keeps_everything_just_written(tmp_path: Path) -> None:
    root, newest = copy_fixture("a-history-min", tmp_path)
    names = blob_names(root)
    r = api.gc(root, Policy(), now_ns=newest + 60 * S)
    assert not r.deleted and blob_names(root) == names
    assert {"grace"} <= {rule for d in r.plan.kept for rule in d.rules}


def test_foreign_index_deleted_before_the_manifests_it_references(tmp_path: Path) -> None:
    """Manifests go first, and among them a parent index before the manifest it names."""
    from ocicache.format import mediatypes as mt
    from ocicache.synth import compact

    root, b = _history(tmp_path, n=2)
    cfg = b.blob(compact({"architecture": "amd64", "os": "linux", "rootfs": {}}))
    layer = b.orphan("img")
    image = b.blob(
        compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": cfg,
                    "size": 60,
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 64}
                ],
            }
        )
    )
    index = b.blob(
        compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_INDEX,
                "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": image, "size": 300}],
            }
        )
    )
    r = api.gc(root, Policy(), now_ns=FAR, dry_run=True)
    order = [d.digest for d in r.plan.blobs]
    assert order.index(index) < order.index(image) < order.index(cfg)
    assert [d.kind for d in r.plan.blobs] == sorted(
        (d.kind for d in r.plan.blobs), key=["manifest", "cache-config", "layer", "unknown"].index
    )
    # Referenced from index.json (a foreign entry), its whole closure is kept.
    b.point("image", index, 100, mt.OCI_INDEX)
    kept = api.gc(root, Policy(), now_ns=FAR)
    assert {index, image, cfg, layer} <= {f"sha256:{n}" for n in blob_names(root)}
    assert_consistent(root)
    assert kept.deleted


def test_history_unchanged_after_gc_on_a_copy_without_mtimes(tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "lost"
    shutil.copytree(FIXTURES / "a-history-min", root, copy_function=shutil.copy)
    kept = {api.history(root).exports[0].digest}
    before = stable_history(root, kept)
    api.gc(root, Policy(grace_ns=0))
    assert stable_history(root) == before
