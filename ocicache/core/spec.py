"""Cache import specs (`type=local,src=DIR,digest=...`): parse them as buildx does, format them.

buildx (util/buildflags/cache.go) splits a `--cache-from` value as one CSV record (Go
encoding/csv rules: fields separated by `,`; a field holding `,`, `"`, CR/LF or starting with a
space is double-quoted, a `"` inside doubled), then each field at its first `=` into key and
value; keys are lower-cased, a later key overrides an earlier one, `type` selects the backend.
A value with no `=` at all is the short form of `type=registry,ref=VALUE`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import dataclass

from ocicache.base.errors import UsageError

FORMATS = ("bare", "buildx", "buildctl", "bake", "gha", "json")

# Prefixes a user may paste along with the value (from a shell line, a bake file, a workflow).
_PREFIXES = re.compile(
    r"^\s*(?:--cache-from[= ]|--import-cache[= ]|cache-from\s*[:=]|cache_from\s*[:=])\s*", re.IGNORECASE
)


@dataclass(frozen=True)
class Spec:
    """A parsed cache spec: `type`, the attributes in the order given (keys lower-cased;
    a repeated key keeps its last value, as buildx's map does) and every repeated key."""

    type: str | None
    attrs: tuple[tuple[str, str], ...]
    repeated: tuple[str, ...] = ()
    registry_short_form: bool = False

    def get(self, key: str) -> str | None:
        for k, v in self.attrs:
            if k == key:
                return v
        return None

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.attrs)


def split_csv(value: str) -> list[str]:
    """The fields of one CSV record, the way Go's encoding/csv (and buildx) reads them."""
    if "\x00" in value:
        raise UsageError("the spec contains a NUL byte")
    try:
        rows = list(csv.reader(io.StringIO(value, newline=""), strict=True))
    except csv.Error as e:
        raise UsageError(
            f"cannot read the spec as CSV: {e}", hint='quote a field holding "," or \'"\' in double quotes'
        ) from None
    if len(rows) != 1:
        raise UsageError("the spec must be a single line of comma-separated key=value fields")
    return rows[0]


def parse(value: str) -> Spec:
    """Parse a `--cache-from` value like buildx does. Raises UsageError when buildx would."""
    fields = split_csv(value)
    if len(fields) == 1 and "=" not in fields[0]:
        return Spec("registry", (("ref", fields[0]),), (), registry_short_form=True)
    type_: str | None = None
    attrs: dict[str, str] = {}
    repeated: list[str] = []
    for field in fields:
        key, sep, val = field.partition("=")
        if not sep:
            raise UsageError(
                f'invalid value {field!r}: every field is key=value (buildx: "invalid value {field}")'
            )
        key = key.lower()
        if key in attrs or (key == "type" and type_ is not None):
            repeated.append(key)
        if key == "type":
            type_ = val
        else:
            attrs.pop(key, None)  # keep the position of the last occurrence
            attrs[key] = val
    return Spec(type_, tuple(attrs.items()), tuple(dict.fromkeys(repeated)))


def strip_prefix(text: str) -> str:
    """Be forgiving about what was pasted: `--cache-from X`, `cache-from: X`, `["X"]`, quotes."""
    text = text.strip()
    text = _PREFIXES.sub("", text, count=1).strip()
    if text.startswith("[") and text.endswith("]"):  # a bake list with one element
        inner = text[1:-1].strip().rstrip(",").strip()
        if inner.startswith('"'):
            try:
                loaded = json.loads(f"[{inner}]")
            except ValueError:
                loaded = None
            if isinstance(loaded, list) and len(loaded) == 1 and isinstance(loaded[0], str):
                return loaded[0]
        text = inner
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        try:
            parts = shlex.split(text)
        except ValueError:
            parts = []
        if len(parts) == 1:
            return parts[0]
    return text


def _needs_quotes(field: str) -> bool:
    # Go encoding/csv fieldNeedsQuotes: a separator, a quote, CR/LF, or a leading space.
    if field == "":
        return False
    if field == "\\.":
        return True
    return any(c in field for c in ',"\r\n') or field[0] in " \t"


def quote_field(field: str) -> str:
    """One CSV field, double-quoted only when a CSV reader would otherwise split or alter it."""
    if _needs_quotes(field):
        return '"' + field.replace('"', '""') + '"'
    return field


def format_spec(type_: str, attrs: list[tuple[str, str]]) -> str:
    """`type=...,k=v,...` with each field quoted as a whole when needed (buildx's csvBuilder)."""
    return ",".join(quote_field(f"{k}={v}") for k, v in [("type", type_), *attrs])


def local_spec(src: str, digest: str | None = None, tag: str | None = None) -> str:
    """The import spec of a local cache: src, then digest (or tag)."""
    attrs = [("src", src)]
    if digest is not None:
        attrs.append(("digest", digest))
    if tag is not None:
        attrs.append(("tag", tag))
    return format_spec("local", attrs)


def registry_spec(ref: str, insecure: bool = False) -> str:
    """The import spec of a registry cache: ref=HOST/REPO@DIGEST (and plain HTTP when so)."""
    attrs = [("ref", ref)]
    if insecure:
        attrs.append(("registry.insecure", "true"))
    return format_spec("registry", attrs)


def _hcl_string(s: str) -> str:
    # An HCL quoted template: escapes \\ \" \n \r \t \uNNNN; `${` and `%{` start templates.
    out: list[str] = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    text = "".join(out).replace("${", "$${").replace("%{", "%%{")
    return f'"{text}"'


_YAML_PLAIN = re.compile(r"[A-Za-z0-9_./=,+-][A-Za-z0-9_./=,:+@ -]*")


def _yaml_scalar(s: str) -> str:
    # A plain scalar when it is unambiguous; else a double-quoted (JSON-compatible) scalar.
    if _YAML_PLAIN.fullmatch(s) and not s.endswith(" ") and ": " not in s and " #" not in s:
        return s
    return json.dumps(s, ensure_ascii=False)


def render(spec: str, fmt: str) -> str:
    """The spec as a line to paste: bare, buildx/buildctl flag, bake attribute or gha input."""
    if fmt == "bare":
        return spec
    if fmt == "buildx":
        return f"--cache-from {shlex.quote(spec)}"
    if fmt == "buildctl":
        return f"--import-cache {shlex.quote(spec)}"
    if fmt == "bake":
        return f"cache-from = [{_hcl_string(spec)}]"
    if fmt == "gha":
        # docker/build-push-action reads each line of `cache-from` as CSV and joins the fields
        # back with ",": a spec that holds quotes must itself be quoted once more to survive.
        value = quote_field(spec) if '"' in spec else spec
        return f"cache-from: {_yaml_scalar(value)}"
    raise UsageError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
