"""What BuildKit will do with a `--cache-from type=local,...` import: readiness of an export, the
spec that imports it, and an explanation of a spec a user already has. Pure logic over values.

BuildKit v0.32 behaviour this encodes (FORMAT.md, "Import"; client/solve.go and
cache/remotecache/local):
- `src` is required; without it the build fails: "local cache importer requires src". There is
  no `ref` key for local caches (the official docs example writes `ref=`).
- with `digest=` BuildKit ignores index.json and `tag`, and loads that manifest blob;
- otherwise it looks `tag` (default `latest`) up in index.json; a tag that is not there, or a
  `src` that does not exist, only skips the import with a warning (the build runs uncached);
- a manifest or cache config over 1 MiB (`1<<20`) is refused; a missing layer only makes the
  steps that use it rebuild, but a missing base (root) layer fails the build.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ocicache.core import spec as spec_mod
from ocicache.core.exports import Export
from ocicache.core.inventory import Inventory
from ocicache.format.digest import is_valid_digest
from ocicache.format.documents import IMPORT_LIMIT

# Options of a local cache *export* (`--cache-to type=local,...`): meaningless on import.
EXPORT_KEYS = frozenset(
    {
        "dest",
        "mode",
        "oci-mediatypes",
        "image-manifest",
        "compression",
        "compression-level",
        "force-compression",
        "ignore-error",
        "reset",
        "store",
    }
)
IMPORT_KEYS = ("src", "tag", "digest")

SEV_ERROR = "error"  # the build fails
SEV_WARNING = "warning"  # the import is skipped or partial
SEV_NOTE = "note"  # ignored or informational
SEV_OK = "ok"

OUTCOME_IMPORTS = "imports"  # the cache is imported as asked
OUTCOME_PARTIAL = "partial"  # imported, but some steps will rebuild (missing layers)
OUTCOME_SKIPPED = "skipped"  # BuildKit warns and builds without this cache
OUTCOME_FAILS = "fails"  # the whole build fails
OUTCOME_UNCHECKED = "unchecked"  # right as far as ocicache can tell (not type=local, ...)

OUTCOME_TEXT = {
    OUTCOME_IMPORTS: "BuildKit imports this cache",
    OUTCOME_PARTIAL: "BuildKit imports this cache; some steps will rebuild",
    OUTCOME_SKIPPED: "BuildKit skips this import (with a warning) and builds without it",
    OUTCOME_FAILS: "the whole build fails",
    OUTCOME_UNCHECKED: "not checked",
}


@dataclass(frozen=True)
class Readiness:
    """Whether BuildKit can import an export: a refusal reason, or warnings (missing layers)."""

    refusal: str | None
    warnings: tuple[str, ...]
    missing_layers: tuple[str, ...]
    missing_base: tuple[str, ...]  # missing layers that are roots of the layer chain

    @property
    def ok(self) -> bool:
        return self.refusal is None


def readiness(inv: Inventory, e: Export) -> Readiness:
    """Check an export the way BuildKit's importer will use it."""
    reasons: list[str] = []
    if e.shape is None or e.problems:
        reasons.extend(e.problems or ("manifest blob is missing or unreadable",))
    elif e.manifest_size > IMPORT_LIMIT:
        reasons.append(
            f"manifest is {e.manifest_size} bytes; BuildKit refuses to import "
            f"a manifest over 1 MiB ({IMPORT_LIMIT} bytes)"
        )
    config = e.config
    if not reasons and config is not None:
        blob = inv.blobs.get(config.digest)
        if blob is None:
            reasons.append(f"cache config {config.digest} is missing")
        elif max(blob.size, config.size) > IMPORT_LIMIT:
            reasons.append(
                f"cache config is {max(blob.size, config.size)} bytes; BuildKit "
                f"refuses to import a cache config over 1 MiB ({IMPORT_LIMIT} bytes)"
            )
        elif blob.size != config.size:
            reasons.append(f"cache config is {blob.size} bytes on disk, the manifest says {config.size}")
    if reasons:
        return Readiness("; ".join(reasons), (), (), ())
    config_digest = config.digest if config else None
    roots: set[str] = set()
    if e.cache_config is not None:
        roots = {layer.blob for layer in e.cache_config.layers if layer.parent == -1}
    missing = tuple(d for d in e.missing if d != config_digest)
    base = tuple(d for d in missing if d in roots)
    warnings: list[str] = []
    for d in missing:
        if d in roots:
            warnings.append(f"base layer {d} is missing: BuildKit fails the build when it needs it")
        else:
            warnings.append(f"layer {d} is missing: the steps that produced it will rebuild")
    for d in e.wrong_size:
        if d != config_digest:
            warnings.append(f"layer {d} has the wrong size on disk: the step that uses it may fail")
    return Readiness(None, tuple(warnings), missing, base)


