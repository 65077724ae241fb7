"""Hostile input: every case gives a documented exit code and a clear message, never a traceback,
never a hang, never a read or write outside DIR; read-only commands leave the tree unchanged.

The suite is a table of cases x commands. Each case builds a directory in tmp_path (a valid
synthetic layout, then one injected fault) and says which exit code each command must give.
Commands added later (gc, ref, pin) extend COMMANDS and each case's `exits`; a deleting
command also needs an assertion that every blob an export still needs survives.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from clirun import DOCUMENTED, Run, run_inprocess, run_subprocess, tree
from foreign_helpers import Store, tar_gz

from ocicache.format import mediatypes as mt
from ocicache.synth import Builder, compact

SECRET = "S3CRET-OUTSIDE-DIR"  # in files outside DIR: must never show up in any output
OLD_ATIME = 1_000_000_000 * 10**9  # 2001: older than the mtime, so any read would bump it

# command name -> argv after "ocicache"; DIR is substituted.
COMMANDS: dict[str, tuple[str, ...]] = {
    "history": ("history", "DIR"),
    "show": ("show", "DIR"),
    "blobs": ("blobs", "DIR"),
    "du": ("du", "DIR"),
    "check": ("check", "--json", "DIR"),
    "check-quick": ("check", "--quick", "DIR"),
}
READ_ONLY = tuple(COMMANDS)  # every command above must leave DIR exactly as it was


@dataclass
class Base:
    """A valid layout: two exports of one tag (the older one only in blobs/), 3 layers."""

    root: Path
    b: Builder
    old: str
    new: str
    layers: list[str]


@dataclass
class Case:
    name: str
    make: Callable[[Base, Path], str | None]  # returns a digest/file the findings must name
    exits: dict[str, int]  # expected exit code per command (missing: 0)
    codes: set[str] = field(default_factory=set)  # finding codes `check` must report
    clean: bool = False  # `check` must find nothing at all


def blob(root: Path, digest: str) -> Path:
    alg, hexpart = digest.split(":", 1)
    return root / "blobs" / alg / hexpart


def put_raw(root: Path, name: str, data: bytes) -> Path:
    p = root / "blobs" / "sha256" / name
    p.write_bytes(data)
    return p


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def index_with(base: Base, entries: list[dict[str, object]]) -> None:
    (base.root / "index.json").write_bytes(
        compact({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    )


def entry(digest: str, size: object = 10, tag: str = "latest") -> dict[str, object]:
    return {
        "mediaType": mt.OCI_MANIFEST,
        "digest": digest,
        "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }


def secret_file(outside: Path, name: str, content: bytes | None = None) -> Path:
    p = outside / name
    p.write_bytes(content if content is not None else SECRET.encode() * 4)
    st = p.stat()
    os.utime(p, ns=(OLD_ATIME, st.st_mtime_ns))
    return p


def swap_for_symlink(base: Base, digest: str, target: Path) -> None:
    p = blob(base.root, digest)
    target.write_bytes(p.read_bytes() + SECRET.encode())
    os.utime(target, ns=(OLD_ATIME, target.stat().st_mtime_ns))
    p.unlink()
    p.symlink_to(target)


def manifest_with(base: Base, config: dict[str, object], layers: list[str], tag: str = "latest") -> str:
    """A shape-A cache manifest over a hand-written cache config, pointed at by `tag`."""
    b = base.b
    cdata = compact(config)
    cdig = b.blob(cdata)
    descs = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": blob(base.root, d).stat().st_size,
        }
        for d in layers
    ]
    m = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": cdig, "size": len(cdata)},
            "layers": descs,
        }
    )
    mdig = b.blob(m)
    b.point(tag, mdig, len(m))
    return mdig


NEEDS_INDEX = {"history": 4, "show": 4}


# -- the cases -------------------------------------------------------------------------------
CASES: list[Case] = []


def case(
    name: str,
    exits: dict[str, int] | None = None,
    codes: set[str] | None = None,
    clean: bool = False,
) -> Callable[[Callable[[Base, Path], str | None]], Callable[[Base, Path], str | None]]:
    def wrap(fn: Callable[[Base, Path], str | None]) -> Callable[[Base, Path], str | None]:
        CASES.append(Case(name, fn, exits or {}, codes or set(), clean))
        return fn

    return wrap


TORN = {**NEEDS_INDEX, "check": 1, "check-quick": 1}
BROKEN = {"check": 1, "check-quick": 1}


@case("clean")
def _clean(base: Base, outside: Path) -> None:
    return None


# digests in documents: ../, absolute paths, upper-case hex, wrong lengths, unknown algorithms
@case("index-digest-dotdot", TORN, {"invalid-document"})
def _dotdot(base: Base, outside: Path) -> str:
    secret_file(outside, "passwd")
    index_with(base, [entry("sha256:../../../outside/passwd")])
    return "index.json"


@case("index-digest-absolute", TORN, {"invalid-document"})
def _absolute(base: Base, outside: Path) -> str:
    index_with(base, [entry(str(outside / "passwd"))])
    return "index.json"


@case("index-digest-uppercase", TORN, {"invalid-document"})
def _upper(base: Base, outside: Path) -> str:
    index_with(base, [entry(base.new.upper().replace("SHA256", "sha256"))])
    return "index.json"


@case("index-digest-short", TORN, {"invalid-document"})
def _short(base: Base, outside: Path) -> str:
    index_with(base, [entry(base.new[:-1])])
    return "index.json"


@case("index-digest-unknown-algorithm", BROKEN, {"index-missing-manifest"})
def _unknown_alg(base: Base, outside: Path) -> str:
    index_with(base, [entry("md5:" + "0" * 32)])
    return "md5:" + "0" * 32


@case("layer-digest-dotdot", BROKEN, {"invalid-document"})
def _layer_dotdot(base: Base, outside: Path) -> str:
    data = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": "sha256:../../../x", "size": 1},
            "layers": [{"mediaType": "x", "digest": "/etc/passwd", "size": 1}],
        }
    )
    d = base.b.blob(data)
    base.b.point("evil", d, len(data))
    return d


# file names in blobs/
@case("blob-names", codes={"bad-name", "stray"})
def _names(base: Base, outside: Path) -> str:
    hexpart = base.layers[0].split(":")[1]
    put_raw(base.root, hexpart.upper(), b"x")
    put_raw(base.root, hexpart[:-1], b"x")
    put_raw(base.root, "name.tmp", b"x")
    (base.root / "blobs" / "md5").mkdir()
    (base.root / "blobs" / "md5" / ("0" * 32)).write_bytes(b"x")
    return "name.tmp"


# blobs that are not regular files
@case("blob-symlink-outside", {"check": 1, "check-quick": 1}, {"missing-blob", "stray"})
def _symlink_out(base: Base, outside: Path) -> str:
    swap_for_symlink(base, base.layers[1], outside / "layer")
    return base.layers[1]


@case("manifest-symlink-outside", {**BROKEN}, {"index-missing-manifest", "stray"})
def _manifest_symlink(base: Base, outside: Path) -> str:
    swap_for_symlink(base, base.new, outside / "manifest.json")
    return base.new


@case("blob-symlink-to-dir", BROKEN, {"missing-blob", "stray"})
def _symlink_dir(base: Base, outside: Path) -> str:
    p = blob(base.root, base.layers[2])
    p.unlink()
    (outside / "d").mkdir()
    p.symlink_to(outside / "d")
    return base.layers[2]


@case("blob-fifo", BROKEN, {"missing-blob", "stray"})
def _fifo(base: Base, outside: Path) -> str:
    p = blob(base.root, base.layers[2])
    p.unlink()
    os.mkfifo(p)
    return base.layers[2]


@case("blob-directory", BROKEN, {"missing-blob", "stray"})
def _blob_dir(base: Base, outside: Path) -> str:
    p = blob(base.root, base.layers[0])
    p.unlink()
    p.mkdir()
    (p / "x").write_bytes(b"x")
    return base.layers[0]


@case("blobs-symlink", BROKEN, {"index-missing-manifest", "stray"})
def _blobs_symlink(base: Base, outside: Path) -> str:
    (base.root / "blobs").rename(outside / "blobs")
    (base.root / "blobs").symlink_to(outside / "blobs")
    return "blobs"


@case("blobs-regular-file", BROKEN, {"index-missing-manifest"})
def _blobs_file(base: Base, outside: Path) -> str:
    shutil.rmtree(base.root / "blobs")
    (base.root / "blobs").write_bytes(b"not a folder")
    return "blobs"


@case("blob-corrupt", {"check": 1}, {"digest-mismatch"})
def _corrupt(base: Base, outside: Path) -> str:
    p = blob(base.root, base.layers[1])
    os.chmod(p, 0o644)
    data = bytearray(p.read_bytes())
    data[5] ^= 0xFF
    p.write_bytes(bytes(data))
    return base.layers[1]


@case("blob-truncated", BROKEN, {"size-mismatch"})
def _truncated(base: Base, outside: Path) -> str:
    p = blob(base.root, base.layers[1])
    os.chmod(p, 0o644)
    os.truncate(p, 10)
    return base.layers[1]


@case("blob-missing", BROKEN, {"missing-blob"})
def _missing(base: Base, outside: Path) -> str:
    blob(base.root, base.layers[0]).unlink()
    return base.layers[0]


# index.json
@case("index-empty", TORN, {"torn-index"})
def _index_empty(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b"")
    return "index.json"


@case("index-truncated", TORN, {"torn-index"})
def _index_trunc(base: Base, outside: Path) -> str:
    p = base.root / "index.json"
    p.write_bytes(p.read_bytes()[:-20])
    return "index.json"


@case("index-missing", TORN, {"missing-index"})
def _index_missing(base: Base, outside: Path) -> str:
    (base.root / "index.json").unlink()
    return "index.json"


@case("index-sparse-4g", TORN, {"oversize-index"})
def _index_huge(base: Base, outside: Path) -> str:
    """Over ocicache's index.json limit: reported as too large (the limit named), not torn."""
    os.truncate(base.root / "index.json", 4 << 30)  # sparse: costs no disk
    return "256 MiB"


