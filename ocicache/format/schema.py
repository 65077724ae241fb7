"""The one place JSON Schemas are loaded and applied.

The decoder (decoder.py) decides what is valid; jsonschema explains: it gives the message,
with its path, of a document the decoder refuses (documents.explain), and `check`'s full list
of violations. tests/test_decoder_schemas.py holds the two to the same verdicts.

The schemas (draft 2020-12) ship inside the package as ``ocicache.schemas`` (the repository's
``schemas/`` folder) and are read with importlib.resources, so they are found when installed.
A schema is named by its file name without ``.json`` (``"descriptor"``, ``"cacheconfig"``,
``"history"``, ...); ``$ref`` between them is by relative file name under the common base
``https://ocicache.invalid/schemas/``, resolved locally, never over the network.

``validate`` turns every schema violation into a ``Violation`` with a readable path
(``layers[3].parent``) and a short message. jsonschema and referencing are imported lazily:
the CLI pays for them only when something is invalid.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from referencing import Resource

BASE_URI = "https://ocicache.invalid/schemas/"
_SUFFIX = ".json"
_MAX_REPR = 60
_MAX_MESSAGE = 200
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Violation:
    """One way a document breaks its schema."""

    path: str  # JSON path in the document, e.g. "manifests[2].digest" ("" for the root)
    message: str  # short human text, e.g. "-5 is less than the minimum of 0"


class _Validator(Protocol):
    def iter_errors(self, instance: object) -> Iterator[Any]: ...


def load_schema(name: str) -> dict[str, object]:
    """Return a fresh copy of schema `name` (file name without .json); KeyError if unknown."""
    return copy.deepcopy(_parsed(name))


def validate(document: object, name: str) -> list[Violation]:
    """Every violation of schema `name` by `document`, sorted by path then message."""
    validator = _validator(name)
    found = [_violation(error) for error in validator.iter_errors(document)]
    return sorted(found, key=lambda v: (v.path, v.message))


def schema_names() -> list[str]:
    """Names of every schema shipped, sorted."""
    return list(_names())


# --- loading -------------------------------------------------------------------------------


def schema_dir() -> Traversable:
    """Where the shipped schemas are (inside the installed package, or schemas/ in a checkout)."""
    try:
        return resources.files("ocicache.schemas")
    except ModuleNotFoundError:
        # Running from a source checkout that is not installed: schemas/ sits next to ocicache/.
        return Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def _names() -> tuple[str, ...]:
    found = (
        entry.name[: -len(_SUFFIX)]
        for entry in schema_dir().iterdir()
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    )
    return tuple(sorted(found))


@functools.cache
def _schema_text(name: str) -> str:
    if name not in _names():
        known = ", ".join(_names())
        raise KeyError(f"unknown schema {name!r} (known: {known})")
    return schema_dir().joinpath(name + _SUFFIX).read_text(encoding="utf-8")


@functools.cache
def _parsed(name: str) -> dict[str, Any]:
    """The parsed schema, shared: callers must not mutate it (load_schema hands out copies)."""
    contents = json.loads(_schema_text(name))
    if not isinstance(contents, dict):
        raise ValueError(f"schema {name!r} is not a JSON object")
    return contents


@functools.cache
def _resource(uri: str) -> Resource[Any]:
    from referencing import Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT202012

    name = uri[len(BASE_URI) :] if uri.startswith(BASE_URI) else ""
    if not name.endswith(_SUFFIX) or name[: -len(_SUFFIX)] not in _names():
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]  # attrs class mypy cannot see
    contents = _parsed(name[: -len(_SUFFIX)])
    return Resource.from_contents(contents, default_specification=DRAFT202012)


@functools.cache
def _validator(name: str) -> _Validator:
    from jsonschema.validators import Draft202012Validator, validator_for
    from referencing import Registry

    schema = _parsed(name)
    cls = validator_for(schema, default=Draft202012Validator)
    cls.check_schema(schema)
    if "$id" not in schema:  # so relative $refs still resolve against the common base
        schema = {**schema, "$id": BASE_URI + name + _SUFFIX}
    registry: Registry[Any] = Registry(retrieve=_resource)  # type: ignore[call-arg]  # attrs alias
    validator: _Validator = cls(schema, registry=registry)
    return validator


# --- reporting -----------------------------------------------------------------------------


def _violation(error: Any) -> Violation:
    parts: list[str | int] = list(error.absolute_path)
    keyword = error.validator
    if keyword == "required":
        missing = _missing_property(error)
        if missing is not None:
            parts.append(missing)
            return Violation(format_path(parts), f"{_short(missing)} is a required property")
    return Violation(format_path(parts), _message(error))


def _missing_property(error: Any) -> str | None:
    """The property a `required` error is about (jsonschema reports one error per property)."""
    required = error.validator_value
    instance = error.instance
    if not isinstance(required, list) or not isinstance(instance, dict):
        return None
    for candidate in required:
        if (
            isinstance(candidate, str)
            and candidate not in instance
            and error.message == f"{candidate!r} is a required property"
        ):
            return candidate
    return None


def _message(error: Any) -> str:
    keyword = error.validator
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "pattern":
        title = schema.get("title")
        if isinstance(title, str):
            text = f"{_short(instance)} is not a valid {title}"
        else:
            text = f"{_short(instance)} does not match {_short(error.validator_value)}"
    elif keyword == "const":
        text = f"expected {_short(error.validator_value)}, got {_short(instance)}"
    else:
        text = str(error.message)
        full = repr(instance)
        if len(full) > _MAX_REPR and full in text:
            text = text.replace(full, _short(instance), 1)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def format_path(parts: Iterable[str | int]) -> str:
    """["layers", 3, "parent"] -> "layers[3].parent"; keys that are not identifiers are quoted."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{json.dumps(str(part))}]")
    return "".join(out)