def default_export(exports: Sequence[Export], tag: str | None = None) -> Export | None:
    """The export `ref` picks without REF: the newest of `tag` (a registry target's TAG) or
    else of tag `latest`, else the newest."""
    for wanted in (tag, "latest") if tag else ("latest",):
        for e in exports:
            if wanted in e.tags:
                return e
    return exports[0] if exports else None


# -- explain -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    severity: str
    key: str | None
    message: str


@dataclass
class Explanation:
    """What BuildKit does with a spec: findings, the outcome, and a corrected spec."""

    input: str
    type: str | None
    attrs: dict[str, str]
    findings: list[Finding] = field(default_factory=list)
    outcome: str = OUTCOME_IMPORTS
    corrected: str | None = None
    export: Export | None = None
    directory: str | None = None  # the directory that was read, if any

    @property
    def works(self) -> bool:
        return self.outcome in (OUTCOME_IMPORTS, OUTCOME_PARTIAL, OUTCOME_UNCHECKED)

    @property
    def changed(self) -> bool:
        return self.corrected is not None and self.corrected != self.input

    def add(self, severity: str, key: str | None, message: str) -> None:
        self.findings.append(Finding(severity, key, message))

    def worsen(self, outcome: str) -> None:
        rank = [OUTCOME_UNCHECKED, OUTCOME_IMPORTS, OUTCOME_PARTIAL, OUTCOME_SKIPPED, OUTCOME_FAILS]
        if rank.index(outcome) > rank.index(self.outcome):
            self.outcome = outcome


@dataclass(frozen=True)
class DirView:
    """What explain needs to know about the directory a spec names (None when unreadable)."""

    inventory: Inventory
    exports: list[Export]


def index_tags(inv: Inventory) -> dict[str, str]:
    """ref name -> digest of the FIRST index.json entry with that name (what BuildKit finds)."""
    out: dict[str, str] = {}
    if inv.index is not None:
        for entry in inv.index.entries:
            if entry.ref_name is not None:
                out.setdefault(entry.ref_name, entry.descriptor.digest)
    return out


def check_digest(x: Explanation, view: DirView, digest: str) -> str | None:
    """Judge `digest=` against the directory; the digest the corrected spec should use."""
    inv = view.inventory
    by_digest = {e.digest: e for e in view.exports}
    e = by_digest.get(digest)
    if e is not None:
        _judge_export(x, inv, e, "digest")
        return digest
    if digest in inv.configs:
        owners = [o for o in view.exports if o.config and o.config.digest == digest]
        if owners:
            x.add(
                SEV_WARNING,
                "digest",
                "names a cache config, not a cache manifest: BuildKit "
                "cannot load it and skips the import; the corrected spec names the export "
                "(manifest) of that config",
            )
            x.worsen(OUTCOME_SKIPPED)
            _judge_export(x, inv, owners[0], "digest", quiet=True)
            return owners[0].digest
    holders = [o for o in view.exports if any(layer.digest == digest for layer in o.layers)]
    if holders:
        x.add(
            SEV_WARNING,
            "digest",
            "names a layer, not a cache manifest: BuildKit skips the "
            "import; the corrected spec names the newest export holding that layer",
        )
        x.worsen(OUTCOME_SKIPPED)
        _judge_export(x, inv, holders[0], "digest", quiet=True)
        return holders[0].digest
    what = "a blob that is not a cache manifest" if digest in inv.blobs else "no blob"
    x.add(
        SEV_WARNING,
        "digest",
        f"names {what} in {view.inventory.root}: BuildKit skips "
        "the import (v0.32; older versions fail the build)",
    )
    x.worsen(OUTCOME_SKIPPED)
    return None


def expand_prefix(view: DirView, value: str) -> str | None:
    """The one export digest that `value` (a digest prefix) names, if unique."""
    hexpart = value.split(":", 1)[-1].lower()
    if len(hexpart) < 7 or any(c not in "0123456789abcdef" for c in hexpart):
        return None
    hits = [e.digest for e in view.exports if e.digest.split(":", 1)[1].startswith(hexpart)]
    return hits[0] if len(hits) == 1 else None


