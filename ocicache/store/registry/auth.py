"""Registry credentials as Docker keeps them: `$DOCKER_CONFIG/config.json` (default
~/.docker/config.json) with `credHelpers`, `auths` and `credsStore`.

The order: a `credHelpers` entry for the host (its `docker-credential-<name> get`), then an
`auths` entry (`auth` base64 "user:pass", `username`/`password`, or `identitytoken`), then the
`credsStore` helper; no credentials at all means anonymous access. A secret is never logged,
printed or put in an exception message; `Credentials.__repr__` hides it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocicache.base.errors import RegistryError

HELPER_TIMEOUT = 20.0  # seconds a docker-credential-* helper may take
CONFIG_LIMIT = 16 << 20
TOKEN_USERNAME = "<token>"  # a helper's Username when its Secret is an identity token
# Docker Hub's credentials are kept under its v1 index address (docker login's default).
_HUB_KEY = "https://index.docker.io/v1/"
_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_NOT_FOUND = "credentials not found"  # docker-credential-helpers' errCredentialsNotFound


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and its secret: a password, or an identity (refresh) token when
    `identity_token`. `source` says where they came from, for messages."""

    username: str
    secret: str = field(repr=False)
    identity_token: bool = False
    source: str = ""

    def __repr__(self) -> str:
        kind = "identity token" if self.identity_token else "password"
        return f"Credentials(username={self.username!r}, secret=<{kind} hidden>, source={self.source!r})"

    __str__ = __repr__


def config_path() -> Path:
    """Docker's config.json: $DOCKER_CONFIG/config.json, else ~/.docker/config.json."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def config_display() -> str:
    """How messages name the config file ($DOCKER_CONFIG/config.json or its path)."""
    return "$DOCKER_CONFIG/config.json" if os.environ.get("DOCKER_CONFIG") else str(config_path())


def credentials_for(host: str) -> Credentials | None:
    """The credentials Docker would use for `host` ("HOST[:PORT]"), or None (anonymous).

    Raises RegistryError when config.json cannot be read or a helper fails."""
    path = config_path()
    config = _load(path)
    if config is None:
        return None
    keys = _keys(host)
    helpers = _table(config, "credHelpers", path)
    for key in keys:
        name = helpers.get(key)
        if isinstance(name, str) and name:
            creds = run_helper(name, key)
            if creds is not None:
                return creds
            break
    auths = _table(config, "auths", path)
    entry = _auth_entry(auths, keys)
    if entry is not None:
        creds = _from_entry(entry[1], entry[0], path)
        if creds is not None:
            return creds
    store = config.get("credsStore")
    if store is not None and not isinstance(store, str):
        raise RegistryError(f"{path}: credsStore is not a string")
    if store:
        for key in keys:
            creds = run_helper(store, key)
            if creds is not None:
                return creds
    return None


def run_helper(name: str, server: str) -> Credentials | None:
    """`docker-credential-<name> get` with `server` on stdin: its credentials, or None when
    it has none for `server`. Raises RegistryError naming the helper when it fails."""
    program = f"docker-credential-{name}"
    if "/" in name or not name.strip():
        raise RegistryError(f"{name!r} is not a credential helper name")
    try:
        done = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise RegistryError(
            f"credential helper {program} (named in {config_display()}) is not installed",
            hint=f"install {program} or remove it from {config_display()}",
        ) from None
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {program} did not answer in {HELPER_TIMEOUT:g} s") from None
    except OSError as e:
        raise RegistryError(f"credential helper {program} could not be run: {e.strerror or e}") from None
    if done.returncode != 0:
        said = _helper_words(done.stdout) or _helper_words(done.stderr)
        if _NOT_FOUND in said.lower():
            return None
        raise RegistryError(
            f"credential helper {program} failed for {server} (exit {done.returncode})"
            + (f": {said}" if said else "")
        )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise RegistryError(f"credential helper {program} answered something that is not a JSON object")
    username, secret = answer.get("Username"), answer.get("Secret")
    if not isinstance(username, str) or not isinstance(secret, str):
        raise RegistryError(f"credential helper {program} answered without string Username and Secret")
    if not secret:
        return None
    if username == TOKEN_USERNAME:
        return Credentials("", secret, identity_token=True, source=program)
    return Credentials(username, secret, source=program)


def _helper_words(output: bytes) -> str:
    # A helper's error message, its first line, cut short; never anything shaped like JSON,
    # which might carry a secret.
    text = output.decode("utf-8", "replace").strip()
    if not text or text.startswith(("{", "[")):
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= 200 else line[:197] + "..."


def _load(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as f:
            data = f.read(CONFIG_LIMIT + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RegistryError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > CONFIG_LIMIT:
        raise RegistryError(f"{path} is larger than {CONFIG_LIMIT >> 20} MiB")
    if not data.strip():
        return None
    try:
        config = json.loads(data)
    except ValueError as e:
        # The message of a JSON error names a position, never the text around it.
        raise RegistryError(f"{path} is not valid JSON (line {getattr(e, 'lineno', '?')})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return config


def _table(config: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = config.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RegistryError(f"{path}: {key} is not an object")
    return value


def _keys(host: str) -> list[str]:
    """The keys credentials for `host` may be kept under, most specific first."""
    host = host.lower()
    return [_HUB_KEY, *sorted(_HUB_HOSTS)] if host in _HUB_HOSTS else [host]


def _hostname(key: str) -> str:
    # Docker's ConvertToHostname: drop the scheme and everything after the first "/".
    for scheme in ("http://", "https://"):
        if key.lower().startswith(scheme):
            key = key[len(scheme) :]
            break
    return key.split("/", 1)[0].lower()


def _auth_entry(auths: dict[str, Any], keys: list[str]) -> tuple[str, Any] | None:
    for key in keys:
        if key in auths:
            return key, auths[key]
    wanted = {_hostname(k) for k in keys}
    for key, entry in auths.items():
        if _hostname(key) in wanted:
            return key, entry
    return None


def _from_entry(entry: Any, key: str, path: Path) -> Credentials | None:
    where = f"{path}: auths[{key!r}]"
    if not isinstance(entry, dict):
        raise RegistryError(f"{where} is not an object")
    source = f"{path} auths"
    token = entry.get("identitytoken")
    username = entry.get("username")
    password = entry.get("password")
    auth = entry.get("auth")
    if auth:
        if not isinstance(auth, str):
            raise RegistryError(f"{where}: auth is not a string")
        try:
            decoded = base64.b64decode(auth.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise RegistryError(f"{where}: auth is not base64 of user:password") from None
        user, sep, secret = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{where}: auth is not base64 of user:password")
        username, password = user, secret
    if token:
        if not isinstance(token, str):
            raise RegistryError(f"{where}: identitytoken is not a string")
        return Credentials(username if isinstance(username, str) else "", token, True, source)
    if username is None and password is None:
        return None
    if not isinstance(username, str) or not isinstance(password, str):
        raise RegistryError(f"{where}: username and password must both be strings")
    if not password:
        return None
    return Credentials(username, password, source=source)