@case("index-over-16mib-valid")
def _index_big_valid(base: Base, outside: Path) -> None:
    """A valid index.json past the old 16 MiB read limit: read like any other."""
    size = blob(base.root, base.new).stat().st_size
    big = {
        **entry(base.new, size),
        "annotations": {"org.opencontainers.image.ref.name": "latest", "dev.example.note": "x" * (17 << 20)},
    }
    index_with(base, [big])


# index.json names nothing on disk while blobs/ holds exports: gc refuses (unless --all),
# repair points `latest` at the newest export, check warns.
@case("index-no-entries", codes={"index-names-nothing"})
def _index_no_entries(base: Base, outside: Path) -> str:
    index_with(base, [])
    return "index.json"


@case("index-only-missing-foreign", BROKEN, {"index-names-nothing", "index-missing-manifest"})
def _index_only_missing(base: Base, outside: Path) -> str:
    gone = sha(b"a foreign image index nobody kept")
    index_with(base, [{"mediaType": mt.OCI_INDEX, "digest": gone, "size": 33}])
    return gone


@case("bare-store", TORN, {"missing-index"})
def _bare_store(base: Base, outside: Path) -> str:
    """A content store with blobs/ and ingest/ but no index.json and no cache manifest (only
    layers): repair has nothing to point an index at and must not write an empty one."""
    for digest in (base.new, base.old):
        doc = json.loads(blob(base.root, digest).read_bytes())
        blob(base.root, doc["config"]["digest"]).unlink(missing_ok=True)
        blob(base.root, digest).unlink()
    (base.root / "index.json").unlink()
    base.b.ingest("d" * 64, 10, 100)
    return "index.json"


