"""Every command on a registry target, against a real registry (Debian's docker-registry,
distribution 2.8.2, tests/regserver.py) serving the real BuildKit-pushed fixtures in
fixtures/registry/, compared with their ground truth."""

from __future__ import annotations

import itertools
import json
import urllib.request
from pathlib import Path

import pytest
from clirun import json_of, run_inprocess
from fakehttp import FakeServer, Reply, Request
from regserver import Registry, head_status, registry_truth, start_registry, unpack_storage

from ocicache.format.schema import validate


def _tags(reg: Registry, repo: str) -> list[str]:
    with urllib.request.urlopen(reg.url(f"/v2/{repo}/tags/list"), timeout=10) as r:
        return sorted(json.load(r)["tags"] or [])


def _cache_revisions(case: str, repo: str) -> list[dict]:
    """The repository's cache manifests (shapes A, B, C), in push order (oldest first)."""
    repo_truth = registry_truth(case)["final"]["repositories"][repo]
    revs = [r for r in repo_truth["revisions"] if r["shape"] in ("A", "B", "C")]
    return sorted(revs, key=lambda r: r["revision_link_mtime_ns"])


def _repos(case: str) -> list[str]:
    return sorted(registry_truth(case)["final"]["repositories"])


CASE_REPOS = [(c, r) for c in ("reg-history", "reg-shapes", "reg-mixed") for r in _repos(c)]


@pytest.mark.parametrize(("case", "repo"), CASE_REPOS)
def test_history_with_storage_lists_every_export_newest_first(tmp_path: Path, case: str, repo: str) -> None:
    root = unpack_storage(case, tmp_path / "s")
    reg = start_registry(tmp_path / "r", root)
    try:
        doc = json_of("history", reg.target(repo), "--registry-storage", str(root))
    finally:
        reg.stop()
    assert validate(doc, "history") == []
    assert doc["target"] == reg.target(repo) and doc["directory"] is None
    truth = registry_truth(case)["final"]["repositories"][repo]
    revs = _cache_revisions(case, repo)
    got = [e["digest"] for e in doc["exports"]]
    assert sorted(got) == sorted(r["digest"] for r in revs)
    # Current exports are the cache tags; foreign tags (images) are listed apart.
    cache_digests = {r["digest"] for r in revs}
    for e in doc["exports"]:
        assert sorted(e["tags"]) == sorted(t for t, d in truth["tags"].items() if d == e["digest"])
    foreign = {f["digest"] for f in doc["foreign"]}
    assert foreign == {d for d in truth["tags"].values() if d not in cache_digests}
    # Current exports first; then the older ones newest first by when their tag moved off them
    # (the push of the tag's next manifest), as ~N counts them.
    current = [e["digest"] for e in doc["exports"] if e["tags"]]
    assert [e["digest"] for e in doc["exports"][: len(current)]] == current
    older = [e["digest"] for e in doc["exports"] if not e["tags"]]
    pushed = {r["digest"]: r["revision_link_mtime_ns"] for r in truth["revisions"]}
    moved_off: dict[str, int] = {}
    for history in truth["tag_history"].values():
        for d, after in itertools.pairwise(history):
            moved_off[d] = max(moved_off.get(d, 0), pushed[after])
    assert older == sorted(older, key=lambda d: moved_off[d], reverse=True)
    assert all(e["complete"] for e in doc["exports"])


