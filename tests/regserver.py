"""A real registry for the tests: Debian's `docker-registry` (distribution 2.8.2) on 127.0.0.1.

Each server gets its own config (never the package's default, which turns on htpasswd auth and
listens on all interfaces): filesystem storage in a temporary directory, deletes enabled, upload
purging off, an unused port on the loopback; with `htpasswd`, Basic auth from a file made with
`htpasswd -B` (apache2-utils). Tests that need one skip with the reason when the binary is absent
(.ci/run installs it). The registry fixtures (fixtures/registry/<case>.tar.gz: storage roots
real BuildKit pushed to) are served by unpacking one into the storage directory first.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REGISTRY_FIXTURES = ROOT / "fixtures" / "registry"
REGISTRY_CASES = ("reg-history", "reg-shapes", "reg-mixed")


def registry_binary() -> str | None:
    return shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if os.access("/usr/bin/docker-registry", os.X_OK) else None
    )


def require_registry() -> str:
    binary = registry_binary()
    if binary is None:
        pytest.skip("docker-registry (Debian package docker-registry, distribution 2.8.2) is not installed")
    return binary


def registry_truth(case: str) -> dict[str, Any]:
    return json.loads((REGISTRY_FIXTURES / f"{case}.groundtruth.json").read_text())


def unpack_storage(case: str, dest: Path) -> Path:
    """The storage root of fixture `case` under dest (dest/<case>/docker/registry/v2/...), with
    the nanosecond mtimes the truth records (tarfile rounds through a float)."""
    with tarfile.open(REGISTRY_FIXTURES / f"{case}.tar.gz") as tar:
        tar.extractall(dest, filter="tar")
    root = dest / case
    for f in registry_truth(case)["final"]["files"]:
        p = root / f["path"]
        if p.exists() and not p.is_symlink():
            os.utime(p, ns=(f["mtime_ns"], f["mtime_ns"]), follow_symlinks=False)
    return root


MANIFEST_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def head_status(reg: Registry, repo: str, what: str, reference: str) -> int:
    """The status of HEAD /v2/REPO/{manifests|blobs}/REFERENCE (every manifest type accepted)."""
    req = urllib.request.Request(reg.url(f"/v2/{repo}/{what}/{reference}"), method="HEAD")
    req.add_header("Accept", MANIFEST_ACCEPT)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    """A running registry: `host` is "127.0.0.1:PORT", `storage` its root directory."""

    host: str
    storage: Path
    proc: subprocess.Popen[bytes]
    log: Path
    user: str | None = None
    password: str | None = None
    config: Path | None = None

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def target(self, repo: str, tag: str | None = None) -> str:
        return f"registry://{self.host}/{repo}" + (f":{tag}" if tag else "")

    def garbage_collect(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Stop the registry, run `docker-registry garbage-collect` on its storage (as one does:
        with nothing pushing), start it again on the same port."""
        assert self.config is not None
        self.stop()
        p = subprocess.run(
            [require_registry(), "garbage-collect", *args, str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        self._start()
        return p

    def _start(self) -> None:
        assert self.config is not None
        out = self.log.open("ab")
        self.proc = subprocess.Popen([require_registry(), "serve", str(self.config)], stdout=out, stderr=out)
        out.close()
        if not _wait(self):
            raise RuntimeError(
                f"docker-registry did not restart: {self.log.read_text(errors='replace')[-2000:]}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait(reg: Registry) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and reg.proc.poll() is None:
        try:
            urllib.request.urlopen(reg.url("/v2/"), timeout=1).close()
            return True
        except urllib.error.HTTPError as e:
            if e.code == 401:  # auth on: it is up
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_registry(
    workdir: Path,
    storage: Path | None = None,
    *,
    htpasswd: tuple[str, str] | None = None,
    delete: bool = True,
) -> Registry:
    """Start docker-registry on 127.0.0.1 with a config of our own; wait until /v2/ answers."""
    binary = require_registry()
    workdir.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = workdir / "storage"
        storage.mkdir(exist_ok=True)
    auth = ""
    if htpasswd is not None:
        if shutil.which("htpasswd") is None:
            pytest.skip("htpasswd (Debian package apache2-utils) is not installed")
        user, password = htpasswd
        subprocess.run(
            ["htpasswd", "-Bbc", str(workdir / "htpasswd"), user, password],
            check=True,
            capture_output=True,
        )
        auth = f"auth:\n  htpasswd:\n    realm: ocicache-test\n    path: {workdir / 'htpasswd'}\n"
    for _attempt in range(5):
        port = _free_port()
        config = workdir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n"
            f"  delete:\n    enabled: {'true' if delete else 'false'}\n"
            "  maintenance:\n    uploadpurging:\n      enabled: false\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + auth
        )
        log = workdir / "registry.log"
        out = log.open("ab")
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=out)
        out.close()
        reg = Registry(f"127.0.0.1:{port}", storage, proc, log, *(htpasswd or (None, None)), config)
        if _wait(reg):
            return reg
        reg.stop()
        if "address already in use" not in log.read_text(errors="replace"):
            break
    raise RuntimeError(f"docker-registry did not start: {log.read_text(errors='replace')[-2000:]}")


@pytest.fixture
def registry(tmp_path: Path):
    """An empty registry (no auth)."""
    reg = start_registry(tmp_path / "registry")
    yield reg
    reg.stop()


@pytest.fixture
def fixture_registry(tmp_path: Path):
    """A function serving a copy of a registry fixture: fixture_registry("reg-history")."""
    started: list[Registry] = []

    def serve(case: str) -> Registry:
        storage = unpack_storage(case, tmp_path / f"storage-{len(started)}")
        reg = start_registry(tmp_path / f"registry-{len(started)}", storage)
        started.append(reg)
        return reg

    yield serve
    for reg in started:
        reg.stop()