# index.json.lock that is not a regular file: read commands read without it (and warn), the
# writers refuse (exit 6, the file named), nothing hangs, nothing outside DIR is touched.
def _bind_socket(path: Path) -> None:
    import socket

    cwd = os.getcwd()
    os.chdir(path.parent)  # AF_UNIX paths are limited to ~108 bytes: bind a relative name
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path.name)
        sock.close()  # the socket file stays
    finally:
        os.chdir(cwd)


@case("lock-fifo", codes={"unusable-lock"})
def _lock_fifo(base: Base, outside: Path) -> str:
    os.mkfifo(base.root / "index.json.lock")
    return "index.json.lock"


@case("lock-directory", codes={"unusable-lock"})
def _lock_dir(base: Base, outside: Path) -> str:
    (base.root / "index.json.lock").mkdir()
    return "index.json.lock"


@case("lock-socket", codes={"unusable-lock"})
def _lock_socket(base: Base, outside: Path) -> str:
    _bind_socket(base.root / "index.json.lock")
    return "index.json.lock"


@case("lock-symlink-outside", codes={"unusable-lock"})
def _lock_symlink(base: Base, outside: Path) -> str:
    (base.root / "index.json.lock").symlink_to(secret_file(outside, "lock"))
    return "index.json.lock"


@case("lock-leftover")
def _lock_leftover(base: Base, outside: Path) -> None:
    """A regular lock file nobody holds (left by a killed BuildKit): read under it, kept."""
    (base.root / "index.json.lock").write_bytes(b"")


@case("index-deep", TORN, {"torn-index"})
def _index_deep(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b'{"manifests":' + b"[" * 200_000)
    return "index.json"


@case("index-deep-closed", TORN, {"torn-index"})
def _index_deep_closed(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    return "index.json"


@case("index-not-utf8", TORN, {"torn-index"})
def _index_latin1(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b'{"schemaVersion":2,"manifests":[],"x":"\xe9"}')
    return "index.json"


@case("index-duplicate-keys", TORN, {"torn-index"})
def _index_dup(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b'{"schemaVersion":2,"schemaVersion":2,"manifests":[]}')
    return "index.json"


@case("index-nan", TORN, {"torn-index"})
def _index_nan(base: Base, outside: Path) -> str:
    (base.root / "index.json").write_bytes(b'{"schemaVersion":NaN,"manifests":[]}')
    return "index.json"


for _label, _size in (
    ("negative", -1),
    ("fractional", 1.5),
    ("over-int64", 2**63),
    ("huge-float", "1e400"),
    ("string", "12"),
):

    def _mk(base: Base, outside: Path, size: object = _size) -> str:
        raw = size if isinstance(size, str) and size.startswith("1e") else json.dumps(size)
        e = compact(entry(base.new))
        e = e.replace(b'"size":10', b'"size":' + str(raw).encode())
        (base.root / "index.json").write_bytes(b'{"schemaVersion":2,"manifests":[' + e + b"]}")
        return "index.json"

    CASES.append(Case(f"index-size-{_label}", _mk, TORN, {"invalid-document"}))


@case("index-symlink-outside", TORN, {"torn-index"})
def _index_symlink(base: Base, outside: Path) -> str:
    target = secret_file(
        outside, "index.json", (base.root / "index.json").read_bytes().replace(b"latest", SECRET.encode())
    )
    (base.root / "index.json").unlink()
    (base.root / "index.json").symlink_to(target)
    return "index.json"


@case("index-fifo", TORN, {"torn-index"})
def _index_fifo(base: Base, outside: Path) -> str:
    (base.root / "index.json").unlink()
    os.mkfifo(base.root / "index.json")
    return "index.json"


@case("index-directory", TORN, {"torn-index"})
def _index_dir(base: Base, outside: Path) -> str:
    (base.root / "index.json").unlink()
    (base.root / "index.json").mkdir()
    return "index.json"


@case("index-entry-wrong-size", BROKEN, {"size-mismatch"})
def _index_size(base: Base, outside: Path) -> str:
    index_with(base, [entry(base.new, size=12)])
    return base.new


@case("index-points-at-missing", BROKEN, {"index-missing-manifest"})
def _index_missing_manifest(base: Base, outside: Path) -> str:
    gone = sha(b"gone")
    base.b.point("gone", gone, 4)
    return gone


# documents in blobs/
@case("manifest-self-reference", BROKEN, {"self-reference"})
def _self_ref(base: Base, outside: Path) -> str:
    name = hashlib.sha256(b"self").hexdigest()
    digest = "sha256:" + name
    data = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.CACHE_CONFIG, "digest": digest, "size": 1},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": 1}
            ],
        }
    )
    put_raw(base.root, name, data)
    base.b.point("self", digest, len(data))
    return digest


