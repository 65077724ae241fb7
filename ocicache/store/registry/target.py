"""Registry targets: `registry://HOST[:PORT]/REPO[:TAG][@DIGEST]` or a BuildKit spec
`type=registry,ref=HOST/REPO[:TAG][@DIGEST][,registry.insecure=true]`, parsed and validated.

Names follow distribution's reference grammar (distribution/reference/regexp.go). The host is
always explicit: there is no implicit docker.io. Plain HTTP is used when asked for (the
`insecure` argument, `registry.insecure=true`) and for loopback hosts, as BuildKit does.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from dataclasses import dataclass

from ocicache.base.errors import UsageError
from ocicache.format.digest import parse_digest

PREFIX = "registry://"
NAME_LIMIT = 255  # distribution: a repository name is at most 255 characters
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(rf"(?P<name>{_LABEL}(?:\.{_LABEL})*|\[(?P<ip6>[a-fA-F0-9:.%]+)\])(?::(?P<port>[0-9]+))?")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class RegistryTarget:
    """A repository in a registry, optionally one tag or one digest in it."""

    host: str  # "HOST[:PORT]" as written, host part lower-cased; IPv6 as "[::1]:5000"
    repo: str  # "myorg/app-cache"
    tag: str | None
    digest: str | None  # "sha256:<hex>" when the target named one
    insecure: bool  # plain HTTP

    @property
    def scheme(self) -> str:
        return "http" if self.insecure else "https"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def display(self) -> str:
        """`registry://HOST/REPO[:TAG][@DIGEST]`: the target as JSON output names it."""
        text = f"{PREFIX}{self.host}/{self.repo}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def ref(self, digest: str) -> str:
        """`HOST/REPO@DIGEST`, the form BuildKit's `ref=` takes."""
        return f"{self.host}/{self.repo}@{digest}"


def split_host(host: str) -> tuple[str, int | None]:
    """("name or IP", port) of "HOST[:PORT]"; IPv6 addresses come without their brackets."""
    if host.startswith("["):
        addr, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return addr, int(port) if port.isdigit() else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, int(port)
    return host, None


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1, with or without a port."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    name, _port = split_host(host)
    if name.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def validate_repo(repo: str) -> str:
    """`repo` when it is a repository name distribution accepts, else UsageError."""
    if not repo:
        raise UsageError("the repository name is empty")
    if len(repo) > NAME_LIMIT:
        raise UsageError(f"the repository name is {len(repo)} characters; distribution allows {NAME_LIMIT}")
    if not _REPO.fullmatch(repo):
        why = (
            "lower-case"
            if _REPO.fullmatch(repo.lower())
            else "[a-z0-9] separated by '.', '_', '__', '-' or '/'"
        )
        raise UsageError(f"{_short(repo)!r} is not a repository name (want {why})")
    return repo


def validate_tag(tag: str) -> str:
    """`tag` when it is a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}), else UsageError."""
    if not _TAG.fullmatch(tag):
        raise UsageError(f"{_short(tag)!r} is not a tag (want [A-Za-z0-9_][A-Za-z0-9_.-], at most 128)")
    return tag


def validate_reference(reference: str) -> str:
    """A tag or a digest, validated (a digest has a ':'; a tag never does)."""
    if ":" in reference:
        return str(parse_digest(reference))
    return validate_tag(reference)


def parse_target(text: str, *, insecure: bool = False) -> RegistryTarget | None:
    """The registry target `text` names, or None when it is not one (a directory path).

    Raises UsageError when `text` is meant as a registry target but is malformed."""
    stripped = text.strip()
    if stripped[: len(PREFIX)].lower() == PREFIX:
        ref = stripped[len(PREFIX) :]
        try:
            return _parse_ref(ref, insecure)
        except UsageError as e:
            raise UsageError(f"{_short(text)!r}: {e.message}", hint=e.hint) from None
    fields = _spec_fields(stripped)
    if fields is None:
        return None
    try:
        return _parse_spec(fields, insecure)
    except UsageError as e:
        raise UsageError(f"{_short(text)!r}: {e.message}", hint=e.hint) from None