def test_history_without_storage_lists_the_tags_and_remembers_them(fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    target = reg.target("myorg/app-cache")
    truth = registry_truth("reg-history")
    order = truth["final"]["export_manifest_digests_in_order"]
    doc = json_of("history", target)
    assert [e["digest"] for e in doc["exports"]] == [order[-1]]
    assert doc["exports"][0]["tags"] == ["buildcache"]
    assert doc["exports"][0]["createdFrom"] == "createdat"  # no push time without the storage
    # The tag moves (here: pinned back onto the previous export, --force): the record of what
    # ocicache saw keeps the export it moved off, and history lists it while it exists.
    r = run_inprocess("pin", target, order[-2], "buildcache", "--force")
    assert r.code == 0, r.err
    doc = json_of("history", target)
    assert [e["digest"] for e in doc["exports"]] == [order[-2], order[-1]]  # current first
    assert doc["exports"][0]["tags"] == ["buildcache"] and doc["exports"][1]["tags"] == []
    # A digest the user names is looked for too.
    shown = json_of("show", target, order[0])
    assert shown["export"]["digest"] == order[0]


def test_show_blobs_du_on_a_registry(fixture_registry) -> None:
    reg = fixture_registry("reg-shapes")
    truth = registry_truth("reg-shapes")["final"]["repositories"]["shapes/cache"]
    for tag, digest in truth["tags"].items():
        doc = json_of("show", reg.target("shapes/cache"), tag)
        assert validate(doc, "show") == []
        assert doc["export"]["digest"] == digest
        assert doc["export"]["stack"], tag
    doc = json_of("blobs", reg.target("shapes/cache"))
    assert validate(doc, "blobs") == []
    assert doc["target"] == reg.target("shapes/cache")
    doc = json_of("du", reg.target("shapes/cache"))
    assert validate(doc, "du") == []
    r = run_inprocess("du", reg.target("shapes/cache"))
    assert r.code == 0 and "reachable from a tag" in r.out and "index.json" not in r.out


def test_ref_prints_registry_specs_in_every_format(fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    target = reg.target("myorg/app-cache", "buildcache")
    digest = registry_truth("reg-history")["final"]["repositories"]["myorg/app-cache"]["tags"]["buildcache"]
    spec = f"type=registry,ref={reg.host}/myorg/app-cache@{digest},registry.insecure=true"
    assert run_inprocess("ref", target).out.strip() == spec
    assert run_inprocess("ref", target, "-f", "buildx").out.strip() == f"--cache-from {spec}"
    assert run_inprocess("ref", target, "-f", "buildctl").out.strip() == f"--import-cache {spec}"
    assert run_inprocess("ref", target, "-f", "bake").out.strip() == f'cache-from = ["{spec}"]'
    assert run_inprocess("ref", target, "-f", "gha").out.strip() == f"cache-from: {spec}"
    doc = json_of("ref", target)
    assert validate(doc, "ref") == []
    assert doc["type"] == "registry" and doc["spec"] == spec and doc["target"] == target
    # The BuildKit spec form of the target, as pasted from --cache-to, names the same cache.
    pasted = f"type=registry,ref={reg.host}/myorg/app-cache:buildcache,mode=max"
    assert run_inprocess("ref", pasted).out.strip() == spec


def test_pin_and_unpin_tags(fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    target = reg.target("myorg/app-cache")
    order = registry_truth("reg-history")["final"]["export_manifest_digests_in_order"]
    r = run_inprocess("pin", target, order[-1], "release-1")
    assert r.code == 0, r.err
    assert r.out.strip() == f"type=registry,ref={reg.host}/myorg/app-cache:release-1,registry.insecure=true"
    assert _tags(reg, "myorg/app-cache") == ["buildcache", "release-1"]
    # Moving an existing tag needs --force.
    r = run_inprocess("pin", target, order[0], "release-1")
    assert r.code == 6 and "--force" in r.err
    doc = json_of("pin", target, order[0], "release-1", "--force")
    assert validate(doc, "pin") == [] and doc["replaced"] == [order[-1]]
    # unpin removes the tag only: the manifest stays (other tags keep it).
    r = run_inprocess("pin", target, order[0], "also")
    assert r.code == 0, r.err
    doc = json_of("unpin", target, "release-1")
    assert validate(doc, "unpin") == []
    assert _tags(reg, "myorg/app-cache") == ["also", "buildcache"]
    assert head_status(reg, "myorg/app-cache", "manifests", order[0]) == 200
    assert head_status(reg, "myorg/app-cache", "manifests", "also") == 200
    r = run_inprocess("unpin", target, "no-such-tag")
    assert r.code == 5, r.err


def test_gc_deletes_only_cache_manifests(tmp_path: Path) -> None:
    """reg-mixed: images and caches in one repository. gc drops the older caches; the untagged
    image manifest, the images and the tagged caches stay; the registry's own garbage collector
    then frees no more than gc said."""
    root = unpack_storage("reg-mixed", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root)
    try:
        target = reg.target("app")
        truth = registry_truth("reg-mixed")["final"]["repositories"]["app"]
        dry = json_of("gc", target, "--registry-storage", str(root), "--grace", "0", "--dry-run")
        assert validate(dry, "gc") == []
        doc = json_of("gc", target, "--registry-storage", str(root), "--grace", "0")
        assert validate(doc, "gc") == []
        assert doc["registry"]["deletedManifests"] == dry["registry"]["deletedManifests"]
        caches = {r["digest"] for r in truth["revisions"] if r["shape"] == "A"}
        tagged = set(truth["tags"].values())
        deleted = set(doc["registry"]["deletedManifests"])
        assert deleted == caches - tagged
        for rev in truth["revisions"]:
            want = 404 if rev["digest"] in deleted else 200
            assert head_status(reg, "app", "manifests", rev["digest"]) == want, rev
        assert _tags(reg, "app") == sorted(truth["tags"])
        predicted = doc["registry"]["freedByRegistryGc"]["bytes"]
        before = _blob_bytes(root)
        p = reg.garbage_collect()
        assert p.returncode == 0, p.stderr
        assert 0 < before - _blob_bytes(root) <= predicted
        # Every tag still resolves whole after the registry's GC.
        check = json_of("check", target, "--deep")
        assert check["ok"], check["findings"]
    finally:
        reg.stop()


def _blob_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "docker/registry/v2/blobs").rglob("data"))


def test_gc_refused_when_the_registry_does_not_delete(tmp_path: Path) -> None:
    root = unpack_storage("reg-history", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root, delete=False)
    try:
        r = run_inprocess(
            "gc", reg.target("myorg/app-cache"), "--registry-storage", str(root), "--grace", "0"
        )
        assert r.code == 6, r.err
        assert "delet" in r.err and "Traceback" not in r.err
        doc = json_of("history", reg.target("myorg/app-cache"), "--registry-storage", str(root))
        assert len(doc["exports"]) == 4  # nothing gone
    finally:
        reg.stop()


def test_gc_keeps_what_it_cannot_date(fixture_registry) -> None:
    """Without the storage, an older export is known from ocicache's record; its time is when
    ocicache first saw it: the grace keeps it until then + grace."""
    reg = fixture_registry("reg-history")
    target = reg.target("myorg/app-cache")
    order = registry_truth("reg-history")["final"]["export_manifest_digests_in_order"]
    assert run_inprocess("history", target).code == 0
    assert run_inprocess("pin", target, order[-2], "buildcache", "--force").code == 0
    doc = json_of("gc", target)  # default grace 1h: the export just seen is kept
    assert doc["registry"]["deletedManifests"] == []
    assert any("grace" in k["rules"] for k in doc["kept"])
    doc = json_of("gc", target, "--grace", "0")
    assert doc["registry"]["deletedManifests"] == [order[-1]]
    assert head_status(reg, "myorg/app-cache", "manifests", order[-1]) == 404


def test_check_reports_a_missing_and_a_corrupt_blob(tmp_path: Path) -> None:
    root = unpack_storage("reg-history", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root)
    try:
        target = reg.target("myorg/app-cache")
        doc = json_of("check", target)
        assert validate(doc, "check") == [] and doc["ok"]
        show = json_of("show", target)
        layers = [x["digest"] for x in show["export"]["stack"]]
        # One layer's bytes changed in the storage: only --deep sees it.
        victim = layers[-1].split(":", 1)[1]
        data = root / f"docker/registry/v2/blobs/sha256/{victim[:2]}/{victim}/data"
        raw = bytearray(data.read_bytes())
        raw[-1] ^= 0xFF
        data.write_bytes(bytes(raw))
        assert json_of("check", target)["ok"]
        deep = json_of("check", target, "--deep", code=1)
        assert any(victim in json.dumps(f) for f in deep["findings"])
        # Another layer's data gone: HEAD says so, and the finding names the export.
        gone = layers[0].split(":", 1)[1]
        (root / f"docker/registry/v2/blobs/sha256/{gone[:2]}/{gone}/data").unlink()
        doc = json_of("check", target, code=1)
        assert any(gone in json.dumps(f) and f["severity"] == "error" for f in doc["findings"])
    finally:
        reg.stop()


def test_bad_targets_get_one_line_and_an_exit_code(registry: Registry, tmp_path: Path) -> None:
    r = run_inprocess("history", "registry://127.0.0.1:9/x/y")  # nothing listens on port 9
    assert r.code == 9 and len(r.err.strip().splitlines()) <= 2 and "Traceback" not in r.err
    r = run_inprocess("history", registry.target("no/such-repo"))
    assert r.code == 3, r.err
    r = run_inprocess("history", "registry://")
    assert r.code == 2, r.err
    r = run_inprocess("show", registry.target("no/such-repo"), "sometag")
    assert r.code in (3, 5), r.err


def test_basic_auth_with_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    root = unpack_storage("reg-history", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root, htpasswd=("alice", "s3cret-pw"))
    try:
        target = reg.target("myorg/app-cache")
        r = run_inprocess("history", target)
        assert r.code == 9 and "s3cret" not in r.err
        config = tmp_path / "docker"
        config.mkdir()
        auth = base64.b64encode(b"alice:s3cret-pw").decode()
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(config))
        r = run_inprocess("history", target)
        assert r.code == 0, r.err
        assert "buildcache" in r.out and "s3cret" not in r.out + r.err
        wrong = base64.b64encode(b"alice:nope").decode()
        (config / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": wrong}}}))
        r = run_inprocess("history", target)
        assert r.code == 9 and "nope" not in r.err
    finally:
        reg.stop()


def test_expire_tags_on_a_registry(tmp_path: Path) -> None:
    """--expire-tags drops the tags of exports older than AGE (not those --keep-tag names);
    the export then counts as older and the policies decide."""
    root = unpack_storage("reg-mixed", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root)
    try:
        target = reg.target("app")
        storage = ["--registry-storage", str(root)]
        args = ["gc", target, *storage, "--grace", "0", "--expire-tags", "1h", "--keep-tag", "cache-main"]
        dry = json_of(*args, "--dry-run")
        assert validate(dry, "gc") == []
        assert sorted(t["tag"] for t in dry["expiredTags"]) == ["cache-pr-1", "cache-pr-2"]
        assert _tags(reg, "app") == ["cache-main", "cache-pr-1", "cache-pr-2", "latest", "v1"]
        doc = json_of(*args)
        assert sorted(t["tag"] for t in doc["expiredTags"]) == ["cache-pr-1", "cache-pr-2"]
        assert _tags(reg, "app") == ["cache-main", "latest", "v1"]  # images are never expired
        truth = registry_truth("reg-mixed")["final"]["repositories"]["app"]["tags"]
        assert head_status(reg, "app", "manifests", truth["cache-main"]) == 200
        assert head_status(reg, "app", "manifests", truth["cache-pr-1"]) == 404  # dropped with its tag
        assert head_status(reg, "app", "manifests", truth["v1"]) == 200
    finally:
        reg.stop()


def _fake_registry(manifest: Reply | None = None, tags: list[str] = ("main",)):  # type: ignore[assignment]
    """A registry that is not one: /v2/ and tags/list as distribution answers them, and the
    manifest of tag `main` as `manifest` says."""

    def handler(req: Request) -> Reply:
        if req.route == "/v2/":
            return Reply(200, {"Content-Type": "application/json"}, b"{}")
        if req.route.endswith("/tags/list"):
            return Reply(
                200, {"Content-Type": "application/json"}, json.dumps({"name": "x/y", "tags": tags}).encode()
            )
        if "/manifests/" in req.route and manifest is not None:
            return manifest
        return Reply(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')

    return FakeServer(handler)


_OCI = "application/vnd.oci.image.manifest.v1+json"
_DOC = json.dumps({"schemaVersion": 2, "mediaType": _OCI, "config": {}, "layers": []}).encode()
_WRONG = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Reply(200, {"Content-Type": _OCI, "Docker-Content-Digest": _WRONG}, _DOC), 4, "digest"),
        (Reply(200, {"Content-Type": _OCI}, b"{" * (5 << 20)), 4, "limit"),
        (Reply(200, {"Content-Type": _OCI}, b"<html>not json</html>"), 4, "JSON"),
        (Reply(307, {"Location": "http://127.0.0.2:1/elsewhere"}), 9, "redirect"),
        (Reply(500, {}, b"oops"), 9, "500"),
    ],
    ids=["digest-mismatch", "huge", "malformed", "redirect-elsewhere", "server-error"],
)
def test_hostile_registry_answers(
    reply: Reply, code: int, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocicache.store.registry.client import RegistryClient

    monkeypatch.setattr(RegistryClient, "backoff", 0.01)
    with _fake_registry(reply) as fake:
        host = fake.url("").split("//", 1)[1].rstrip("/")
        r = run_inprocess("history", f"registry://{host}/x/y")
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert 1 <= len(lines) <= 2 and "Traceback" not in r.err, r.err
    assert words.lower() in r.err.lower(), r.err


def test_registry_target_never_leaves_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redirect to another host is refused, and nothing is sent there."""
    with FakeServer(lambda req: Reply(200, {}, b"{}")) as other:
        other_host = other.url("").split("//", 1)[1].rstrip("/")
        redirect = Reply(
            302, {"Location": f"http://{other_host.replace('127.0.0.1', '127.0.0.2')}/v2/x/y/manifests/main"}
        )
        with _fake_registry(redirect) as fake:
            host = fake.url("").split("//", 1)[1].rstrip("/")
            r = run_inprocess("history", f"registry://{host}/x/y")
        assert r.code == 9, r.err
        assert other.requests == []


def test_explain_reads_registry_specs(fixture_registry) -> None:
    reg = fixture_registry("reg-mixed")
    truth = registry_truth("reg-mixed")["final"]["repositories"]["app"]["tags"]
    ok = json_of("ref", "--explain", f"type=registry,ref={reg.host}/app:cache-main")
    assert validate(ok, "explain") == [] and ok["works"] and ok["outcome"] == "imports"
    image = json_of("ref", "--explain", f"type=registry,ref={reg.host}/app:v1", code=1)
    assert not image["works"] and any("not a cache" in f["message"] for f in image["findings"])
    # digest= is a local key: the spec as given imports `latest` (here an image); the corrected
    # spec names the export in ref=.
    local_key = json_of(
        "ref", "--explain", f"type=registry,ref={reg.host}/app,digest={truth['cache-main']}", code=1
    )
    assert any(f["key"] == "digest" and f["severity"] == "warning" for f in local_key["findings"])
    assert local_key["corrected"] == f"type=registry,ref={reg.host}/app@{truth['cache-main']}"
    missing = json_of("ref", "--explain", f"type=registry,ref={reg.host}/app:nope", code=1)
    assert missing["outcome"] == "skipped"


def test_a_target_naming_a_tag_or_digest_is_the_default_ref(fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    order = registry_truth("reg-history")["final"]["export_manifest_digests_in_order"]
    by_tag = json_of("show", reg.target("myorg/app-cache", "buildcache"))
    assert by_tag["export"]["digest"] == order[-1]
    by_digest = json_of("show", f"registry://{reg.host}/myorg/app-cache@{order[0]}")
    assert by_digest["export"]["digest"] == order[0]  # an older export nothing else lists
    spec = run_inprocess("ref", f"registry://{reg.host}/myorg/app-cache@{order[1]}")
    assert spec.code == 0 and order[1] in spec.out, spec.err
    r = run_inprocess("repair", reg.target("myorg/app-cache"))
    assert r.code == 2 and "registry" in r.err


def test_a_bad_tag_name_is_skipped_with_a_warning() -> None:
    with _fake_registry(None, tags=["../../etc", "ok\x1b[2J"]) as fake:
        host = fake.url("").split("//", 1)[1].rstrip("/")
        r = run_inprocess("history", f"registry://{host}/x/y")
    assert r.code == 0, r.err
    assert "which is not a tag: skipped" in r.err and "\x1b" not in r.err
    assert not any("etc" in q.path for q in fake.requests if "/manifests/" in q.path)


def test_a_silent_registry_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from fakehttp import SilentServer

    monkeypatch.setenv("OCICACHE_REGISTRY_TIMEOUT", "0.5")
    with SilentServer() as silent:
        start = time.monotonic()
        r = run_inprocess("history", f"registry://{silent.host}/x/y")
        took = time.monotonic() - start
    assert r.code == 9 and "timed out" in r.err, r.err
    assert took < 10


def test_a_target_naming_a_missing_tag_is_not_found(fixture_registry) -> None:
    reg = fixture_registry("reg-history")
    for command in ("history", "show", "ref", "du", "blobs"):
        r = run_inprocess(command, reg.target("myorg/app-cache", "no-such-tag"))
        assert r.code == 5, (command, r.err)
        assert "no-such-tag" in r.err and "buildcache" in r.err and len(r.err.strip().splitlines()) <= 2


def test_gc_lists_the_tags_again_before_deleting(tmp_path: Path) -> None:
    """A tag pushed onto a manifest between gc's plan and its deletes (a re-export of the same
    manifest, a pin from elsewhere) keeps that manifest: distribution would delete the tag with it."""
    import time

    from ocicache.core.gc_plan import Policy
    from ocicache.ops import registry as reg_ops
    from ocicache.store.targets import open_store, resolve_target

    root = unpack_storage("reg-history", tmp_path / "s")
    reg = start_registry(tmp_path / "r", root)
    try:
        order = registry_truth("reg-history")["final"]["export_manifest_digests_in_order"]
        source = resolve_target(reg.target("myorg/app-cache"), storage=str(root))
        warnings: list[str] = []
        with open_store(source) as store:
            inv, plan, expire = reg_ops.plan_gc(store, Policy(grace_ns=0), time.time_ns())
            assert {b.digest for b in plan.blobs if b.kind == "manifest"} == set(order[:-1])
            r = run_inprocess("pin", reg.target("myorg/app-cache"), order[0], "late-tag")
            assert r.code == 0, r.err
            done = reg_ops.apply_gc(store, inv, plan, False, warnings.append, expire)
        assert {b.digest for b in done.deleted} == set(order[1:-1])
        assert (order[0], "tag late-tag was pushed onto it during gc") in done.skipped
        assert head_status(reg, "myorg/app-cache", "manifests", "late-tag") == 200
    finally:
        reg.stop()