@case("config-parent-loop", BROKEN, {"config-loop"})
def _loop(base: Base, outside: Path) -> str:
    l0, l1 = base.layers[:2]
    manifest_with(
        base, {"layers": [{"blob": l0, "parent": 1}, {"blob": l1}], "records": []}, [l0, l1], tag="loop"
    )
    return "parent links form a loop"


@case("config-self-parent", BROKEN, {"config-loop"})
def _self_parent(base: Base, outside: Path) -> str:
    l0 = base.layers[0]
    manifest_with(base, {"layers": [{"blob": l0}], "records": []}, [l0], tag="selfparent")
    return "own parent"


@case("config-out-of-range", BROKEN, {"config-out-of-range"})
def _out_of_range(base: Base, outside: Path) -> str:
    l0 = base.layers[0]
    manifest_with(
        base,
        {"layers": [{"blob": l0, "parent": 7}], "records": [{"digest": sha(b"r"), "layers": [{"layer": 9}]}]},
        [l0],
        tag="oor",
    )
    return "out of range"


def _raw_export(
    base: Base, config: bytes, layers: list[str], tag: str, edit: Callable[[bytes], bytes] = lambda m: m
) -> str:
    """A shape-A export over these exact config bytes; `edit` rewrites the manifest's bytes."""
    b = base.b
    cdig = b.blob(config)
    descs = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": d,
            "size": blob(base.root, d).stat().st_size,
        }
        for d in layers
    ]
    m = edit(
        compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": {"mediaType": mt.CACHE_CONFIG, "digest": cdig, "size": len(config)},
                "layers": descs,
            }
        )
    )
    mdig = b.blob(m)
    b.point(tag, mdig, len(m))
    return mdig


@case("manifest-duplicate-keys", codes={"duplicate-key"})
def _dup_manifest(base: Base, outside: Path) -> str:
    """A key repeated in a cache manifest: BuildKit (Go) keeps the last value, so does ocicache
    (the first value here is invalid); a warning, not an error."""
    l0 = base.layers[0]
    return _raw_export(
        base,
        compact({"layers": [{"blob": l0, "parent": -1}], "records": []}),
        [l0],
        "dupm",
        lambda m: m.replace(b'{"schemaVersion":2,', b'{"schemaVersion":1,"schemaVersion":2,'),
    )


@case("config-duplicate-keys", codes={"duplicate-key"})
def _dup_config(base: Base, outside: Path) -> str:
    """A parent repeated in a cache config: the last one (-1) counts, the first (7) would be out
    of range."""
    l0 = base.layers[0]
    config = b'{"layers":[{"blob":"%s","parent":7,"parent":-1}],"records":[]}' % l0.encode()
    _raw_export(base, config, [l0], "dupc")
    return sha(config)


@case("manifest-deeply-nested", BROKEN, {"invalid-document"})
def _deep_blob(base: Base, outside: Path) -> str:
    data = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    d = base.b.blob(data)
    base.b.point("deep", d, len(data))
    return d


@case("blob-json-like-unreferenced", codes={"unreferenced-blob"})
def _json_like(base: Base, outside: Path) -> str:
    """A blob that only starts like JSON (a layer of some unknown export): a leftover."""
    return base.b.blob(b"{\x00\xff not json" * 100)


@case("manifest-oversize", codes={"oversize-document"})
def _oversize(base: Base, outside: Path) -> str:
    l0 = base.layers[0]
    return manifest_with(
        base,
        {
            "layers": [{"blob": l0, "parent": -1}],
            "records": [{"digest": sha(str(i).encode())} for i in range(16_000)],
        },
        [l0],
        tag="big",
    )


@case("blob-mode-0666", codes={"mode-0666"})
def _mode(base: Base, outside: Path) -> str:
    os.chmod(blob(base.root, base.layers[0]), 0o666)
    return base.layers[0]


@case("stale-ingest-hostile", codes={"stale-ingest"})
def _ingest(base: Base, outside: Path) -> str:
    base.b.ingest("a" * 64, 10, 100)
    d = base.root / "ingest" / ("b" * 64)
    d.mkdir()
    (d / "ref").symlink_to(secret_file(outside, "ref"))
    os.mkfifo(d / "total")
    (base.root / "ingest" / "c").symlink_to(outside)
    return "ingest/" + "a" * 64


@case("oci-layout-hostile", codes={"invalid-document"})
def _oci_layout(base: Base, outside: Path) -> str:
    (base.root / "oci-layout").unlink()
    (base.root / "oci-layout").symlink_to(secret_file(outside, "oci-layout"))
    return "oci-layout"


# gc's own folder (DIR/.ocicache, quarantine.py): never followed out of DIR, odd entries left alone
@case("quarantine-symlink", codes={"stray"})
def _own_symlink(base: Base, outside: Path) -> str:
    fake = outside / "own" / "quarantine" / "q-1-1" / "sha256"
    fake.mkdir(parents=True)
    (fake / base.layers[0][7:]).write_text(SECRET)
    (base.root / ".ocicache").symlink_to(outside / "own")
    return ".ocicache"