def _judge_export(x: Explanation, inv: Inventory, e: Export, key: str, quiet: bool = False) -> None:
    x.export = e
    r = readiness(inv, e)
    if not r.ok:
        x.add(
            SEV_WARNING,
            key,
            f"export {e.digest[:19]} cannot be imported: {r.refusal}; BuildKit skips the import",
        )
        x.worsen(OUTCOME_SKIPPED)
        return
    for w in r.warnings:
        x.add(SEV_WARNING, key, w)
    if r.missing_base:
        x.worsen(OUTCOME_FAILS)
    elif r.missing_layers:
        x.worsen(OUTCOME_PARTIAL)
    if not quiet and not r.warnings:
        names = ", ".join((*e.tags, *(f"{p} (pin)" for p in e.pins))) or "no tag"
        x.add(SEV_OK, key, f"names a complete cache export ({names}, {len(e.layers)} layers)")


def is_digest(value: str) -> bool:
    return is_valid_digest(value)


DirReader = Callable[[str], "DirView | str"]


# (host, repo, insecure, digests to look for) -> a DirView of that repository, or why not.
RegistryReader = Callable[[str, str, bool, tuple[str, ...]], "DirView | str"]

_REF = re.compile(
    r"(?P<host>[^/@]+)/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+:[0-9a-f]+))?"
)
REGISTRY_IMPORT_KEYS = ("ref", "registry.insecure")


def _explain_registry(x: Explanation, parsed: spec_mod.Spec, read: RegistryReader | None) -> Explanation:
    """type=registry: ref=HOST/REPO[:TAG][@DIGEST] (no tag: latest); digest=, tag=, src= are
    keys of a local import (moved into ref=); the repository is read to judge the export."""
    ref = parsed.get("ref")
    insecure = (parsed.get("registry.insecure") or "").lower() == "true"
    if not ref:
        x.add(SEV_ERROR, "ref", "missing: BuildKit fails the build (a registry cache import needs ref=)")
        x.worsen(OUTCOME_FAILS)
        return x
    m = _REF.fullmatch(ref)
    host_like = m is not None and ("." in m["host"] or ":" in m["host"] or m["host"] == "localhost")
    if m is None or not host_like:
        x.add(
            SEV_NOTE,
            "ref",
            f"{ref}: no registry host (Docker Hub is implied); ocicache reads only a registry it is named",
        )
        x.outcome = OUTCOME_UNCHECKED
        return x
    host, repo, tag, digest = m["host"], m["repo"], m["tag"], m["digest"]
    for key, _ in parsed.attrs:
        if key in REGISTRY_IMPORT_KEYS:
            continue
        if key in ("digest", "tag", "src"):
            x.add(
                SEV_WARNING,
                key,
                f"a key of a local cache import: a registry import ignores it "
                f"(the registry form is ref=HOST/REPO{'@DIGEST' if key == 'digest' else ':TAG'})",
            )
        elif key in EXPORT_KEYS:
            x.add(SEV_NOTE, key, "an export (--cache-to) option: ignored on import")
        else:
            x.add(SEV_NOTE, key, "not an option of a registry cache import: ignored")
    # What the user meant with a local-only key, for the corrected spec.
    meant_digest = parsed.get("digest") if digest is None and tag is None else None
    meant_tag = parsed.get("tag") if digest is None and tag is None and not meant_digest else None
    if meant_digest is not None and not is_digest(meant_digest):
        meant_digest = None
    if tag is None and digest is None:
        x.add(SEV_NOTE, "ref", "no tag: BuildKit imports tag `latest`")
        tag = "latest"
    wanted = tuple(d for d in (digest, meant_digest) if d)
    got = read(host, repo, insecure, wanted) if read is not None else None
    new: str | None = None
    base = f"{host}/{repo}"
    if isinstance(got, str):
        x.add(SEV_WARNING, "ref", f"{base}: {got}: BuildKit skips the import if it cannot read it either")
        x.worsen(OUTCOME_SKIPPED)
        new = f"{base}@{meant_digest or digest}" if meant_digest or digest else f"{base}:{meant_tag or tag}"
    elif got is not None:
        x.directory = str(got.inventory.root)
        # What BuildKit does with the spec as given (ref= alone) ...
        if digest is not None:
            ok = check_digest(x, got, digest) == digest
        else:
            ok = _judge_registry_tag(x, got, base, tag or "latest", "ref")
        new = (f"{base}@{digest}" if digest else f"{base}:{tag}") if ok else None
        # ... and the spec that does what the local-only key meant.
        if meant_digest is not None:
            probe = Explanation(x.input, x.type, x.attrs)
            if check_digest(probe, got, meant_digest) == meant_digest:
                x.add(SEV_NOTE, "digest", "the corrected spec names that export in ref= (REPO@DIGEST)")
                new = f"{base}@{meant_digest}"
        elif meant_tag is not None:
            probe = Explanation(x.input, x.type, x.attrs)
            if _judge_registry_tag(probe, got, base, meant_tag, "tag"):
                x.add(SEV_NOTE, "tag", "the corrected spec names that tag in ref= (REPO:TAG)")
                new = f"{base}:{meant_tag}"
    if new is not None:
        attrs = [("ref", new)] + ([("registry.insecure", "true")] if insecure else [])
        x.corrected = spec_mod.format_spec("registry", attrs)
    return x


