"""What the reader learned about each blob digest, kept between runs in $XDG_CACHE_HOME/ocicache.

A digest names its content for good, so what a blob's content *is* (not JSON; a cache manifest
and its parsed descriptors; a cache config; a foreign manifest; JSON that failed to parse and
why) never changes. A second run over the same directory then opens only blobs it has not seen.

Never a wrong answer, never an error:
- an entry is used only when the blob file's size (from the one lstat pass) is the size that
  was read when the entry was made; `check` never uses this cache to verify a digest;
- the file is one marshal document stamped with the ocicache version, the Python version and
  a hash of the schemas and the parsing code (`stamp`: a new interpretation never reuses an
  old one); anything unreadable,
  mismatched or malformed is ignored as if absent, and a malformed entry counts as a miss;
- writes go to a temporary file renamed over the old one (atomic); two processes writing at
  once lose at most the other's new entries (last writer wins; every entry is correct);
- it never lives inside the cache directory being read; OCICACHE_NO_CACHE=1 turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import marshal
import os
import sys
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ocicache import __version__
from ocicache.base.errors import CorruptError
from ocicache.base.xdg import _inside, cache_dir
from ocicache.format.model import (
    CacheConfig,
    CacheManifest,
    Descriptor,
    OtherManifest,
    new_config_layer,
    new_descriptor,
)
from ocicache.format.schema import schema_dir

_PY = f"py{sys.version_info[0]}.{sys.version_info[1]}"  # marshal's format is per version
FILE_NAME = "blobs.marshal"
# What decides how a blob is interpreted and stored: the schemas and the code that reads blobs
# (relative to the package). A change to any of them misses every kept entry.
STAMPED_CODE = ("format", "ops/read.py", "store/cache.py")


@functools.cache
def stamp() -> str:
    """The stamp a kept file must carry to be used: ocicache's version, Python's, and a SHA-256
    of the schemas and the parsing code (no hand-bumped format number). ~1 ms."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    files: list[Path] = []
    for rel in STAMPED_CODE:
        path = package / rel
        files.extend(sorted(path.glob("*.py")) if path.is_dir() else [path])
    schemas = schema_dir()
    try:
        for path in files:
            h.update(b"%s\0%s\0" % (path.name.encode(), path.read_bytes()))
        for entry in sorted(schemas.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                h.update(b"%s\0%s\0" % (entry.name.encode(), entry.read_bytes()))
    except OSError:
        return f"ocicache-blobs/{__version__}/{_PY}/-"  # cannot list: the version alone
    return f"ocicache-blobs/{__version__}/{_PY}/{h.hexdigest()}"


@functools.cache
def read_stamp() -> str:
    """The stamp of a kept read (ops/kept.py): ocicache's version, Python's, and a SHA-256 of
    every module of the package and the schemas (a kept read holds values the whole reader
    and core computed). ~2 ms."""
    h = hashlib.sha256()
    package = Path(__file__).resolve().parents[1]
    try:
        for path in sorted(package.rglob("*.py")):
            h.update(b"%s\0%s\0" % (str(path.relative_to(package)).encode(), path.read_bytes()))
        for entry in sorted(schema_dir().iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".json"):
                h.update(b"%s\0%s\0" % (entry.name.encode(), entry.read_bytes()))
    except OSError:
        return f"ocicache-read/{__version__}/{_PY}/-"
    return f"ocicache-read/{__version__}/{_PY}/{h.hexdigest()}"


READS_DIR = "reads"  # beside blobs.marshal: one kept read per directory
_READ_MAGIC = b"OCR1 "  # then read_stamp, a newline, the CRC-32 of the rest, and the rest
_MAGIC = b"OCB1"  # then the CRC-32 of the rest, then marshal((stamp, entries))
# Past this many entries, a save keeps only the digests used or learned by this run.
MAX_ENTRIES = 2_000_000

_TIMES = "times"  # not a digest: RFC 3339 text -> ns answers (layer createdat), see timefmt
NOT_JSON = "N"  # the first bytes are not JSON: a layer or other binary blob
PARSED = "J"  # read and decoded: kind, parsed value and/or error

Parsed = tuple[str | None, object | None, CorruptError | None]  # kind, model value, error


class BlobCache:
    """The digest -> facts map for one run: loaded once, saved once if something was learned."""

    def __init__(self, directory: Path | None, layout_root: Path | None = None) -> None:
        self.path: Path | None = None
        if directory is not None and not _inside(directory, layout_root):
            self.path = directory / FILE_NAME
        self._entries: dict[str, Any] = {}
        self._new: dict[str, Any] = {}
        self._used: set[str] = set()
        self._loaded_stat: tuple[int, int] | None = None
        self._descriptors: dict[int, tuple[Any, Descriptor]] = {}
        self._pool = _Pool()
        self._loaded = self.path is None  # the file is read on first use (a kept read needs none)

    def _load_entries(self) -> None:
        self._loaded = True
        if self.path is not None:
            self._entries, self._loaded_stat = _load(self.path)
            _prime_times(self._entries.get(_TIMES))

    @classmethod
    def default(cls, layout_root: Path | None = None) -> BlobCache:
        return cls(cache_dir(), layout_root)

    @property
    def learned(self) -> int:
        return len(self._new)

    # -- lookups ----------------------------------------------------------------------------------
    def _entry(self, digest: str, size: int) -> Any:
        if not self._loaded:
            self._load_entries()
        entry = self._entries.get(digest)
        if type(entry) is not tuple or len(entry) < 2 or entry[0] != size:
            return None
        self._used.add(digest)
        return entry

    def verdict(self, digest: str, size: int) -> str | None:
        """NOT_JSON, PARSED (ask `parsed`), or None when this digest and size are unknown."""
        if not self._loaded:
            self._load_entries()
        entry = self._entries.get(digest)  # inlined _entry: called for every unknown blob
        if type(entry) is not tuple or len(entry) < 2 or entry[0] != size:
            return None
        tag = entry[1]
        if tag in (NOT_JSON, PARSED):
            self._used.add(digest)
            return tag  # type: ignore[no-any-return]
        return None

    def parsed(self, digest: str, size: int, relpath: str) -> Parsed | None:
        """The kind, value and error a previous read of this digest found; None on a miss."""
        entry = self._entry(digest, size)
        if entry is None or entry[1] != PARSED:
            return None
        try:
            _, _, kind, value, error = entry
            model = self._model(kind, value, digest) if value is not None else None
            err = None
            if error is not None:
                message, where, hint = error
                err = CorruptError(message, file=relpath, where=where, hint=hint)
            return kind, model, err
        except Exception:  # a malformed entry is a miss, never an error
            return None

    # -- recording --------------------------------------------------------------------------------
    def put_not_json(self, digest: str, size: int) -> None:
        if self.path is not None:
            self._new[self._pool(digest)] = (size, NOT_JSON)

    def put_parsed(
        self, digest: str, size: int, kind: str | None, value: object | None, error: CorruptError | None
    ) -> None:
        if self.path is None:
            return
        # The model value itself is kept (no copy while reading); it becomes tuples at save.
        err = (error.message, error.where, error.hint) if error is not None else None
        self._new[self._pool(digest)] = (size, PARSED, kind, value, err)

    def save(self) -> None:
        """Merge what this run learned into the file (atomically); errors are ignored."""
        if self.path is None or not self._new:
            return
        if not self._loaded:
            self._load_entries()
        with contextlib.suppress(Exception):
            self._save(self.path)

    def _save(self, path: Path) -> None:
        entries = self._entries
        current = _stat(path)
        if current is not None and current != self._loaded_stat:
            entries, _ = _load(path)  # another process wrote meanwhile: keep its entries too
            entries.update({d: e for d, e in self._entries.items() if d not in entries})
        pool = self._pool
        entries[_TIMES] = _times(self._entries.get(_TIMES))
        for digest, entry in self._new.items():
            if entry[1] == PARSED and entry[3] is not None:
                size, tag, kind, value, err = entry
                entry = (size, tag, kind, pool.value(value), err)
            entries[digest] = entry
        if len(entries) > MAX_ENTRIES:
            keep = self._used | set(self._new) | {_TIMES}
            entries = {d: e for d, e in entries.items() if d in keep}
        path.parent.mkdir(parents=True, exist_ok=True)
        body = marshal.dumps((stamp(), entries))
        fd, tmp = tempfile.mkstemp(prefix=".blobs-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + zlib.crc32(body).to_bytes(4, "big"))
                f.write(body)  # (not concatenated: that would copy ~10 MB at peak memory)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- kept reads (ops/kept.py encodes and decodes them) ----------------------------------------
    def _read_path(self, root: Path | str) -> Path | None:
        if self.path is None:
            return None
        name = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:40]
        return self.path.parent / READS_DIR / f"{name}.marshal"

    def kept_read(self, root: Path | str) -> bytes | None:
        """The bytes of the read of `root` kept by an earlier run (whole, checksum right, same
        stamp); None when there is none or it is unusable."""
        path = self._read_path(root)
        if path is None:
            return None
        head = _READ_MAGIC + read_stamp().encode() + b"\n"
        try:
            with open(path, "rb") as f:
                data = f.read()
            if (
                not data.startswith(head)
                or zlib.crc32(memoryview(data)[len(head) + 4 :]).to_bytes(4, "big")
                != data[len(head) : len(head) + 4]
            ):
                return None
            return data[len(head) + 4 :]
        except Exception:  # absent, unreadable, truncated, foreign: as if there were none
            return None

    def keep_read(self, root: Path | str, data: bytes) -> None:
        """Keep `data` as the read of `root` (atomically; errors are ignored)."""
        path = self._read_path(root)
        if path is None:
            return
        with contextlib.suppress(Exception):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".read-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_READ_MAGIC + read_stamp().encode() + b"\n" + zlib.crc32(data).to_bytes(4, "big"))
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    # -- model values <-> tuples ------------------------------------------------------------------
    def _descriptor(self, t: Any) -> Descriptor:
        # Shared descriptors are one object in the file (marshal refs), so identity finds
        # them; the tuple stays alive in the entries, so its id is not reused meanwhile.
        found = self._descriptors.get(id(t))
        if found is not None:
            return found[1]
        media_type, digest, size, annotations = t
        if type(annotations) is not dict:
            raise ValueError("malformed cached descriptor")
        d = new_descriptor(media_type, digest, size, annotations)
        self._descriptors[id(t)] = (t, d)
        return d

    def _model(self, kind: str | None, value: Any, digest: str) -> object:
        tag = value[0]
        if tag == "M":
            _, shape, media_type, config, layers, others = value
            desc = self._descriptor
            return CacheManifest(
                digest,
                shape,
                media_type,
                desc(config) if config is not None else None,
                tuple([desc(x) for x in layers]),
                tuple([desc(x) for x in others]),
            )
        if tag == "C":
            _, layers, records, created, problems = value
            return CacheConfig(
                digest,
                tuple([new_config_layer(b, p) for b, p in layers]),
                records,
                dict(created),
                tuple(problems),
            )
        if tag == "O":
            _, media_type, children, keys, artifact_type = value
            if len(keys) != len(children):
                raise ValueError("malformed cached foreign manifest")
            return OtherManifest(
                digest, media_type, tuple(self._descriptor(x) for x in children), tuple(keys), artifact_type
            )
        raise ValueError(f"unknown cached value {tag!r} for {kind!r}")


class _Pool:
    """One object per equal value, so marshal writes each shared digest/descriptor once."""

    def __init__(self) -> None:
        self._seen: dict[Any, Any] = {}
        self._descs: dict[int, tuple[str, str, int, Mapping[str, str]]] = {}

    def __call__(self, value: Any) -> Any:
        return self._seen.setdefault(value, value)

    def desc(self, d: Descriptor) -> tuple[str, str, int, Mapping[str, str]]:
        # Equal descriptors are one object already (the reader shares them): one tuple each.
        t = self._descs.get(id(d))
        if t is None:
            t = (d.media_type, self(d.digest), d.size, d.annotations)
            self._descs[id(d)] = t
        return t

    def value(self, value: object) -> tuple[Any, ...]:
        desc = self.desc
        if isinstance(value, CacheManifest):
            return (
                "M",
                value.shape,
                value.media_type,
                desc(value.config) if value.config is not None else None,
                tuple(desc(x) for x in value.layers),
                tuple(desc(x) for x in value.others),
            )
        if isinstance(value, CacheConfig):
            return (
                "C",
                tuple((self(x.blob), x.parent) for x in value.layers),
                value.record_count,
                tuple(value.layer_created.items()),
                value.problems,
            )
        if isinstance(value, OtherManifest):
            return (
                "O",
                value.media_type,
                tuple(desc(x) for x in value.children),
                tuple(value.keys),
                value.artifact_type,
            )
        raise TypeError(f"cannot cache {type(value).__name__}")


def _prime_times(stored: object) -> None:
    """Seed timefmt's memo with the times parsed by earlier runs (~30k in a big cache)."""
    if type(stored) is not dict:
        return
    from ocicache.base.timefmt import remember

    for text, value in stored.items():
        if type(text) is str and (value is None or type(value) is int):
            remember(text, value)


def _times(old: object) -> dict[str, int | None]:
    """What this process parsed (layer createdat), merged with what the file held."""
    from ocicache.base.timefmt import remembered

    out: dict[str, int | None] = dict(old) if type(old) is dict else {}
    out.update(remembered())
    return out


def _stat(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _load(path: Path) -> tuple[dict[str, Any], tuple[int, int] | None]:
    """The entries of the cache file; empty when it is absent, unreadable or not ours."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
        # A flipped bit could still decode as a valid marshal stream with a wrong size or
        # digest in it: the checksum makes any damage a miss instead.
        body = memoryview(data)[8:]  # no copy
        if data[:4] != _MAGIC or zlib.crc32(body).to_bytes(4, "big") != data[4:8]:
            return {}, None
        kept, entries = marshal.loads(body)
        if kept != stamp() or type(entries) is not dict:
            return {}, None
        return entries, (st.st_mtime_ns, st.st_size)
    except Exception:  # absent, unreadable, truncated, foreign: as if there were none
        return {}, None