@case("quarantine-hostile", codes={"stray", "quarantine"})
def _own_hostile(base: Base, outside: Path) -> str:
    q = base.root / ".ocicache" / "quarantine"
    (q / "not-a-batch").mkdir(parents=True)
    batch = q / "q-1000-1" / "sha256"
    batch.mkdir(parents=True)
    (batch / ("e" * 64)).symlink_to(secret_file(outside, "held"))
    os.mkfifo(batch / ("f" * 64))
    (batch / "not-hex").write_bytes(b"x")
    (q / "q-1000-1" / "sha512").symlink_to(outside)
    (batch / ("d" * 64)).write_bytes(b"\x1f\x8b held orphan")  # a real held blob
    return "q-1000-1"


@case("quarantine-holds-needed-layer", BROKEN, {"missing-blob", "quarantine"})
def _own_needed(base: Base, outside: Path) -> str:
    batch = base.root / ".ocicache" / "quarantine" / "q-1000-1" / "sha256"
    batch.mkdir(parents=True)
    os.rename(blob(base.root, base.layers[2]), batch / base.layers[2][7:])
    return base.layers[2]


# foreign content: images, lists, artifacts, referrers, nested indexes (not cache exports)
@case("foreign-docker-list", clean=True)
def _foreign_docker_list(base: Base, outside: Path) -> None:
    s = Store(base.root)
    s.tag(s.docker_list("multi"), "multi")


@case("foreign-oci-image-artifacts-referrers", clean=True)
def _foreign_oci(base: Base, outside: Path) -> None:
    s = Store(base.root)
    image = s.oci_image("app")
    s.tag(image, "image")
    s.tag(s.artifact("sbom", subject=image), "sbom")
    s.tag(s.withdrawn_artifact("old", subject=image), "withdrawn")
    s.signature(image)  # only in blobs/
    s.tag(s.docker_image("single"), "docker-v2")


@case("foreign-nested-2000", clean=True)
def _foreign_nested(base: Base, outside: Path) -> None:
    s = Store(base.root)
    s.tag(s.chain(s.oci_image("bottom", layers=1), 2000), "deep")


def _foreign_index_of(base: Base, child: dict[str, object]) -> None:
    s = Store(base.root)
    s.tag(s.index([s.oci_image("fine"), child]), "foreign")


@case("foreign-child-invalid", BROKEN, {"invalid-document"})
def _foreign_invalid(base: Base, outside: Path) -> str:
    data = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": "x", "digest": "sha256:../../etc", "size": 1},
            "layers": [],
        }
    )
    d = base.b.blob(data)
    _foreign_index_of(base, {"mediaType": mt.DOCKER_MANIFEST, "digest": d, "size": len(data)})
    return d


