"""store/registry/storage.py: distribution's storage directory read read-only, against the real
registry fixtures (fixtures/registry: what distribution 2.8.2 wrote when BuildKit pushed) and
against hostile directories (symlinks out, bad link files, bad names, FIFOs)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tree_state
from regserver import REGISTRY_CASES, registry_truth, unpack_storage

from ocicache.base.errors import NotACacheDirError, UsageError
from ocicache.store.registry.storage import (
    LINK_LIMIT,
    DistributionStorage,
    TagHistory,
    Upload,
    is_repository_name,
    is_tag_name,
)

HISTORY_REPO = "myorg/app-cache"
REPO_REL = f"docker/registry/v2/repositories/{HISTORY_REPO}"


def _hex(n: int) -> str:
    return f"{n:064x}"


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each registry fixture unpacked once for the module (the ground-truth tests only read)."""
    base = tmp_path_factory.mktemp("regstorage")
    return {case: unpack_storage(case, base) for case in REGISTRY_CASES}


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """A private copy of reg-history to spoil."""
    return unpack_storage("reg-history", tmp_path / "storage")


def _repos(case: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted(registry_truth(case)["final"]["repositories"].items())


CASE_REPOS = [(case, name) for case in REGISTRY_CASES for name, _ in _repos(case)]


# -- the real fixtures: what distribution wrote, read back -------------------------------------------
@pytest.mark.parametrize(("case", "name"), CASE_REPOS)
def test_fixture_matches_truth(unpacked: dict[str, Path], case: str, name: str) -> None:
    truth = registry_truth(case)["final"]
    repo = truth["repositories"][name]
    before = tree_state(unpacked[case])
    s = DistributionStorage(unpacked[case], name)
    assert s.repo == name
    assert s.v2 == unpacked[case] / "docker" / "registry" / "v2"

    tags = s.tags()
    assert {t: h.current for t, h in tags.items()} == repo["tags"]
    assert {t: [d for d, _ in h.index] for t, h in tags.items()} == repo["tag_history"]
    for tag, raw in repo["tags_raw"].items():
        want = {e["digest"]: e["link_mtime_ns"] for e in raw["index"] if e["link_ok"]}
        assert dict(tags[tag].index) == want
        assert tags[tag] == TagHistory(tag, raw["current"], tags[tag].index)
        times = [t for _, t in tags[tag].index]
        assert times == sorted(times)

    blobs = {b["digest"]: (b["size"], b["mtime_ns"]) for b in truth["blobs"]}
    revisions = s.revisions()
    assert set(revisions) == {r["digest"] for r in repo["revisions"]}
    for r in repo["revisions"]:
        got = revisions[r["digest"]]
        assert got.link_mtime_ns == r["revision_link_mtime_ns"]
        assert r["blob_present"]
        assert (got.size, got.data_mtime_ns) == blobs[r["digest"]]
        assert got.size == r["size"]
    link_times = [v.link_mtime_ns for v in revisions.values()]
    assert link_times == sorted(link_times)

    assert s.layer_links() == {x["digest"] for x in repo["layer_links"] if x["link_ok"]}
    for digest, (size, mtime_ns) in blobs.items():
        assert s.blob(digest) == (size, mtime_ns)
    assert repo["uploads"] == []
    assert s.uploads() == ()
    assert s.problems() == ()
    assert tree_state(unpacked[case]) == before  # read-only


@pytest.mark.parametrize("case", REGISTRY_CASES)
def test_root_may_be_the_v2_directory(unpacked: dict[str, Path], case: str) -> None:
    for name, _ in _repos(case):
        top = DistributionStorage(unpacked[case], name)
        v2 = DistributionStorage(unpacked[case] / "docker" / "registry" / "v2", name)
        assert v2.v2 == top.v2
        assert v2.tags() == top.tags()
        assert v2.revisions() == top.revisions()
        assert v2.layer_links() == top.layer_links()


def test_blobs_are_shared_between_repositories(unpacked: dict[str, Path]) -> None:
    truth = registry_truth("reg-mixed")["final"]
    app = DistributionStorage(unpacked["reg-mixed"], "app")
    other = DistributionStorage(unpacked["reg-mixed"], "other")
    both = {b["digest"] for b in truth["blobs"] if set(b["linked_in_repos"]) == {"app", "other"}}
    assert len(both) == 2
    assert both <= app.layer_links() & other.layer_links()
    assert not set(app.revisions()) & set(other.revisions())
    some = next(iter(app.revisions()))
    assert other.blob(some) == app.blob(some) is not None  # one blob store for all repositories


# -- roots and repositories that are not there ---------------------------------------------------------
def test_not_a_storage_root(tmp_path: Path) -> None:
    for root in (tmp_path / "missing", tmp_path):
        with pytest.raises(NotACacheDirError) as e:
            DistributionStorage(root, "app")
        assert str(root) in str(e.value)
        assert e.value.exit_code == 3
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotACacheDirError):
        DistributionStorage(tmp_path / "file", "app")
    (tmp_path / "docker" / "registry").mkdir(parents=True)
    (tmp_path / "docker" / "registry" / "v2").write_text("not a directory")
    with pytest.raises(NotACacheDirError, match="docker/registry/v2"):
        DistributionStorage(tmp_path, "app")