def _judge_registry_tag(x: Explanation, view: DirView, base: str, tag: str, key: str) -> bool:
    tags = index_tags(view.inventory)
    named = tags.get(tag)
    e = next((o for o in view.exports if o.digest == named), None)
    if named is None:
        known = ", ".join(sorted(tags)) or "none"
        x.add(SEV_WARNING, key, f"tag {tag!r} is not in {base} (tags: {known}): BuildKit skips the import")
        x.worsen(OUTCOME_SKIPPED)
        return False
    if e is None:
        x.add(
            SEV_WARNING,
            key,
            f"tag {tag!r} names {named}, an image or other content, not a cache: it imports nothing",
        )
        x.worsen(OUTCOME_SKIPPED)
        return False
    _judge_export(x, view.inventory, e, key)
    return True


def explain(
    text: str,
    read_dir: DirReader,
    fallback_dir: str | None = None,
    read_registry: RegistryReader | None = None,
) -> Explanation:
    """What BuildKit will do with the `--cache-from` value `text`, and the spec that works.

    `read_dir(path)` returns a DirView, or a string saying why the directory cannot be read.
    Raises UsageError when `text` is not a spec buildx can parse at all. `read_registry`
    reads the repository a type=registry spec names (None: registry specs go unchecked).
    """
    value = spec_mod.strip_prefix(text)
    parsed = spec_mod.parse(value)
    x = Explanation(value, parsed.type, dict(parsed.attrs))
    for key in parsed.repeated:
        last = parsed.type if key == "type" else parsed.get(key)
        x.add(SEV_NOTE, key, f"given more than once: the last value ({last!r}) wins")
    if parsed.registry_short_form:
        x.add(SEV_NOTE, None, "a value without `=` is buildx's short form of type=registry,ref=VALUE")
    if parsed.type == "registry":
        return _explain_registry(x, parsed, read_registry)
    type_ = parsed.type
    if type_ is None:
        x.add(SEV_ERROR, "type", 'missing: buildx refuses the value ("type required")')
        x.worsen(OUTCOME_FAILS)
        if not any(k in x.attrs for k in ("src", "ref", "dest")):
            return x
        type_ = "local"
    elif type_ != "local":
        x.add(SEV_NOTE, "type", f"type={type_}: only type=local caches are checked")
        x.outcome = OUTCOME_UNCHECKED
        return x
    # -- src (and the keys people put there instead) --------------------------------------------
    src = parsed.get("src")
    candidate = src
    if src is None:
        candidate = parsed.get("ref") or parsed.get("dest") or fallback_dir
    for wrong in ("ref", "dest"):
        val = parsed.get(wrong)
        if val is None:
            continue
        if src is None:
            x.add(
                SEV_ERROR,
                wrong,
                f"a local cache import has no `{wrong}` key: BuildKit fails "
                'the whole build with "local cache importer requires src"; use '
                f"src={val}",
            )
        else:
            x.add(SEV_NOTE, wrong, f"ignored by a local cache import (src={src} is used)")
    if src is None:
        if not any(parsed.get(k) is not None for k in ("ref", "dest")):
            x.add(
                SEV_ERROR,
                "src",
                'missing: BuildKit fails the whole build with "local cache importer requires src"',
            )
        x.worsen(OUTCOME_FAILS)
    elif src == "":
        x.add(
            SEV_ERROR, "src", 'empty: BuildKit fails the whole build with "local cache importer requires src"'
        )
        x.worsen(OUTCOME_FAILS)
        candidate = None
    for key, _ in parsed.attrs:
        if key in IMPORT_KEYS or key in ("ref", "dest"):
            continue
        if key in EXPORT_KEYS:
            x.add(SEV_NOTE, key, "an export (--cache-to) option: ignored on import")
        else:
            x.add(SEV_NOTE, key, "not an option of a local cache import: ignored")
    # -- the directory -------------------------------------------------------------------------
    view: DirView | None = None
    if candidate and candidate.startswith("~"):
        expanded = os.path.expanduser(candidate)
        x.add(
            SEV_WARNING,
            "src",
            f"{candidate}: no shell expands `~` inside a --cache-from "
            f"value, so BuildKit looks for a directory literally named so; use {expanded}",
        )
        x.worsen(OUTCOME_SKIPPED)
        candidate = expanded
    if candidate:
        if not candidate.startswith("/"):
            x.add(
                SEV_NOTE,
                "src",
                "a relative path: BuildKit resolves it against the "
                "directory the build client (buildx/buildctl) runs in",
            )
        got = read_dir(candidate)
        if isinstance(got, str):
            x.add(
                SEV_WARNING,
                "src",
                f"{candidate}: {got}: if so where the build runs too, "
                'BuildKit skips the import ("local cache import at ... not found")',
            )
            x.worsen(OUTCOME_SKIPPED)
        else:
            view = got
            x.directory = str(got.inventory.root)
    # -- digest / tag --------------------------------------------------------------------------
    digest = parsed.get("digest")
    tag = parsed.get("tag")
    new_digest: str | None = None
    new_tag: str | None = None
    tag_ok = False
    if digest is not None and digest != "":
        if tag is not None:
            x.add(
                SEV_NOTE,
                "tag",
                "ignored: with digest= BuildKit loads that manifest and never reads index.json",
            )
        if not is_digest(digest):
            full = expand_prefix(view, digest) if view else None
            extra = f"; it is the prefix of {full}" if full else ""
            x.add(
                SEV_ERROR,
                "digest",
                f"{digest!r} is not a valid digest (sha256: and 64 "
                f"lower-case hex digits){extra}: BuildKit cannot load it",
            )
            x.worsen(OUTCOME_FAILS)
            new_digest = full
            if full and view:
                _judge_export(x, view.inventory, by_digest(view, full), "digest", quiet=True)
        elif view is not None:
            new_digest = check_digest(x, view, digest)
        else:
            new_digest = digest
        if new_digest is None and view is not None:
            tag_ok, new_tag = _judge_tag(x, view, tag, fallback=True)
    else:
        if digest == "":
            x.add(SEV_NOTE, "digest", "empty: BuildKit looks the tag up in index.json instead")
        tag_ok, new_tag = _judge_tag(x, view, tag, fallback=False)
    # -- the corrected spec ----------------------------------------------------------------------
    if candidate:
        attrs: list[tuple[str, str]] = [("src", candidate)]
        if new_digest is not None:
            attrs.append(("digest", new_digest))
        elif new_tag is not None:
            attrs.append(("tag", new_tag))
        if view is None or new_digest is not None or tag_ok:
            x.corrected = spec_mod.format_spec("local", attrs)
    return x