@case("foreign-child-not-json", BROKEN, {"invalid-document"})
def _foreign_not_json(base: Base, outside: Path) -> str:
    data = tar_gz("x", b"a layer where a manifest should be")
    d = base.b.blob(data)
    _foreign_index_of(base, {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": len(data)})
    return d


_BIG_SIZE = (256 << 20) + 100  # past documents.JSON_LIMIT: sparse, costs no disk
_BIG_HEAD = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'


@functools.cache
def _big_digest() -> str:
    h = hashlib.sha256(_BIG_HEAD)
    zeros = bytes(1 << 20)
    left = _BIG_SIZE - len(_BIG_HEAD)
    while left > 0:
        h.update(zeros[: min(left, len(zeros))])
        left -= len(zeros)
    return "sha256:" + h.hexdigest()


@case("foreign-child-too-big", BROKEN, {"document-too-big"})
def _foreign_too_big(base: Base, outside: Path) -> str:
    d = _big_digest()
    p = blob(base.root, d)
    with open(p, "wb") as f:
        f.write(_BIG_HEAD)
        f.truncate(_BIG_SIZE)
    _foreign_index_of(base, {"mediaType": mt.OCI_MANIFEST, "digest": d, "size": _BIG_SIZE})
    return d


@case("foreign-child-size-mismatch", BROKEN, {"size-mismatch"})
def _foreign_size(base: Base, outside: Path) -> str:
    s = Store(base.root)
    layer = s.put(tar_gz("l", b"layer"), "application/vnd.oci.image.layer.v1.tar+gzip", "layer")
    image = s.doc(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": s.empty(),
            "layers": [{**layer, "size": 7}],
        },
        mt.OCI_MANIFEST,
        "manifest",
    )
    s.tag(image, "img")
    return str(layer["digest"])


@case("foreign-missing-layer", codes={"foreign-missing-blob"})
def _foreign_missing(base: Base, outside: Path) -> str:
    s = Store(base.root)
    image = s.oci_image("partial")
    s.tag(image, "partial")
    gone = next(d for d, k in sorted(s.kinds.items()) if k == "layer")
    blob(base.root, gone).unlink()
    return gone


@case("manifest-over-16mib", codes={"oversize-document"})
def _manifest_16mib(base: Base, outside: Path) -> str:
    """A cache manifest over the old 16 MiB read limit: read like any other (BuildKit would not
    import it: a warning), its layers referenced."""
    b = base.b
    layers = [b.layer(f"big{i}") for i in range(3)]
    layers[0]["annotations"]["example.com/pad"] = "x" * (17 << 20)
    d = b.export(layers, tag="big")
    return d


# times (issue 10, 4): copies that lost mtimes, impossible or absurd mtimes, odd step times
DAY_NS = 86400 * 10**9


def _retime(base: Base, t: int) -> None:
    for p in (base.root / "blobs" / "sha256").iterdir():
        os.utime(p, ns=(t, t))


@case("mtimes-restored-then-export")
def _restored(base: Base, outside: Path) -> None:
    """Every blob rewritten at one instant days later (a copy), then one real export."""
    t = base.b.clock_ns + 3 * DAY_NS
    _retime(base, t)
    base.b.clock_ns = t + 600 * 10**9
    base.b.export([base.b.layer(f"l{i}", size=3000) for i in range(3)] + [base.b.layer("after", size=3000)])


@case("mtime-epoch")
def _epoch(base: Base, outside: Path) -> None:
    os.utime(blob(base.root, base.new), ns=(0, 0))


@case("mtimes-far-future")
def _future(base: Base, outside: Path) -> None:
    _retime(base, 7_258_118_400 * 10**9)  # 2200


@case("createdat-odd")
def _odd_times(base: Base, outside: Path) -> None:
    """Step times a copy keeps as they are: none, Go's zero time, far future, not a time."""
    b = base.b
    descs = []
    for i, when in enumerate(["", "0001-01-01T00:00:00Z", "2999-12-31T23:59:59.999999999Z", "yesterday"]):
        d = b.layer(f"odd{i}", size=100)
        d["annotations"]["buildkit/createdat"] = when
        descs.append(d)
    b.export(descs, tag="odd")


# deep user data: every walk is iterative (issue 10, item 9)
DEEP = 3000  # three times Python's default recursion limit


@case("config-chain-deep")
def _chain_deep(base: Base, outside: Path) -> None:
    """A cache config whose layers form one chain DEEP long (each the parent of the next)."""
    layers = [base.b.blob(b"\x1f\x8b" + hashlib.sha256(str(i).encode()).digest()) for i in range(DEEP)]
    config = {
        "layers": [{"blob": d, "parent": i - 1} for i, d in enumerate(layers)],
        "records": [{"digest": sha(str(i).encode()), "layers": [{"layer": i}]} for i in range(DEEP)],
    }
    manifest_with(base, config, layers, tag="deep")


@case("index-chain-deep")
def _index_chain_deep(base: Base, outside: Path) -> None:
    """index.json names an OCI index nesting another, DEEP times, down to an image manifest."""
    b = base.b
    cfg = compact({"architecture": "amd64"})
    m = compact(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": b.blob(cfg),
                "size": len(cfg),
            },
            "layers": [],
        }
    )
    digest, size, media_type = b.blob(m), len(m), mt.OCI_MANIFEST
    for _ in range(DEEP):
        index = compact(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_INDEX,
                "manifests": [{"mediaType": media_type, "digest": digest, "size": size}],
            }
        )
        digest, size, media_type = b.blob(index), len(index), mt.OCI_INDEX
    b.point("image", digest, size, mt.OCI_INDEX)


# names that would drive the terminal or forge lines (item 16)
EVIL = "x\nerror: forged\x1b[2J\x1b]0;pwned\x07\r\x9b31m\x7f\u202e\u2028y"
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@case("names-control-chars", codes={"bad-name", "stale-ingest"})
def _control_names(base: Base, outside: Path) -> str:
    """A tag, a blob file name and an ingest entry name holding controls (and undecodable
    bytes): printed escaped everywhere (_assert_clean_run), exact in JSON."""
    base.b.point(EVIL, base.old, blob(base.root, base.old).stat().st_size)
    put_raw(base.root, f"n{EVIL}", b"x")
    put_raw(base.root, os.fsdecode(b"\xff\x1b[2J\x9b"), b"x")
    (base.root / "ingest" / f"i{EVIL}").mkdir(parents=True)
    return "bad-name"


@case("tags-10000")
def _many_tags(base: Base, outside: Path) -> None:
    """10,000 index.json entries tag one export: its TAGS cell stays short (+N more)."""
    size = blob(base.root, base.new).stat().st_size
    index_with(base, [entry(base.new, size, f"t{i:05d}") for i in range(10_000)])


@case("sparse-and-hard-links", codes={"stale-ingest", "bad-name"})
def _sparse(base: Base, outside: Path) -> str:
    """A sparse 4 GiB ingest write; a blob hard-linked under another name (du counts it once)."""
    d = base.root / "ingest" / ("e" * 64)
    d.mkdir(parents=True)
    with open(d / "data", "wb") as f:
        f.truncate(4 << 30)
    os.link(blob(base.root, base.layers[0]), base.root / "blobs" / "sha256" / "linked")
    return "ingest/" + "e" * 64


# -- the tests ---------------------------------------------------------------------------------
def _build(tmp_path: Path, c: Case) -> tuple[Base, Path, str | None]:
    root, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    b = Builder(root)
    layers = [b.layer(f"l{i}", size=3000) for i in range(3)]
    old = b.export(layers[:2])
    new = b.export(layers)
    base = Base(root, b, old, new, [x["digest"] for x in layers])
    named = c.make(base, outside)
    return base, outside, named


