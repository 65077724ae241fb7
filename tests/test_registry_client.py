"""store/registry: targets, and Docker credentials (config.json, credential helpers)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from ocicache.base.errors import EXIT_REGISTRY, RegistryError, UsageError
from ocicache.store.registry.auth import credentials_for
from ocicache.store.registry.target import is_loopback, parse_target

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


def test_credentials_missing_helper(_isolated: Path) -> None:
    write_config(_isolated, {"credHelpers": {"reg.example.com": "no-such-helper-ocicache"}})
    with pytest.raises(RegistryError) as e:
        credentials_for("reg.example.com")
    assert "docker-credential-no-such-helper-ocicache" in str(e.value) and "not installed" in str(e.value)