def test_a_symlinked_v2_is_not_followed(history: Path, tmp_path: Path) -> None:
    root = tmp_path / "evil-root"
    (root / "docker").mkdir(parents=True)
    os.symlink(history / "docker" / "registry", root / "docker" / "registry")
    with pytest.raises(NotACacheDirError, match="symlink"):
        DistributionStorage(root, HISTORY_REPO)
    # ROOT itself may be a symlink: it is the user's own path
    os.symlink(history, tmp_path / "link-to-root")
    assert DistributionStorage(tmp_path / "link-to-root", HISTORY_REPO).tags()


def test_repository_absent(history: Path) -> None:
    with pytest.raises(NotACacheDirError) as e:
        DistributionStorage(history, "nope/none")
    message = str(e.value)
    assert "nope/none" in message
    assert "app-cache" not in message  # says nothing of the repositories that are there
    with pytest.raises(NotACacheDirError, match="not a repository"):
        DistributionStorage(history, "myorg")  # a namespace only


def test_symlinked_repository_is_not_followed(history: Path) -> None:
    repos = history / "docker" / "registry" / "v2" / "repositories"
    os.symlink(repos / "myorg", repos / "alias")
    with pytest.raises(NotACacheDirError, match="symlink"):
        DistributionStorage(history, "alias/app-cache")


@pytest.mark.parametrize(
    "name",
    ["..", "../x", "a/../b", "a/./b", "/abs", "a//b", "a/", "", "MyOrg/app", "a b", "_layers", "a__-b",
     "a" * 256, "app:tag", "app@sha256", "-a", "a-"],
)  # fmt: skip
def test_bad_repository_names(history: Path, name: str) -> None:
    assert not is_repository_name(name)
    with pytest.raises(UsageError):
        DistributionStorage(history, name)


def test_good_repository_names() -> None:
    for name in ("app", "myorg/app-cache", "a/b/c", "a.b", "a_b", "a__b", "a---b", "x" * 255, "0"):
        assert is_repository_name(name), name


def test_repository_grammar_does_not_backtrack() -> None:
    start = time.perf_counter()
    for bad in ("a" * 250 + "!", "a-" * 120 + "!", ("a" * 30 + "/") * 8 + "!", "a__" * 80 + "_"):
        assert not is_repository_name(bad)
    assert time.perf_counter() - start < 0.5


def test_tag_names() -> None:
    for good in ("latest", "v1.2.3", "cache-main", "_x", "A" * 128, "a.b-c_d"):
        assert is_tag_name(good), good
    for bad in ("", ".hidden", "-x", "A" * 129, "a/b", "é", "a b", "a:b"):
        assert not is_tag_name(bad), bad


