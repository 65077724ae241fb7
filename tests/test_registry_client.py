"""store/registry: targets, Docker credentials, and the distribution client.

The client is tested against a real docker-registry (distribution 2.8.2, tests/regserver.py)
first: the reg-history fixture against its recorded answers, pushes, tags, deletes and Basic
auth. What a real registry will not do on demand (token auth, 429/5xx, redirects, wrong bytes,
huge or silent answers) is played by small servers on 127.0.0.1 (tests/fakehttp.py). Nothing
here contacts a host other than 127.0.0.x.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from fakehttp import FakeServer, Reply, Request, SilentServer, closed_port
from regserver import fixture_registry, registry, registry_truth, start_registry  # noqa: F401

from ocicache.base.errors import (
    EXIT_REFUSED,
    EXIT_REGISTRY,
    CorruptError,
    NotFoundError,
    RefusedError,
    RegistryError,
    TooLargeError,
    UsageError,
)
from ocicache.format.mediatypes import OCI_MANIFEST
from ocicache.store.registry.auth import Credentials, credentials_for
from ocicache.store.registry.client import ManifestResponse, RegistryClient
from ocicache.store.registry.target import RegistryTarget, is_loopback, parse_target

REPO = "myorg/app"
SECRET = "s3cret-do-not-show"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No proxy, and a DOCKER_CONFIG of the test's own (never the user's credentials)."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    return docker


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def target(host: str, repo: str = REPO) -> RegistryTarget:
    return RegistryTarget(host, repo, None, None, insecure=True)


def client(host: str, **kw: object) -> RegistryClient:
    kw.setdefault("credentials", None)
    c = RegistryClient(target(host), **kw)  # type: ignore[arg-type]
    c.backoff = 0.001
    return c


def manifest(config: str, layer: str, note: str = "") -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5}],
    }
    if note:
        doc["annotations"] = {"note": note}
    return json.dumps(doc).encode()


# -- targets ------------------------------------------------------------------------------

HEX = "a" * 64
VALID = [
    (
        "registry://127.0.0.1:5000/myorg/app-cache:buildcache",
        ("127.0.0.1:5000", "myorg/app-cache", "buildcache", None, True),
    ),
    ("registry://Registry.Example.COM/a/b", ("registry.example.com", "a/b", None, None, False)),
    (
        f"registry://reg.example.com:443/a/b@sha256:{HEX}",
        ("reg.example.com:443", "a/b", None, f"sha256:{HEX}", False),
    ),
    (f"registry://reg.example.com/a:v1@sha256:{HEX}", ("reg.example.com", "a", "v1", f"sha256:{HEX}", False)),
    ("registry://localhost/x", ("localhost", "x", None, None, True)),
    ("registry://localhost:5000/x.y/z__w-v:T_1.2-3", ("localhost:5000", "x.y/z__w-v", "T_1.2-3", None, True)),
    ("registry://[::1]:5000/x", ("[::1]:5000", "x", None, None, True)),
    ("registry://[2001:db8::1]:5000/x", ("[2001:db8::1]:5000", "x", None, None, False)),
    ("registry://127.9.8.7/x", ("127.9.8.7", "x", None, None, True)),
    ("type=registry,ref=reg.example.com/x:t,mode=max", ("reg.example.com", "x", "t", None, False)),
    ("mode=max,ref=reg.example.com/x,type=registry", ("reg.example.com", "x", None, None, False)),
    (
        "type=registry,ref=reg.example.com/x,registry.insecure=true",
        ("reg.example.com", "x", None, None, True),
    ),
    (
        "type=registry,ref=reg.example.com/x,registry.insecure=false",
        ("reg.example.com", "x", None, None, False),
    ),
    (
        '"ref=reg.example.com/x:t",type=registry,"image-manifest=true"',
        ("reg.example.com", "x", "t", None, False),
    ),
    ("Type=registry,REF=reg.example.com/x", ("reg.example.com", "x", None, None, False)),
    (
        "type=registry,ref=old.example.com/x,ref=new.example.com/y",
        ("new.example.com", "y", None, None, False),
    ),
    (
        f"type=registry,ref=reg.example.com/x@sha256:{HEX}",
        ("reg.example.com", "x", None, f"sha256:{HEX}", False),
    ),
    ("  registry://reg.example.com/x  ", ("reg.example.com", "x", None, None, False)),
]


@pytest.mark.parametrize(("text", "want"), VALID)
def test_parse_target_valid(text: str, want: tuple[object, ...]) -> None:
    t = parse_target(text)
    assert t is not None
    assert (t.host, t.repo, t.tag, t.digest, t.insecure) == want


@pytest.mark.parametrize(
    "text",
    [
        "/var/cache/buildkit",
        "./cache",
        "cache",
        "registry",
        "type=local,src=/tmp/cache",
        "type=local,src=/tmp/cache,ref=reg.example.com/x",
        "src=/tmp/a,mode=max",
        "a,b=c",
        "/tmp/with,comma=and-equals",
        "type=gha",
        "registry:/not-a-prefix",
    ],
)
def test_parse_target_not_a_registry(text: str) -> None:
    assert parse_target(text) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("registry://myorg/app", "names no registry host"),
        ("registry://app", "names no registry host"),
        ("type=registry,ref=app:v1", "names no registry host"),
        ("type=registry,ref=myorg/app:v1", "names no registry host"),
        ("registry://localhost:5000", "names no repository"),
        ("registry://reg.example.com", "names no repository"),
        ("registry://reg.example.com/", "repository name is empty"),
        ("registry://reg.example.com/MyOrg/app", "lower-case"),
        ("registry://reg.example.com/a//b", "not a repository name"),
        ("registry://reg.example.com/a-/b", "not a repository name"),
        ("registry://reg.example.com/" + "a" * 256, "255"),
        ("registry://reg.example.com/a:-bad", "not a tag"),
        ("registry://reg.example.com/a:" + "t" * 129, "not a tag"),
        ("registry://reg.example.com/a@sha256:abc", "64 lower-case hex"),
        ("registry://reg.example.com/a@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("registry://reg.example.com:99999/a", "out of range"),
        ("registry://reg_example.com/a", "not a registry host"),
        ("registry://[1:2:3:4:5:6:7:8:9]:5000/a", "not an IPv6 address"),
        ("registry://reg.example.com/a b", "white space"),
        ("registry://", "no HOST/REPO"),
        ("type=registry", "needs ref="),
        ("type=registry,mode=max", "needs ref="),
        ("type=registry,ref=", "needs ref="),
        ("type=registry,ref=reg.example.com/x,registry.insecure=maybe", "not true or false"),
        ("type=registry,ref=reg.example.com/x,novalue", "is not key=value"),
        ('type=registry,"ref=reg.example.com/x', "comma-separated"),
    ],
)
def test_parse_target_malformed(text: str, says: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_target(text)
    assert says in str(e.value)
    assert repr(text.strip()[:60])[:20] in str(e.value)  # the text is named
    assert e.value.exit_code == 2


def test_parse_target_no_host_hints_at_the_form() -> None:
    with pytest.raises(UsageError) as e:
        parse_target("registry://myorg/app:cache")
    assert "docker.io" in str(e.value)
    assert e.value.hint and "registry://" in e.value.hint


def test_parse_target_insecure_argument() -> None:
    t = parse_target("registry://reg.example.com/x", insecure=True)
    assert t is not None and t.insecure and t.base_url == "http://reg.example.com"
    t = parse_target("registry://reg.example.com/x")
    assert t is not None and not t.insecure and t.scheme == "https"


def test_target_display_and_ref() -> None:
    t = parse_target(f"type=registry,ref=reg.example.com:5000/a/b:tag@sha256:{HEX}")
    assert t is not None
    assert t.display() == f"registry://reg.example.com:5000/a/b:tag@sha256:{HEX}"
    assert t.ref(f"sha256:{'b' * 64}") == f"reg.example.com:5000/a/b@sha256:{'b' * 64}"
    assert t.base_url == "https://reg.example.com:5000"
    t = parse_target("registry://[::1]:5000/x")
    assert t is not None and t.display() == "registry://[::1]:5000/x" and t.base_url == "http://[::1]:5000"
    # round trip: display() parses back to the same target
    for text, _ in VALID:
        parsed = parse_target(text)
        assert parsed is not None and parse_target(parsed.display(), insecure=parsed.insecure) == parsed


@pytest.mark.parametrize(
    ("host", "want"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("127.0.0.1", True),
        ("127.0.0.1:5000", True),
        ("127.255.0.9:1", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("128.0.0.1", False),
        ("10.0.0.1:5000", False),
        ("[2001:db8::1]:5000", False),
        ("reg.example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, want: bool) -> None:
    assert is_loopback(host) is want


# -- credentials --------------------------------------------------------------------------


def write_config(docker: Path, config: object) -> Path:
    path = docker / "config.json"
    path.write_text(json.dumps(config) if not isinstance(config, str) else config)
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "key",
    ["reg.example.com", "https://reg.example.com", "http://reg.example.com", "https://reg.example.com/v1/"],
)
def test_credentials_from_auths(_isolated: Path, key: str) -> None:
    write_config(
        _isolated,
        {"auths": {"other.example.com": {"auth": b64("bob:x")}, key: {"auth": b64(f"alice:{SECRET}")}}},
    )
    creds = credentials_for("reg.example.com")
    assert creds is not None
    assert (creds.username, creds.secret, creds.identity_token) == ("alice", SECRET, False)
    assert SECRET not in repr(creds) and SECRET not in str(creds) and "alice" in repr(creds)


def test_credentials_auths_forms(_isolated: Path) -> None:
    write_config(
        _isolated,
        {
            "auths": {
                "fields.example.com": {"username": "carol", "password": SECRET},
                "token.example.com": {"identitytoken": SECRET},
                "colon.example.com:5000": {"auth": b64(f"dave:{SECRET}:with:colons")},
                "empty.example.com": {},
            }
        },
    )
    fields = credentials_for("fields.example.com")
    assert fields is not None and (fields.username, fields.secret, fields.identity_token) == (
        "carol",
        SECRET,
        False,
    )
    token = credentials_for("token.example.com")
    assert token is not None and token.identity_token and token.secret == SECRET
    assert SECRET not in repr(token)
    colon = credentials_for("colon.example.com:5000")
    assert colon is not None and (colon.username, colon.secret) == ("dave", f"{SECRET}:with:colons")
    assert credentials_for("colon.example.com") is None  # another port is another registry
    assert credentials_for("empty.example.com") is None
    assert credentials_for("nobody.example.com") is None


def test_credentials_without_config(_isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials_for("reg.example.com") is None  # DOCKER_CONFIG without config.json
    monkeypatch.delenv("DOCKER_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert credentials_for("reg.example.com") is None
    (tmp_path / "home" / ".docker").mkdir(parents=True)
    write_config(tmp_path / "home" / ".docker", {"auths": {"reg.example.com": {"auth": b64("u:p")}}})
    creds = credentials_for("reg.example.com")
    assert creds is not None and creds.username == "u"


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ('{"auths": {"reg.example.com": {"auth": "' + SECRET, "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ({"auths": ["reg.example.com"]}, "auths is not an object"),
        ({"auths": {"reg.example.com": {"auth": SECRET + "!!"}}}, "not base64"),
        ({"auths": {"reg.example.com": {"auth": b64(SECRET)}}}, "not base64 of user:password"),
        ({"auths": {"reg.example.com": {"username": "u", "password": 5}}}, "must both be strings"),
        ({"credsStore": 5}, "credsStore is not a string"),
    ],
)
def test_credentials_broken_config(_isolated: Path, config: object, says: str) -> None:
    path = write_config(_isolated, config)
    with pytest.raises(RegistryError) as e:
        credentials_for("reg.example.com")
    assert says in str(e.value) and str(path) in str(e.value)
    assert SECRET not in str(e.value) and e.value.exit_code == EXIT_REGISTRY


HELPER = r"""#!/bin/sh
server=$(cat)
echo "$server" >> "$(dirname "$0")/asked"
HS=S3CRET-FROM-HELPER
case "$1:$server" in
  get:reg.example.com) printf '{"ServerURL":"%s","Username":"helper-user","Secret":"%s"}' "$server" "$HS" ;;
  get:token.example.com) printf '{"Username":"<token>","Secret":"S3CRET-FROM-HELPER"}' ;;
  get:broken.example.com) echo "keychain locked" >&2; exit 3 ;;
  get:leaky.example.com) echo '{"Secret":"S3CRET-FROM-HELPER"}'; exit 3 ;;
  get:garbage.example.com) echo "not json" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "docker-credential-test"
    script.write_text(HELPER)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