def _atimes(outside: Path) -> dict[str, int]:
    return {str(p): p.lstat().st_atime_ns for p in outside.rglob("*") if stat.S_ISREG(p.lstat().st_mode)}


def _assert_clean_run(r: Run, what: str) -> None:
    assert r.code in DOCUMENTED, f"{what}: exit {r.code}\n{r.err}"
    assert "Traceback" not in r.err and "internal error" not in r.err, f"{what}:\n{r.err}"
    assert SECRET not in r.out and SECRET not in r.err, f"{what}: read a file outside DIR"
    # Every output inert: no control character but the newline, no forged line.
    bad = UNSAFE.search(r.out + r.err)
    assert bad is None, f"{what}: raw {bad.group()!r} in the output"
    assert not any(x.startswith("error: forged") for x in (r.out + r.err).splitlines()), what


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_hostile_case(tmp_path: Path, c: Case) -> None:
    base, outside, named = _build(tmp_path, c)
    before, outside_before, atimes = tree(base.root), tree(outside), _atimes(outside)
    for command, argv in COMMANDS.items():
        args = tuple(str(base.root) if a == "DIR" else a for a in argv)
        r = run_inprocess(*args)
        _assert_clean_run(r, f"{c.name}: {command}")
        assert r.code == c.exits.get(command, 0), f"{c.name}: {command}: {r.code}\n{r.err}"
        if r.code not in (0, 1):
            assert r.err.startswith("ocicache: error: "), r.err
        if r.code == 4:  # a torn or invalid index.json: the error line names it
            assert r.err.startswith("ocicache: error: index.json: "), r.err
        if command == "check":
            doc = json.loads(r.out)
            found = {f["code"] for f in doc["findings"]}
            assert c.codes <= found, f"{c.name}: want {c.codes}, got {found}"
            if named is not None:
                assert named in r.out, f"{c.name}: findings do not name {named}\n{r.out}"
            if c.name == "clean" or c.clean:
                assert doc["findings"] == [] and doc["ok"], f"{c.name}: {doc['findings']}"
        if command in READ_ONLY:
            assert tree(base.root) == before, f"{c.name}: {command} changed DIR"
    assert tree(outside) == outside_before
    assert _atimes(outside) == atimes, f"{c.name}: a file outside DIR was read"


# The read command lines that take the listing, each run twice: the second reads the blob facts
# the first kept.
LISTED_LINES = (
    ("history", "--json"),
    ("du",),
    ("du", "--json"),
    ("show",),
    ("blobs",),
    ("gc", "--dry-run", "--json"),
)


def _no_now(out: str) -> str:
    return "\n".join(x for x in out.splitlines() if not x.startswith('  "now": '))