# -- hostile storage -------------------------------------------------------------------------------------
def _outside(tmp_path: Path, digest_hex: str) -> Path:
    """A file outside ROOT that looks like a link file, its atime far before its mtime (with
    relatime, reading it would move the atime)."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    f = outside / "link"
    f.write_text(f"sha256:{digest_hex}")
    now = time.time_ns()
    os.utime(f, ns=(1_000_000_000, now))
    (outside / "data").write_bytes(b"secret" * 100)
    os.utime(outside / "data", ns=(1_000_000_000, now))
    return outside


def _atime_moves(tmp_path: Path) -> bool:
    probe = tmp_path / "outside" / "probe"
    probe.write_text("x")
    os.utime(probe, ns=(1_000_000_000, time.time_ns()))
    probe.read_text()
    return os.stat(probe).st_atime_ns != 1_000_000_000


def _assert_untouched(tmp_path: Path, outside: Path) -> None:
    if _atime_moves(tmp_path):
        for name in ("link", "data"):
            assert os.stat(outside / name).st_atime_ns == 1_000_000_000, f"{name} outside ROOT was read"


def _everything(s: DistributionStorage) -> str:
    return repr((s.tags(), s.revisions(), s.layer_links(), s.uploads(), s.problems()))


def test_symlinks_below_root_are_never_followed(history: Path, tmp_path: Path) -> None:
    secret = "e" * 64
    outside = _outside(tmp_path, secret)
    repo = history / REPO_REL
    tags = repo / "_manifests" / "tags"
    os.symlink(tags / "buildcache", tags / "evil-tag")  # a symlinked tag directory
    (tags / "linked-current" / "current").mkdir(parents=True)  # a tag whose current/link is a symlink
    os.symlink(outside / "link", tags / "linked-current" / "current" / "link")
    (tags / "passwd" / "current").mkdir(parents=True)
    os.symlink("/etc/passwd", tags / "passwd" / "current" / "link")
    os.symlink(outside, tags / "buildcache" / "index" / "sha256" / secret)  # a symlinked index entry
    revisions = repo / "_manifests" / "revisions" / "sha256"
    os.symlink(outside, revisions / secret)  # a symlinked revision directory
    layer = next((repo / "_layers" / "sha256").iterdir())
    (layer / "link").unlink()
    os.symlink(outside / "link", layer / "link")  # a symlinked layer link
    before = tree_state(tmp_path)

    s = DistributionStorage(history, HISTORY_REPO)
    text = _everything(s)
    assert secret not in text.replace(f"sha256/{secret}", "")  # named as a path only, never read
    assert "root:" not in text
    got = s.tags()
    assert set(got) == {"buildcache", "linked-current", "passwd"}
    assert got["linked-current"].current is None
    assert got["passwd"].current is None
    assert len(got["buildcache"].index) == 4
    assert f"sha256:{layer.name}" not in s.layer_links()
    assert len(s.layer_links()) == 10
    problems = "\n".join(s.problems())
    for rel in (
        f"{REPO_REL}/_manifests/tags/evil-tag: a symlink",
        f"{REPO_REL}/_manifests/tags/linked-current/current/link: a symlink",
        f"{REPO_REL}/_manifests/tags/passwd/current/link: a symlink",
        f"{REPO_REL}/_manifests/tags/buildcache/index/sha256/{secret}: a symlink",
        f"{REPO_REL}/_manifests/revisions/sha256/{secret}: a symlink",
        f"{REPO_REL}/_layers/sha256/{layer.name}/link: a symlink",
    ):
        assert rel in problems, rel
    assert tree_state(tmp_path) == before
    _assert_untouched(tmp_path, outside)


def test_symlinked_directories_of_the_layout(history: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path, "d" * 64)
    repo = history / REPO_REL
    index = repo / "_manifests" / "tags" / "buildcache" / "index"
    index.rename(tmp_path / "moved-index")
    os.symlink(tmp_path / "moved-index", index)
    layers = repo / "_layers"
    layers.rename(tmp_path / "moved-layers")
    os.symlink(tmp_path / "moved-layers", layers)
    s = DistributionStorage(history, HISTORY_REPO)
    assert s.tags()["buildcache"].index == ()
    assert s.tags()["buildcache"].current is not None
    assert s.layer_links() == frozenset()
    assert len(s.revisions()) == 4
    problems = s.problems()
    assert f"{REPO_REL}/_manifests/tags/buildcache/index: a symlink, not followed" in problems
    assert f"{REPO_REL}/_layers: a symlink, not followed" in problems
    _assert_untouched(tmp_path, outside)


def test_symlinked_manifests_directory(history: Path, tmp_path: Path) -> None:
    manifests = history / REPO_REL / "_manifests"
    manifests.rename(tmp_path / "moved")
    os.symlink(tmp_path / "moved", manifests)
    s = DistributionStorage(history, HISTORY_REPO)  # _layers and _uploads are still directories
    assert s.tags() == {}
    assert s.revisions() == {}
    assert len(s.layer_links()) == 11
    assert s.problems() == (f"{REPO_REL}/_manifests: a symlink, not followed",)


def test_blob_data_symlinks(history: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path, "c" * 64)
    s0 = DistributionStorage(history, HISTORY_REPO)
    digest = next(iter(s0.revisions()))
    hexpart = digest.split(":", 1)[1]
    blob_dir = history / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart
    (blob_dir / "data").unlink()
    os.symlink(outside / "data", blob_dir / "data")
    other = sorted(s0.layer_links())[0].split(":", 1)[1]
    other_dir = history / "docker/registry/v2/blobs/sha256" / other[:2] / other
    other_dir.rename(tmp_path / "moved-blob")
    os.symlink(tmp_path / "moved-blob", other_dir)

    s = DistributionStorage(history, HISTORY_REPO)
    assert s.blob(digest) is None
    assert s.blob(f"sha256:{other}") is None
    rev = s.revisions()[digest]
    assert (rev.size, rev.data_mtime_ns) == (None, None)
    assert rev.link_mtime_ns == s0.revisions()[digest].link_mtime_ns
    problems = s.problems()
    rel = f"docker/registry/v2/blobs/sha256/{hexpart[:2]}/{hexpart}"
    assert f"{rel}/data: a symlink, not followed" in problems
    assert f"docker/registry/v2/blobs/sha256/{other[:2]}/{other}: a symlink, not followed" in problems
    _assert_untouched(tmp_path, outside)


def test_bad_link_files(history: Path) -> None:
    repo = history / REPO_REL
    revisions = repo / "_manifests" / "revisions" / "sha256"
    for i, content in enumerate(
        [b"hello", b"\x00" * 10, b"sha256:" + b"A" * 64, b"sha256:" + b"a" * 63, b"md5:" + b"a" * 32, b""]
    ):
        d = revisions / _hex(i + 1)
        d.mkdir()
        (d / "link").write_bytes(content)
    big = revisions / _hex(100)
    big.mkdir()
    (big / "link").write_bytes(b"sha256:" + _hex(100).encode() + b" " * (1 << 20))
    limit = revisions / _hex(101)
    limit.mkdir()
    (limit / "link").write_bytes(b"sha256:" + _hex(101).encode() + b" " * (LINK_LIMIT - 71 + 1))
    wrong = revisions / _hex(102)
    wrong.mkdir()
    (wrong / "link").write_text(f"sha256:{_hex(103)}")  # names another digest than its directory
    spaced = revisions / _hex(104)
    spaced.mkdir()
    (spaced / "link").write_text(f"  sha256:{_hex(104)}\n")  # whitespace around it: accepted
    fifo = revisions / _hex(105)
    fifo.mkdir()
    os.mkfifo(fifo / "link")  # never opened (it would block a plain open)
    directory = revisions / _hex(106)
    (directory / "link").mkdir(parents=True)
    deleted = revisions / _hex(107)
    deleted.mkdir()  # a revision deleted through the API: its link only is gone

    s = DistributionStorage(history, HISTORY_REPO)
    got = s.revisions()
    assert len(got) == 5
    assert f"sha256:{_hex(104)}" in got
    assert got[f"sha256:{_hex(104)}"].size is None  # no blob
    problems = "\n".join(s.problems())
    base = f"{REPO_REL}/_manifests/revisions/sha256"
    for i in range(1, 7):
        assert f"{base}/{_hex(i)}/link: not a link file" in problems
    assert f"{base}/{_hex(100)}/link: {(1 << 20) + 71} bytes, more than the {LINK_LIMIT}" in problems
    assert f"{base}/{_hex(101)}/link: {LINK_LIMIT + 1} bytes" in problems
    assert f"{base}/{_hex(102)}/link: names sha256:{_hex(103)}" in problems
    assert f"{base}/{_hex(105)}/link: not a regular file" in problems
    assert f"{base}/{_hex(106)}/link: a directory, not a file" in problems
    assert _hex(107) not in problems
    assert _hex(104) not in problems
    assert "hello" not in problems  # content is never repeated


def test_bad_names(history: Path) -> None:
    repo = history / REPO_REL
    revisions = repo / "_manifests" / "revisions"
    names = ["ZZ", "a" * 63, "a" * 65, "A" * 64, "g" * 64, "..a", " " + "a" * 63]
    for name in names:
        (revisions / "sha256" / name).mkdir()
        (revisions / "sha256" / name / "link").write_text(f"sha256:{'a' * 64}")
    (revisions / "sha256" / ("b" * 64)).write_text("a file, not a directory")
    (revisions / "md5" / ("a" * 32)).mkdir(parents=True)
    (revisions / "README").write_text("x")
    tags = repo / "_manifests" / "tags"
    for tag in (".hidden", "-dash", "x" * 129, "sp ace", "é"):
        (tags / tag / "current").mkdir(parents=True)
        (tags / tag / "current" / "link").write_text(f"sha256:{'a' * 64}")
    uploads = repo / "_uploads"
    (uploads / "not-a-uuid").mkdir()

    s = DistributionStorage(history, HISTORY_REPO)
    assert len(s.revisions()) == 4
    assert set(s.tags()) == {"buildcache"}
    problems = s.problems()
    base = f"{REPO_REL}/_manifests/revisions"
    for name in names:
        assert f"{base}/sha256/{name}: not a sha256 digest name; skipped" in problems
    assert f"{base}/sha256/{'b' * 64}: not a directory" in problems
    assert f"{base}/md5: not a digest algorithm directory (sha256, sha512); skipped" in problems
    assert f"{base}/README: not a digest algorithm directory (sha256, sha512); skipped" in problems
    for tag in (".hidden", "-dash", "x" * 129, "sp ace", "é"):
        assert f"{REPO_REL}/_manifests/tags/{tag}: not a tag name; skipped" in problems
    assert f"{REPO_REL}/_uploads/not-a-uuid: not an upload UUID; skipped" in problems
    assert "a" * 64 not in repr((s.tags(), s.revisions()))


def test_sha512_and_mtime_order(history: Path) -> None:
    repo = history / REPO_REL
    h512 = "f" * 128
    d = repo / "_manifests" / "revisions" / "sha512" / h512
    d.mkdir(parents=True)
    (d / "link").write_text(f"sha512:{h512}")
    (repo / "_manifests" / "revisions" / "sha512" / ("f" * 64)).mkdir()  # a sha256 length under sha512
    index = repo / "_manifests" / "tags" / "moved" / "index" / "sha256"
    stamps = {_hex(3): 300, _hex(1): 100, _hex(2): 200, _hex(4): 200}  # a tie: by digest
    for hexpart, t in stamps.items():
        (index / hexpart).mkdir(parents=True)
        (index / hexpart / "link").write_text(f"sha256:{hexpart}")
        os.utime(index / hexpart / "link", ns=(t, t))
    (repo / "_manifests" / "tags" / "moved" / "current").mkdir()
    (repo / "_manifests" / "tags" / "moved" / "current" / "link").write_text(f"sha256:{_hex(3)}")

    s = DistributionStorage(history, HISTORY_REPO)
    assert s.revisions()[f"sha512:{h512}"].size is None
    order = ((_hex(1), 100), (_hex(2), 200), (_hex(4), 200), (_hex(3), 300))
    want = tuple((f"sha256:{h}", t) for h, t in order)
    assert s.tags()["moved"] == TagHistory("moved", f"sha256:{_hex(3)}", want)
    short = f"{REPO_REL}/_manifests/revisions/sha512/{'f' * 64}"
    assert f"{short}: not a sha512 digest name; skipped" in s.problems()


def test_tag_without_current(history: Path) -> None:
    tags = history / REPO_REL / "_manifests" / "tags"
    (tags / "gone" / "index").mkdir(parents=True)
    (tags / "nolink" / "current").mkdir(parents=True)
    s = DistributionStorage(history, HISTORY_REPO)
    assert s.tags()["gone"] == TagHistory("gone", None, ())
    assert s.tags()["nolink"] == TagHistory("nolink", None, ())
    assert f"{REPO_REL}/_manifests/tags/gone/current: missing" in s.problems()
    assert f"{REPO_REL}/_manifests/tags/nolink/current/link: missing" in s.problems()


def test_uploads(history: Path, tmp_path: Path) -> None:
    outside = _outside(tmp_path, "b" * 64)
    uploads = history / REPO_REL / "_uploads"
    a, b, c, d, e = (f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(1, 6))
    (uploads / a / "hashstates" / "sha256").mkdir(parents=True)
    (uploads / a / "data").write_bytes(b"x" * 1234)
    (uploads / a / "startedat").write_text("2026-12-01T08:01:45Z")
    (uploads / a / "hashstates" / "sha256" / "1234").write_bytes(b"state")
    (uploads / b).mkdir()
    (uploads / b / "data").write_bytes(b"")
    (uploads / b / "startedat").write_text("2026-11-30T08:00:00.5+01:00")
    (uploads / c).mkdir()  # no data, no startedat
    (uploads / d).mkdir()
    (uploads / d / "data").write_bytes(b"y" * 10)
    (uploads / d / "startedat").write_text("yesterday")
    (uploads / e).mkdir()
    os.symlink(outside / "data", uploads / e / "data")
    s = DistributionStorage(history, HISTORY_REPO)
    assert s.uploads() == (
        Upload(b, 0, 1_796_022_000_500_000_000),
        Upload(a, 1234, 1_796_112_105_000_000_000),
        Upload(c, 0, None),
        Upload(d, 10, None),
    )
    problems = s.problems()
    assert f"{REPO_REL}/_uploads/{d}/startedat: not an RFC 3339 time (9 bytes)" in problems
    assert f"{REPO_REL}/_uploads/{e}/data: a symlink, not followed; upload skipped" in problems
    _assert_untouched(tmp_path, outside)


def test_blob_lookups(history: Path) -> None:
    s = DistributionStorage(history, HISTORY_REPO)
    assert s.blob(f"sha256:{_hex(7)}") is None
    assert s.blob(f"sha512:{'a' * 128}") is None
    for bad in ("sha256:../../x", "sha256:" + "a" * 63, "md5:" + "a" * 32, "../etc/passwd", ""):
        with pytest.raises(UsageError):
            s.blob(bad)
    assert s.problems() == ()


def test_unreadable_directory_is_said(history: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    index = history / REPO_REL / "_manifests" / "tags" / "buildcache" / "index" / "sha256"
    index.chmod(0o000)
    try:
        s = DistributionStorage(history, HISTORY_REPO)
        assert s.tags()["buildcache"].index == ()
        assert any("buildcache/index/sha256: " in p for p in s.problems())
    finally:
        index.chmod(0o755)


def test_a_snapshot_of_one_read(history: Path) -> None:
    s = DistributionStorage(history, HISTORY_REPO)
    first = s.tags()
    (history / REPO_REL / "_manifests" / "tags" / "buildcache").rename(
        history / REPO_REL / "_manifests" / "tags" / "renamed"
    )
    assert s.tags() == first
    assert set(DistributionStorage(history, HISTORY_REPO).tags()) == {"renamed"}