def test_credentials_from_cred_helpers(_isolated: Path, helper_path: Path) -> None:
    hosts = ["reg.example.com", "token.example.com", "nothing.example.com", "broken.example.com"]
    write_config(
        _isolated,
        {
            "credHelpers": {h: "test" for h in hosts},
            "auths": {"nothing.example.com": {"auth": b64("fallback:pw")}},
        },
    )
    creds = credentials_for("reg.example.com")
    assert creds is not None and (creds.username, creds.secret) == ("helper-user", "S3CRET-FROM-HELPER")
    assert creds.source == "docker-credential-test" and "S3CRET" not in repr(creds)
    token = credentials_for("token.example.com")
    assert token is not None and token.identity_token and token.secret == "S3CRET-FROM-HELPER"
    fallback = credentials_for("nothing.example.com")  # the helper has none: auths next
    assert fallback is not None and fallback.username == "fallback"
    with pytest.raises(RegistryError) as e:
        credentials_for("broken.example.com")
    assert "docker-credential-test" in str(e.value) and "exit 3" in str(e.value)
    assert "keychain locked" in str(e.value)
    assert (helper_path / "asked").read_text().split() == hosts


def test_credentials_from_creds_store(_isolated: Path, helper_path: Path) -> None:
    write_config(
        _isolated,
        {"credsStore": "test", "auths": {"reg.example.com": {}, "own.example.com": {"auth": b64("own:pw")}}},
    )
    creds = credentials_for("reg.example.com")  # the placeholder {} in auths: the store answers
    assert creds is not None and creds.username == "helper-user"
    own = credentials_for("own.example.com")
    assert own is not None and own.username == "own"
    assert credentials_for("elsewhere.example.com") is None
    for host, says in [("leaky.example.com", "exit 3"), ("garbage.example.com", "not a JSON object")]:
        with pytest.raises(RegistryError) as e:
            credentials_for(host)
        assert says in str(e.value) and "S3CRET" not in str(e.value)