@pytest.mark.slow  # every case x 6 lines x 3 runs: ~1,700 runs, a minute on a busy machine
@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_hostile_case_repeated_runs(tmp_path: Path, c: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run after run (with the blob facts kept between them), each says what a run that keeps
    nothing says, and changes nothing."""
    base, outside, _ = _build(tmp_path, c)
    before, outside_before = tree(base.root), tree(outside)
    for line in LISTED_LINES:
        args = (line[0], str(base.root), *line[1:])
        with monkeypatch.context() as m:
            m.setenv("OCICACHE_NO_CACHE", "1")
            want = run_inprocess(*args)
        for attempt in ("first", "again"):
            got = run_inprocess(*args)
            _assert_clean_run(got, f"{c.name}: {' '.join(line)} ({attempt})")
            assert (got.code, _no_now(got.out), got.err) == (want.code, _no_now(want.out), want.err), (
                f"{c.name}: {line}"
            )
        assert tree(base.root) == before, f"{c.name}: {' '.join(line)} changed DIR"
    assert tree(outside) == outside_before


@pytest.mark.parametrize("name", ["blob-symlink-outside", "blob-fifo", "index-sparse-4g", "index-fifo"])
def test_hostile_subprocess(tmp_path: Path, name: str) -> None:
    """The same through a real process: no hang (timeout), no traceback, documented codes."""
    c = next(x for x in CASES if x.name == name)
    base, _outside, _ = _build(tmp_path, c)
    before = tree(base.root)
    for command in ("history", "check"):
        argv = tuple(str(base.root) if a == "DIR" else a for a in COMMANDS[command])
        r = run_subprocess(*argv, timeout=60)
        _assert_clean_run(r, f"{name}: {command}")
        assert r.code == c.exits.get(command, 0)
    assert tree(base.root) == before


def test_unreadable_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob the user may not read (EACCES; simulated: root ignores chmod 000)."""
    import ocicache.store.layout as layout_mod

    c = next(x for x in CASES if x.name == "clean")
    base, _outside, _ = _build(tmp_path, c)
    victims = {base.layers[1][7:], base.new[7:]}  # a layer and the current manifest
    real_open = os.open

    def fake_open(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if path in victims:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(layout_mod.os, "open", fake_open)
    before = tree(base.root)
    r = run_inprocess("check", "--json", str(base.root))
    _assert_clean_run(r, "unreadable: check")
    assert r.code == 1
    found = {(f["code"], f["digest"]) for f in json.loads(r.out)["findings"]}
    assert ("unreadable-blob", base.layers[1]) in found
    assert ("unreadable-blob", base.new) in found
    for command in ("history", "blobs", "du"):
        r = run_inprocess(command, str(base.root))
        _assert_clean_run(r, f"unreadable: {command}")
        assert r.code in (0, 4), r.err
    assert tree(base.root) == before


# Every index.json repair has work on: torn, invalid, missing, or naming nothing on disk.
REPAIR_CASES = [
    c
    for c in CASES
    if c.exits.get("history") == 4 or c.name in ("index-no-entries", "index-only-missing-foreign")
]
# Where repair must refuse (exit 6, nothing written), and what the refusal must say.
REPAIR_REFUSES = {
    "index-sparse-4g": "256 MiB",  # over the limit: its entries cannot be read, so not dropped
    "bare-store": "no importable cache manifest",  # an empty index would let gc delete all
}


@pytest.mark.parametrize("c", REPAIR_CASES, ids=[c.name for c in REPAIR_CASES])
def test_hostile_repair(tmp_path: Path, c: Case) -> None:
    """repair on every broken index.json: dry run changes nothing; the real run leaves a
    readable index that names the newest export (or refuses clearly, writing nothing), never
    touches anything outside DIR, and never writes an index naming nothing on disk."""
    base, outside, _ = _build(tmp_path, c)
    before, outside_before, atimes = tree(base.root), tree(outside), _atimes(outside)
    refusal = REPAIR_REFUSES.get(c.name)
    r = run_inprocess("repair", "--dry-run", str(base.root))
    _assert_clean_run(r, f"{c.name}: repair --dry-run")
    assert r.code == (6 if refusal else 0), r.err
    assert tree(base.root) == before
    r = run_inprocess("repair", str(base.root))
    _assert_clean_run(r, f"{c.name}: repair")
    if c.name == "index-directory":
        assert r.code == 6 and "index.json" in r.err  # refuses to replace a directory
    elif refusal is not None:
        assert r.code == 6 and refusal in r.err and "nothing written" in r.err, r.err
        assert tree(base.root) == before
    else:
        assert r.code == 0, r.err
        h = run_inprocess("history", str(base.root))
        assert h.code == 0, h.err
        assert base.new in run_inprocess("history", "--json", str(base.root)).out
        doc = json.loads((base.root / "index.json").read_bytes())
        assert any(blob(base.root, e["digest"]).is_file() for e in doc["manifests"])
    assert tree(outside) == outside_before and _atimes(outside) == atimes


# -- hostile beyond the directory: the output stream, option values, command lines ------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["clean", "names-control-chars", "config-chain-deep"])
@pytest.mark.parametrize("how", ["closed", "full", "broken-pipe"])
def test_hostile_unwritable_stdout(tmp_path: Path, name: str, how: str) -> None:
    """Data that cannot be written is exit 8 (a broken pipe quietly), through a real process."""
    from test_output_errors import run_to

    if how == "full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    c = next(x for x in CASES if x.name == name)
    base, _outside, _ = _build(tmp_path, c)
    before = tree(base.root)
    for argv in (
        ("history", "DIR"),
        ("check", "--quick", "DIR"),
        ("show", "DIR"),
        ("gc", "DIR", "--dry-run", "--keep-last", "1"),
    ):
        r = run_to(how, *(str(base.root) if a == "DIR" else a for a in argv))
        _assert_clean_run(r, f"{name}: {how}: {argv[0]}")
        assert r.code == 8, (argv, r.err)
        errors = [x for x in r.err.splitlines() if not x.startswith("ocicache: warning: ")]
        assert errors == ([] if how == "broken-pipe" else errors[:1]), r.err
        if how != "broken-pipe":
            assert errors[0].startswith("ocicache: error: stdout: cannot write the output")
    assert tree(base.root) == before


HOSTILE_VALUES = ["9" * 400, "9" * 5000, "1e400", "nan", "inf", "-1", "\u0661", "", "0x1f"]


@pytest.mark.parametrize("option", ["--grace", "--keep-within", "--max-size", "--keep-last"])
def test_hostile_option_values(tmp_path: Path, option: str) -> None:
    """Every value is taken exactly or is a usage error (exit 2)."""
    c = next(x for x in CASES if x.name == "clean")
    base, _outside, _ = _build(tmp_path, c)
    before = tree(base.root)
    for value in HOSTILE_VALUES + [v + "h" for v in HOSTILE_VALUES]:
        r = run_inprocess("gc", str(base.root), "--dry-run", option, value)
        _assert_clean_run(r, f"{option} {value[:20]!r}")
        assert r.code in (0, 2), (option, value[:20], r.err)
        if r.code == 2:
            assert r.err.startswith("ocicache: error: ") and "Usage:" not in r.err
    assert tree(base.root) == before


@pytest.mark.parametrize(
    "argv",
    [
        ("history", "DIR", "--bogus"),
        ("gc", "DIR", "--keep-last"),
        ("check", "DIR", "-j", "x"),
        ("show",),
        ("nosuch", "DIR"),
        ("ref", "DIR", "--format", "\x1b[2J"),
    ],
)
def test_hostile_command_lines(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """A bad command line is one `ocicache: error:` line (and a hint), exit 2."""
    c = next(x for x in CASES if x.name == "clean")
    base, _outside, _ = _build(tmp_path, c)
    args = [str(base.root) if a == "DIR" else a for a in argv]
    r = run_inprocess(*args)
    _assert_clean_run(r, " ".join(argv))
    assert r.code == 2 and r.out == "" and r.err.startswith("ocicache: error: "), r.err
    assert "Usage:" not in r.err and "Error:" not in r.err