def _spec_fields(text: str) -> list[tuple[str, str] | str] | None:
    """The key=value fields of a BuildKit spec whose type is registry, or None when `text` is
    not such a spec. Fields are read as one CSV record, as buildx reads them."""
    if "=" not in text or "\n" in text or "\r" in text:
        return None
    if "," not in text and not text.lstrip('"').lower().startswith("type="):
        return None
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error:
        rows = []
    if len(rows) != 1:
        if re.search(r'(?:^|,)\s*"?type=registry"?\s*(?:,|$)', text, re.IGNORECASE):
            raise UsageError(f"{_short(text)!r}: cannot read the spec as comma-separated fields")
        return None
    fields: list[tuple[str, str] | str] = []
    kind: str | None = None
    for field in rows[0]:
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if key == "type" and sep:
            kind = value.strip()
        fields.append((key, value) if sep else field)
    if kind != "registry":
        return None
    return fields


def _parse_spec(fields: list[tuple[str, str] | str], insecure: bool) -> RegistryTarget:
    attrs: dict[str, str] = {}
    for field in fields:
        if isinstance(field, str):
            raise UsageError(f"{_short(field)!r} is not key=value (every field of a spec is)")
        key, value = field
        attrs[key] = value  # a later key overrides an earlier one, as in buildx
    ref = attrs.get("ref")
    if ref is None or not ref.strip():
        raise UsageError("a type=registry spec needs ref=HOST/REPO[:TAG]")
    flag = attrs.get("registry.insecure")
    if flag is not None:
        if flag.strip() in _TRUE:
            insecure = True
        elif flag.strip() not in _FALSE:
            raise UsageError(f"registry.insecure={flag!r} is not true or false")
    return _parse_ref(ref.strip(), insecure)


def _parse_ref(ref: str, insecure: bool) -> RegistryTarget:
    """HOST[:PORT]/REPO[:TAG][@DIGEST]."""
    if not ref:
        raise UsageError("no HOST/REPO given")
    if any(c.isspace() for c in ref):
        raise UsageError("the reference contains white space")
    name, at, digest_text = ref.partition("@")
    digest = None
    if at:
        digest = str(parse_digest(digest_text))
    host, slash, rest = name.partition("/")
    if not _looks_like_host(host) or (not slash and not _is_host_alone(host)):
        raise UsageError(_no_host(name), hint=_HOST_HINT)
    if not slash:
        raise UsageError(f"{_short(name)!r} names no repository (want HOST[:PORT]/REPO)")
    host = _validate_host(host)
    tag = None
    repo, colon, tag_text = rest.rpartition(":")
    if colon and "/" not in tag_text:
        tag = validate_tag(tag_text)
    else:
        repo = rest
    validate_repo(repo)
    return RegistryTarget(host, repo, tag, digest, insecure or is_loopback(host))


_HOST_HINT = "registry targets always name their registry, e.g. registry://registry.example.com/myorg/cache"


def _looks_like_host(component: str) -> bool:
    # distribution's rule (reference.ParseNormalizedNamed): a first component with "." or ":",
    # or "localhost", is a registry host; anything else would be a Docker Hub path.
    return "." in component or ":" in component or component.lower() == "localhost"


def _is_host_alone(text: str) -> bool:
    # "localhost:5000" or "registry.example.com" is a host without a repository; "app:v1" is a
    # repository and a tag without a host.
    m = _HOST.fullmatch(text)
    return m is not None and (m.group("port") is not None or "." in text or text.lower() == "localhost")


def _no_host(name: str) -> str:
    return f"{_short(name)!r} names no registry host (no implicit docker.io: write HOST/REPO)"


def _validate_host(host: str) -> str:
    m = _HOST.fullmatch(host)
    if m is None:
        raise UsageError(f"{_short(host)!r} is not a registry host (want HOST[:PORT])")
    port = m.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"{_short(host)!r}: port {port} is out of range")
    ip6 = m.group("ip6")
    if ip6 is not None:
        try:
            ipaddress.IPv6Address(ip6)
        except ValueError:
            raise UsageError(f"{_short(host)!r}: {ip6!r} is not an IPv6 address") from None
    name = m.group("name")
    return name.lower() + (f":{port}" if port is not None else "")


def _short(text: str) -> str:
    return text if len(text) <= 120 else text[:117] + "..."