def test_credentials_for_docker_hub_use_its_index_key(_isolated: Path) -> None:
    write_config(_isolated, {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:pw")}}})
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        creds = credentials_for(host)
        assert creds is not None and creds.username == "hubuser"


def test_client_asks_for_credentials_only_when_challenged(_isolated: Path, helper_path: Path) -> None:
    write_config(_isolated, {"credsStore": "test"})
    ok = Reply(200, {"Content-Type": "application/json"}, b"{}")
    with FakeServer(lambda r: ok) as srv, RegistryClient(target(srv.host)) as c:
        c.ping()
    assert not (helper_path / "asked").exists()
    challenge = Reply(401, {"WWW-Authenticate": 'Basic realm="x"'})
    srv = FakeServer(lambda r: challenge)
    with srv, RegistryClient(target(srv.host)) as c, pytest.raises(RegistryError) as e:
        c.ping()
    assert (helper_path / "asked").read_text().split() == [srv.host]
    assert "no credentials" in str(e.value)  # the store has none for this host


def test_credentials_missing_helper(_isolated: Path) -> None:
    write_config(_isolated, {"credHelpers": {"reg.example.com": "no-such-helper-ocicache"}})
    with pytest.raises(RegistryError) as e:
        credentials_for("reg.example.com")
    assert "docker-credential-no-such-helper-ocicache" in str(e.value) and "not installed" in str(e.value)


# -- the real registry --------------------------------------------------------------------


def test_fixture_registry_answers_as_recorded(fixture_registry) -> None:  # noqa: F811
    reg = fixture_registry("reg-history")
    truth = registry_truth("reg-history")
    repo = "myorg/app-cache"
    http = truth["final"]["http"]["repositories"][repo]
    t = parse_target(reg.target(repo))
    assert t is not None and t.insecure
    with RegistryClient(t, credentials=None) as c:
        c.ping()
        assert sorted(c.tags()) == sorted(http["tags_list"])
        answers = {**http["tags"], **http["revisions"]}
        got = c.map(c.get_manifest, list(answers))
        for (ref, want), m in zip(answers.items(), got, strict=True):
            assert isinstance(m, ManifestResponse)
            assert m.digest == want["docker_content_digest"] == want["body_sha256"] == sha(m.data)
            assert (m.media_type, len(m.data)) == (want["content_type"], want["content_length"])
            assert c.head_manifest(ref) == (m.digest, m.media_type, len(m.data))
        blobs = http["blobs_head"]
        assert c.map(c.head_blob, list(blobs)) == [b["content_length"] for b in blobs.values()]
        small = [d for d, b in blobs.items() if b["content_length"] < 64 << 10]
        for digest, data in zip(small, c.map(lambda d: c.get_blob(d, 64 << 10), small), strict=True):
            assert data is not None and sha(data) == digest and len(data) == blobs[digest]["content_length"]
        big = max(blobs, key=lambda d: blobs[d]["content_length"])
        h = hashlib.sha256()
        with c.open_blob(big) as chunks:
            for chunk in chunks:
                h.update(chunk)
        assert f"sha256:{h.hexdigest()}" == big
        with pytest.raises(TooLargeError) as e:
            c.get_blob(big, 1000)
        assert e.value.limit == 1000
        with pytest.raises(TooLargeError):
            c.get_manifest("buildcache", limit=100)
        missing = f"sha256:{'0' * 64}"
        assert c.get_manifest("no-such-tag") is None
        assert c.get_manifest(missing) is None and c.head_manifest(missing) is None
        assert c.head_blob(missing) is None and c.get_blob(missing, 10) is None
        with pytest.raises(NotFoundError), c.open_blob(missing):
            pass
    with RegistryClient(target(reg.host, "no/such-repo"), credentials=None) as c:
        with pytest.raises(NotFoundError) as e:
            c.tags()
        assert "no/such-repo" in str(e.value) and "NAME_UNKNOWN" in str(e.value)


def test_push_tags_delete_on_a_real_registry(registry) -> None:  # noqa: F811
    with RegistryClient(parse_target(registry.target(REPO)), credentials=None) as c:  # type: ignore[arg-type]
        config, layer = c.push_blob(b"{}"), c.push_blob(b"layer")
        assert (config, layer) == (sha(b"{}"), sha(b"layer"))
        assert c.push_blob(b"layer") == layer  # already there: nothing uploaded
        docs = [manifest(config, layer, f"n{i}") for i in range(5)]
        digests = c.map(lambda i: c.put_manifest(f"t{i}", docs[i], OCI_MANIFEST), range(5))
        assert digests == [sha(d) for d in docs]
        assert c.put_manifest(sha(docs[0]), docs[0], OCI_MANIFEST) == sha(docs[0])  # by digest
        c.page_size = 2  # distribution 2.8.2 ignores n: the whole list comes in one answer
        assert sorted(c.tags()) == [f"t{i}" for i in range(5)]
        got = c.get_manifest("t3")
        assert got == ManifestResponse(docs[3], OCI_MANIFEST, sha(docs[3]))
        assert c.delete_manifest(sha(docs[3])) is True
        assert c.delete_manifest(sha(docs[3])) is False
        assert c.get_manifest("t3") is None and c.get_manifest(sha(docs[3])) is None
        assert sorted(c.tags()) == ["t0", "t1", "t2", "t4"]
        with pytest.raises(CorruptError):
            c.put_manifest(sha(b"other"), docs[0], OCI_MANIFEST)  # the digest must be the content's


def test_basic_auth_on_a_real_registry(tmp_path: Path, _isolated: Path) -> None:
    reg = start_registry(tmp_path / "auth-registry", htpasswd=("alice", "s3cret"))
    try:
        t = parse_target(reg.target(REPO))
        assert t is not None
        good = Credentials("alice", "s3cret")
        with RegistryClient(t, credentials=good) as c:
            c.ping()
            digest = c.push_blob(b"data")
            assert c.get_blob(digest, 100) == b"data"
            with pytest.raises(NotFoundError):
                c.tags()
        for creds in (Credentials("alice", "wrong-password-xyz"), Credentials("mallory", "s3cret")):
            with RegistryClient(t, credentials=creds) as c, pytest.raises(RegistryError) as e:
                c.ping()
            assert e.value.exit_code == EXIT_REGISTRY
            assert "were refused" in str(e.value) and reg.host in str(e.value)
            assert creds.secret not in str(e.value) and creds.secret not in repr(e.value)
        with RegistryClient(t, credentials=None) as c, pytest.raises(RegistryError) as e:
            c.head_blob(digest)
        assert "401 unauthorized" in str(e.value) and "no credentials for" in str(e.value)
        assert "$DOCKER_CONFIG/config.json" in str(e.value)
        # the default: Docker's config.json
        write_config(_isolated, {"auths": {reg.host: {"auth": b64("alice:s3cret")}}})
        with RegistryClient(t) as c:
            assert c.head_blob(digest) == 4
    finally:
        reg.stop()


# -- Bearer tokens ------------------------------------------------------------------------


class TokenWorld:
    """A token server and a registry that wants its tokens (the distribution token spec)."""

    def __init__(self, anonymous_pull: bool = False) -> None:
        self.tokens: dict[str, set[str]] = {}
        self.token_requests: list[Request] = []
        self.anonymous_pull = anonymous_pull
        self.expires_in: int | None = 300
        self.auth = FakeServer(self.token)
        self.reg = FakeServer(self.registry)

    def close(self) -> None:
        self.auth.close()
        self.reg.close()

    def token(self, req: Request) -> Reply:
        self.token_requests.append(req)
        if req.method == "POST":
            form = parse_qs(req.body.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [SECRET]:
                return Reply(401, body=b'{"error":"invalid_grant"}')
            scopes = form.get("scope", [""])[0].split()
        else:
            scopes = req.query.get("scope", [])
            if req.headers.get("authorization") != "Basic " + b64(f"alice:{SECRET}"):
                if not (self.anonymous_pull and "authorization" not in req.headers):
                    return Reply(401, body=b'{"details":"incorrect username or password"}')
                scopes = [s.replace("push", "").rstrip(",") for s in scopes if s.endswith("pull")]
        actions = set()
        for s in scopes:
            kind, _, rest = s.partition(":")
            name, _, acts = rest.rpartition(":")
            if kind == "repository" and name == REPO:
                actions |= set(acts.split(","))
        value = f"tok-{len(self.tokens)}"
        self.tokens[value] = actions
        doc: dict[str, object] = {"token": value}
        if self.expires_in is not None:
            doc["expires_in"] = self.expires_in
        return Reply(200, {"Content-Type": "application/json"}, json.dumps(doc).encode())

    def registry(self, req: Request) -> Reply:
        action = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(req.method, "push")
        have = self.tokens.get(req.headers.get("authorization", "").removeprefix("Bearer "), set())
        if (action not in have and req.route != "/v2/") or (req.route == "/v2/" and not have):
            scope = "" if req.route == "/v2/" else f',scope="repository:{REPO}:{action}"'
            realm = self.auth.url("/token")
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="fake-registry"{scope}'})
        if req.route == f"/v2/{REPO}/tags/list":
            return Reply(200, {"Content-Type": "application/json"}, b'{"name":"myorg/app","tags":["a","b"]}')
        if req.method == "DELETE":
            return Reply(202)
        return Reply(200, {"Content-Type": "application/json"}, b"{}")


@pytest.fixture
def world():
    w = TokenWorld()
    yield w
    w.close()


def test_bearer_tokens_are_fetched_cached_and_scoped(world: TokenWorld) -> None:
    with client(world.reg.host, credentials=Credentials("alice", SECRET)) as c:
        c.ping()
        assert c.tags() == ["a", "b"]
        assert c.tags() == ["a", "b"]
        pulls = list(world.token_requests)
        assert len(pulls) == 1  # the ping's token serves the pulls too
        assert pulls[0].query["scope"] == [f"repository:{REPO}:pull"]
        assert pulls[0].query["service"] == ["fake-registry"]
        assert c.delete_manifest(sha(b"x")) is True
        delete = world.token_requests[-1]
        assert set(delete.query["scope"]) == {f"repository:{REPO}:delete"}
        assert c.delete_manifest(sha(b"y")) is True
        assert len(world.token_requests) == 2  # the delete token is cached too
        sent = [r.headers.get("authorization", "") for r in world.reg.requests]
        assert all(SECRET not in s for s in sent)  # the password goes to the token server only


def test_bearer_token_expiry_and_revocation(world: TokenWorld) -> None:
    now = [1000.0]
    world.expires_in = None  # the spec's default: 60 s
    with client(world.reg.host, credentials=Credentials("alice", SECRET)) as c:
        c._clock = lambda: now[0]
        assert c.tags() == ["a", "b"]
        now[0] += 30
        assert c.tags() == ["a", "b"]
        assert len(world.token_requests) == 1
        now[0] += 31  # past 60 s: a new token before the request
        assert c.tags() == ["a", "b"]
        assert len(world.token_requests) == 2
        world.tokens.clear()  # revoked: a 401 comes back once, then a fresh token works
        assert c.tags() == ["a", "b"]
        assert len(world.token_requests) == 3


def test_bearer_with_identity_token(world: TokenWorld) -> None:
    with client(world.reg.host, credentials=Credentials("", SECRET, identity_token=True)) as c:
        assert c.tags() == ["a", "b"]
    (req,) = world.token_requests
    form = parse_qs(req.body.decode())
    assert req.method == "POST" and form["grant_type"] == ["refresh_token"]
    assert form["scope"] == [f"repository:{REPO}:pull"] and form["service"] == ["fake-registry"]


def test_bearer_anonymous_and_refused() -> None:
    w = TokenWorld(anonymous_pull=True)
    try:
        with client(w.reg.host) as c:
            assert c.tags() == ["a", "b"]
            with pytest.raises(RegistryError) as e:
                c.delete_manifest(sha(b"x"))  # an anonymous token without delete: refused
            assert "401 unauthorized" in str(e.value) and "no credentials" in str(e.value)
        with client(w.reg.host, credentials=Credentials("alice", "not-the-password")) as c:
            with pytest.raises(RegistryError) as e:
                c.tags()
            assert "were refused" in str(e.value) and "token server" in str(e.value)
            assert "not-the-password" not in str(e.value) and e.value.exit_code == EXIT_REGISTRY
    finally:
        w.close()


def test_plain_http_realm_gets_no_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "reg.example.com"  # never the realm
        return httpx.Response(
            401, headers={"WWW-Authenticate": 'Bearer realm="http://auth.example.com/token"'}
        )

    t = RegistryTarget("reg.example.com", REPO, None, None, insecure=False)
    with (
        RegistryClient(
            t, credentials=Credentials("alice", SECRET), transport=httpx.MockTransport(handler)
        ) as c,
        pytest.raises(RegistryError) as e,
    ):
        c.tags()
    assert "plain HTTP" in str(e.value) and SECRET not in str(e.value)


def test_basic_challenge_without_credentials() -> None:
    with FakeServer(lambda r: Reply(401, {"WWW-Authenticate": 'Basic realm="x"'})) as srv:
        with client(srv.host) as c, pytest.raises(RegistryError) as e:
            c.ping()
        assert str(e.value) == (
            f"401 unauthorized at {srv.host}: no credentials for {srv.host} in $DOCKER_CONFIG/config.json"
        )
        with (
            client(srv.host, credentials=Credentials("alice", SECRET)) as c,
            pytest.raises(RegistryError) as e,
        ):
            c.ping()
        assert "credentials for" in str(e.value) and "refused" in str(e.value) and SECRET not in str(e.value)
        assert len(srv.requests) == 3  # anonymous, then once with the credentials: no loop
        assert srv.requests[-1].headers["authorization"] == "Basic " + b64(f"alice:{SECRET}")


# -- retries, redirects, bad answers ------------------------------------------------------


def sequence(*replies: Reply) -> tuple[list[Reply], object]:
    queue = list(replies)

    def handler(req: Request) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return queue, handler


def test_retries_429_and_503_then_success() -> None:
    ok = Reply(200, {"Content-Type": "application/json"}, b'{"tags":["x"]}')
    _, handler = sequence(
        Reply(429, {"Retry-After": "3"}), Reply(503), Reply(429, {"Retry-After": "600"}), ok
    )
    with FakeServer(handler) as srv, client(srv.host) as c:  # type: ignore[arg-type]
        sleeps: list[float] = []
        c._sleep = sleeps.append
        assert c.tags() == ["x"]
        assert len(srv.requests) == 4
    assert sleeps[0] == 3.0 and sleeps[2] == 10.0  # Retry-After, capped at 10 s
    assert 0 < sleeps[1] < 0.01  # backoff with jitter


def test_retries_exhausted() -> None:
    body = b'{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}'
    with FakeServer(lambda r: Reply(503, {"Content-Type": "application/json"}, body)) as srv:
        with client(srv.host, retries=2) as c:
            sleeps: list[float] = []
            c._sleep = sleeps.append
            with pytest.raises(RegistryError) as e:
                c.get_manifest("latest")
        assert len(srv.requests) == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0] / 3
        message = str(e.value)
        assert "503" in message and "3 attempts" in message and "UNAVAILABLE: try later" in message
        assert srv.host in message and f"/v2/{REPO}/manifests/latest" in message


def test_redirect_to_another_host_is_refused() -> None:
    def handler(req: Request) -> Reply:
        if req.route == "/storage/blob":
            return Reply(200, body=b"blob!")
        if req.route.endswith("/same"):
            return Reply(307, {"Location": "/storage/blob"})
        if req.route.endswith("/port"):
            return Reply(307, {"Location": f"http://127.0.0.1:{closed_port()}/storage/blob"})
        if req.route.endswith("/loop"):
            return Reply(302, {"Location": req.path})
        return Reply(302, {"Location": f"http://127.0.0.2:{srv.host.rsplit(':', 1)[1]}/storage/blob"})

    with FakeServer(handler) as srv, client(srv.host) as c:
        # same scheme, host and port: followed
        assert c._exchange("GET", "/v2/x/same", scope="", limit=100).body == b"blob!"
        with pytest.raises(RegistryError) as e:
            c.get_blob(sha(b"blob!"), 100)
        assert str(e.value) == (
            f"{srv.host} redirected to 127.0.0.2:{srv.host.rsplit(':', 1)[1]};"
            " ocicache does not follow redirects to another host"
        )
        with pytest.raises(RegistryError, match="does not follow redirects to another host"):
            c._exchange("GET", "/v2/x/port", scope="", limit=100)
        with pytest.raises(RegistryError, match="more than 5 redirects"):
            c._exchange("GET", "/v2/x/loop", scope="", limit=100)
        assert all(r.headers["host"] == srv.host for r in srv.requests)


def test_same_host_redirect_for_a_blob() -> None:
    def handler(req: Request) -> Reply:
        if req.route.startswith("/v2/"):
            return Reply(307, {"Location": f"http://{srv.host}/storage/x"})
        return Reply(200, body=b"blob!")

    with FakeServer(handler) as srv, client(srv.host) as c:
        assert c.get_blob(sha(b"blob!"), 100) == b"blob!"


def test_wrong_bytes_are_corrupt() -> None:
    good, bad = b'{"schemaVersion":2}', b'{"schemaVersion":3}'

    def handler(req: Request) -> Reply:
        headers = {"Content-Type": OCI_MANIFEST}
        if req.route.endswith("/lying-header"):
            headers["Docker-Content-Digest"] = sha(good)
        return Reply(200, headers, bad)

    with FakeServer(handler) as srv, client(srv.host) as c:
        with pytest.raises(CorruptError) as e:
            c.get_manifest(sha(good))
        assert sha(good) in str(e.value) and sha(bad) in str(e.value) and REPO in str(e.value)
        with pytest.raises(CorruptError) as e:
            c.get_manifest("lying-header")
        assert "lying-header" in str(e.value) and sha(good) in str(e.value) and sha(bad) in str(e.value)
        with pytest.raises(CorruptError):
            c.get_blob(sha(good), 100)
        assert c.get_manifest("plain").digest == sha(bad)  # type: ignore[union-attr]


def test_huge_manifest_is_too_large() -> None:
    def handler(req: Request) -> Reply:
        if req.route.endswith("/chunked"):
            return Reply(200, {"Content-Type": OCI_MANIFEST}, chunks=iter([b"{" + b" " * (1 << 20)] * 5))
        return Reply(200, {"Content-Type": OCI_MANIFEST}, b"{" + b" " * 2000 + b"}")

    with FakeServer(handler) as srv, client(srv.host) as c:
        with pytest.raises(TooLargeError) as e:
            c.get_manifest("chunked")
        assert e.value.limit == 4 << 20 and "manifest limit" in str(e.value) and srv.host in str(e.value)
        with pytest.raises(TooLargeError):
            c.get_manifest("sized", limit=1000)  # Content-Length says so: not read
        assert c.get_manifest("sized", limit=3000) is not None


@pytest.mark.parametrize(
    ("reply", "call", "error", "says"),
    [
        (
            Reply(200, {"Content-Type": "text/html"}, b"<html>hello</html>"),
            "ping",
            RegistryError,
            "not the registry API",
        ),
        (Reply(404, {"Content-Type": "text/html"}, b"<html>no</html>"), "ping", RegistryError, "404"),
        (
            Reply(200, {"Content-Type": "text/html"}, b"<html>hello</html>"),
            "manifest",
            CorruptError,
            "not a JSON manifest",
        ),
        (
            Reply(200, {"Content-Type": "application/json"}, b'{"tags": ['),
            "tags",
            CorruptError,
            "not a JSON object",
        ),
        (
            Reply(200, {"Content-Type": "application/json"}, b'{"tags": [1]}'),
            "tags",
            CorruptError,
            "not a list of strings",
        ),
        (Reply(200, {"Content-Type": "text/html"}, b"<html>"), "tags", CorruptError, "not a JSON object"),
        (
            Reply(403, {}, b'{"errors":[{"code":"DENIED","message":"no"}]}'),
            "tags",
            RegistryError,
            "403 denied",
        ),
        (Reply(418, {}, b"<html>teapot</html>"), "tags", RegistryError, "not the registry API"),
        (
            Reply(405, {}, b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'),
            "delete",
            RefusedError,
            "does not allow deleting",
        ),
        (
            Reply(400, {}, b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'),
            "delete",
            RefusedError,
            "deletion is disabled",
        ),
        (
            Reply(400, {}, b'{"errors":[{"code":"DIGEST_INVALID"}]}'),
            "delete",
            RegistryError,
            "DIGEST_INVALID",
        ),
        (
            Reply(200, {"Content-Type": OCI_MANIFEST, "Docker-Content-Digest": "md5:x"}, b"{}"),
            "manifest",
            CorruptError,
            "Docker-Content-Digest",
        ),
    ],
)
def test_answers_outside_the_api(reply: Reply, call: str, error: type[Exception], says: str) -> None:
    with FakeServer(lambda r: reply) as srv, client(srv.host) as c:
        with pytest.raises(error) as e:
            {
                "ping": c.ping,
                "manifest": lambda: c.get_manifest("latest"),
                "tags": c.tags,
                "delete": lambda: c.delete_manifest(sha(b"x")),
            }[call]()
        assert says in str(e.value) and srv.host in str(e.value) and "\n" not in str(e.value)
        if error is RefusedError:
            assert e.value.exit_code == EXIT_REFUSED  # type: ignore[attr-defined]


def test_tags_pagination_follows_link() -> None:
    pages = {None: ["a", "b"], "b": ["c", "d"], "d": ["e"]}

    def handler(req: Request) -> Reply:
        last = req.query.get("last", [None])[0]
        tags = pages[last]
        headers = {"Content-Type": "application/json"}
        if tags[-1] != "e":
            headers["Link"] = f'</v2/{REPO}/tags/list?last={tags[-1]}&n=2>; rel="next"'
        return Reply(200, headers, json.dumps({"name": REPO, "tags": tags}).encode())

    with FakeServer(handler) as srv, client(srv.host) as c:
        c.page_size = 2
        assert c.tags() == ["a", "b", "c", "d", "e"]
        assert [r.query.get("n") for r in srv.requests] == [["2"]] * 3


def test_tags_pagination_by_last_and_edges() -> None:
    def handler(req: Request) -> Reply:
        last = req.query.get("last", [""])[0]
        if req.route.startswith("/v2/null/"):
            return Reply(200, {}, b'{"name":"null","tags":null}')
        if req.route.startswith("/v2/away/"):
            return Reply(
                200, {"Link": '<http://127.0.0.2:1/v2/away/tags/list?n=2>; rel="next"'}, b'{"tags":["a"]}'
            )
        tags = {"": ["a", "b"], "b": ["c", "d"], "d": []}[last]  # full pages, no Link
        return Reply(200, {}, json.dumps({"tags": tags}).encode())

    with FakeServer(handler) as srv:
        with client(srv.host) as c:
            c.page_size = 2
            assert c.tags() == ["a", "b", "c", "d"]
        with RegistryClient(target(srv.host, "null"), credentials=None) as c:
            assert c.tags() == []
        away = RegistryClient(target(srv.host, "away"), credentials=None)
        with away, pytest.raises(RegistryError, match="does not follow redirects to another host"):
            away.tags()


def test_a_stalled_body_is_retried() -> None:
    served = []

    def stall() -> Iterator[bytes]:
        yield b'{"tags": ['
        time.sleep(1)
        yield b"]}"

    def handler(req: Request) -> Reply:
        served.append(req)
        if len(served) == 1:
            return Reply(200, {"Content-Type": "application/json"}, chunks=stall())
        return Reply(200, {"Content-Type": "application/json"}, b'{"tags": ["ok"]}')

    with FakeServer(handler) as srv, client(srv.host, timeout=0.2) as c:
        assert c.tags() == ["ok"]
    assert len(served) == 2


def test_a_trickling_body_is_a_timeout_not_a_hang() -> None:
    """A server that sends a byte at a time, each well within the read timeout, never trips
    that timeout: a body bringing under STALL_BYTES in a timeout's time is stalled, retried
    once as a timeout is, then reported. A slow server that keeps bringing data is not."""
    doc = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "pad": "x" * 4000}).encode()

    def trickle() -> Iterator[bytes]:
        for i in range(len(doc)):
            time.sleep(0.01)  # ~100 bytes/s: the whole document would take 40 s
            yield doc[i : i + 1]

    def slow() -> Iterator[bytes]:
        for i in range(0, len(doc), 2048):
            time.sleep(0.1)  # 2 KiB per 0.1 s
            yield doc[i : i + 2048]

    served: list[Request] = []

    def handler(req: Request) -> Reply:
        served.append(req)
        body = trickle() if req.route.endswith("/latest") else slow()
        return Reply(200, {"Content-Type": OCI_MANIFEST}, chunks=body)

    with FakeServer(handler) as srv, client(srv.host, timeout=0.3, retries=3) as c:
        c._sleep = lambda s: None
        start = time.monotonic()
        with pytest.raises(RegistryError) as e:
            c.get_manifest("latest")
        elapsed = time.monotonic() - start
        got = c.get_manifest("slow")
    assert elapsed < 5, elapsed
    assert "timed out (2 attempts)" in str(e.value) and srv.host in str(e.value), str(e.value)
    assert e.value.exit_code == EXIT_REGISTRY
    assert [r.route for r in served].count("/v2/" + REPO + "/manifests/latest") == 2
    assert got is not None and got.data == doc


def test_a_slow_reader_of_a_blob_is_not_a_stalled_server() -> None:
    """Only the time spent waiting for the body counts: a caller that takes longer than the
    read timeout over each chunk of a streamed blob, the last chunk a few bytes, gets it all."""
    blob = os.urandom(70_000) + b"tail"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    def body() -> Iterator[bytes]:
        yield blob[:-4]
        time.sleep(0.05)  # (the tail comes in a read of its own)
        yield blob[-4:]

    def handler(req: Request) -> Reply:
        return Reply(200, {"Content-Type": "application/octet-stream"}, chunks=body())

    got = []
    with FakeServer(handler) as srv, client(srv.host, timeout=0.3) as c, c.open_blob(digest) as chunks:
        for chunk in chunks:
            got.append(chunk)
            time.sleep(0.4)
    assert b"".join(got) == blob and got[-1] == b"tail"


def test_connection_refused_is_quick() -> None:
    port = closed_port()
    start = time.monotonic()
    with client(f"127.0.0.1:{port}", retries=4) as c, pytest.raises(RegistryError) as e:
        c.ping()
    assert time.monotonic() - start < 2
    assert str(e.value).startswith(f"cannot connect to 127.0.0.1:{port}:") and "\n" not in str(e.value)
    assert e.value.exit_code == EXIT_REGISTRY


def test_silent_server_times_out() -> None:
    with SilentServer() as srv, client(srv.host, timeout=0.3, retries=1) as c:
        c._sleep = lambda s: None
        start = time.monotonic()
        with pytest.raises(RegistryError) as e:
            c.get_manifest("latest")
        elapsed = time.monotonic() - start
    assert 0.5 < elapsed < 3
    assert "timed out (2 attempts)" in str(e.value) and srv.host in str(e.value)


def test_tls_to_a_plain_http_server_hints_at_insecure() -> None:
    with FakeServer(lambda r: Reply(200)) as srv:
        t = RegistryTarget(srv.host, REPO, None, None, insecure=False)
        with RegistryClient(t, credentials=None, retries=0) as c, pytest.raises(RegistryError) as e:
            c.ping()
    assert "TLS" in str(e.value) and e.value.hint == "for plain HTTP use --insecure or registry.insecure=true"


def test_names_and_digests_are_validated_before_any_request() -> None:
    with FakeServer(lambda r: Reply(200)) as srv, client(srv.host) as c:
        for call in (
            lambda: c.get_manifest("../../etc"),
            lambda: c.get_manifest("sha256:../x"),
            lambda: c.get_blob("sha256:abc", 10),
            lambda: c.head_blob("latest"),
            lambda: c.delete_manifest("latest"),
            lambda: c.put_manifest("a/b", b"{}", OCI_MANIFEST),
        ):
            with pytest.raises(UsageError):
                call()
        assert srv.requests == []
    with pytest.raises(UsageError):
        RegistryClient(RegistryTarget("127.0.0.1:1", "../x", None, None, True), credentials=None)


def test_map_is_ordered_bounded_and_raises_the_first_error() -> None:
    running, peak = [0], [0]
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    with RegistryClient(target("127.0.0.1:1"), credentials=None, workers=3) as c:
        assert c.map(work, range(20)) == [i * i for i in range(20)]
        assert peak[0] <= 3
        assert c.map(work, []) == []

        def fail(i: int) -> int:
            if i == 2:
                raise NotFoundError("two")
            return i

        with pytest.raises(NotFoundError, match="two"):
            c.map(fail, range(10))
