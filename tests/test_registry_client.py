"""store/registry: targets (registry://HOST/REPO[:TAG][@DIGEST] and type=registry specs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocicache.base.errors import UsageError
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