def by_digest(view: DirView, digest: str) -> Export:
    return next(e for e in view.exports if e.digest == digest)


def _judge_tag(
    x: Explanation, view: DirView | None, tag: str | None, fallback: bool
) -> tuple[bool, str | None]:
    """Judge the tag lookup BuildKit does when no usable digest is given: whether it works,
    and the tag to write (None for the default `latest`)."""
    if view is None:
        return True, tag
    inv = view.inventory
    if inv.index is None:
        x.add(SEV_WARNING, "tag", "index.json cannot be read: BuildKit skips the import")
        x.worsen(OUTCOME_SKIPPED)
        return False, None
    name = tag if tag else "latest"
    tags = index_tags(inv)
    if name not in tags:
        known = ", ".join(sorted(tags)) or "none"
        key = "tag" if tag else None
        x.add(
            SEV_WARNING,
            key,
            f"tag {name!r} is not in index.json (tags: {known}): BuildKit "
            f'skips the import ("no digest found for tag {name}")',
        )
        x.worsen(OUTCOME_SKIPPED)
        return False, None
    digest = tags[name]
    e = next((o for o in view.exports if o.digest == digest), None)
    if fallback:
        x.add(SEV_NOTE, "tag", f"the corrected spec uses tag {name!r} instead")
    if e is None:
        x.add(
            SEV_WARNING,
            "tag",
            f"tag {name!r} names {digest}, which is not a cache manifest: BuildKit skips the import",
        )
        x.worsen(OUTCOME_SKIPPED)
        return False, None
    _judge_export(x, inv, e, "tag")
    return True, tag if tag else None
