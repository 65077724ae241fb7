"""The storage seam: what the reader, gc, pin and check need from a store, and the values it returns.

`Store` is the protocol; `layout.Layout` (a local directory) is its one implementation today.
Code above the seam (ocicache.core, ocicache.ops) types what it reads against `Store` and the
values here, never against a directory's file descriptors.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from ocicache.base.errors import OcicacheError
from ocicache.format.digest import Digest
from ocicache.format.names import BLOBS, QUARANTINE


class BlobFile(NamedTuple):
    """One entry of `blobs/<algorithm>/` as lstat saw it (one per blob: 50k+ in a big cache,
    so a tuple, which a scan builds from its columns at C speed)."""

    digest: str  # "<algorithm>:<encoded>", the file's name under blobs/<algorithm>/
    size: int
    mtime_ns: int
    mode: int
    # What the file takes on disk (st_blocks x 512: less than `size` when sparse), and, when
    # it has other hard links (anywhere), its "device:inode", so that it is counted once.
    allocated: int = 0
    inode: str = ""
    links: int = 1

    @property
    def algorithm(self) -> str:
        return self.digest[: self.digest.index(":")]

    @property
    def name(self) -> str:
        return self.digest[self.digest.index(":") + 1 :]

    @property
    def relpath(self) -> str:
        return f"{BLOBS}/{self.algorithm}/{self.name}"

    @property
    def regular(self) -> bool:
        return stat.S_ISREG(self.mode)


@dataclass(frozen=True, slots=True)
class Stray:
    """Something in `blobs/` that is not a blob: a bad name, a symlink, a directory, ..."""

    relpath: str
    reason: str
    size: int
    allocated: int = 0  # as BlobFile's
    inode: str = ""


@dataclass(frozen=True, slots=True)
class IngestEntry:
    """An `ingest/<hex>/` folder left by an interrupted write (BuildKit never cleans these)."""

    name: str
    relpath: str
    bytes: int  # all regular files inside
    data_size: int | None  # size of `data`, None when there is no data file
    total: int | None  # expected size from `total`, when readable
    mtime_ns: int  # mtime of `data`, else of the folder (the age gc judges by)
    ref: str | None  # the content of `ref` (e.g. "local-cache/sha256:..."), when readable
    # What its regular files take on disk: those with no other hard link (what deleting the
    # entry frees), and ("device:inode", bytes) of each one that has others.
    allocated: int = 0
    shared: tuple[tuple[str, int], ...] = ()


_BATCH = re.compile(r"q-([0-9]{1,20})-([0-9]{1,10})")


def batch_ns(name: str) -> int | None:
    """When a quarantine batch folder `q-<ns>-<pid>` was made (None: not one of gc's)."""
    m = _BATCH.fullmatch(name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class QuarantinedBlob:
    """A blob gc moved out of blobs/: `.ocicache/quarantine/<batch>/<algorithm>/<name>`."""

    batch: str
    batch_ns: int  # when gc moved it (from the batch name)
    algorithm: str
    name: str
    size: int
    allocated: int = 0  # st_blocks * 512; 0 when another hard link keeps the blocks

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self.name}"

    @property
    def relpath(self) -> str:
        return f"{QUARANTINE}/{self.batch}/{self.algorithm}/{self.name}"


@dataclass(frozen=True, slots=True)
class QuarantineScan:
    """Everything in gc's quarantine, and entries there that are not ours (never touched)."""

    blobs: tuple[QuarantinedBlob, ...]
    odd: tuple[str, ...]

    @property
    def bytes(self) -> int:
        return sum(q.size for q in self.blobs)

    def by_digest(self) -> dict[str, QuarantinedBlob]:
        """One quarantined copy per digest (the newest batch's)."""
        out: dict[str, QuarantinedBlob] = {}
        for q in sorted(self.blobs, key=lambda q: q.batch_ns):
            out[q.digest] = q
        return out


@dataclass(frozen=True, slots=True)
class BlobScan:
    """Every blob file (by digest, sorted) and every stray entry under blobs/, and a SHA-256
    of everything the scan saw (names, lstat fields, the folders' device and inode): equal
    fingerprints, equal scans (b"" when the store has none to give)."""

    blobs: dict[str, BlobFile]
    strays: tuple[Stray, ...]
    fingerprint: bytes = b""


@dataclass(frozen=True, slots=True)
class HashResult:
    """What re-hashing one blob found: its real digest and length, or why it could not be read."""

    digest: str  # the blob's name (algorithm:hex)
    actual: str | None  # algorithm:hex of the content; None when unreadable
    bytes_read: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.actual == self.digest


def blob_relpath(digest: Digest) -> str:
    """Where a blob lives in a layout: blobs/<algorithm>/<encoded>."""
    return f"{BLOBS}/{digest.algorithm}/{digest.encoded}"


@dataclass(frozen=True)
class IndexRead:
    """One consistent read of index.json."""

    data: bytes | None  # None: there is no index.json
    doc: object | None  # the decoded document (documents.loads_strict), when it decoded
    error: OcicacheError | None  # why it did not decode: torn or malformed, nobody writing
    warnings: tuple[str, ...]  # about the lock file, or a read that could not be confirmed


class Store(Protocol):
    """What ocicache reads from (and, through ocicache.ops, changes in) a cache store.

    Every read is bounded; a digest is validated before it names anything in the store.
    """

    @property
    def root(self) -> Path | str:
        """Where the store is (a directory's absolute path; a registry's target)."""
        ...

    @property
    def target(self) -> str:
        """The store as the user names it in output: a path, or registry://HOST/REPO[:TAG]."""
        ...

    @property
    def kind(self) -> str:
        """ "local" (a directory) or "registry"."""
        ...

    def untimed(self) -> frozenset[str]:
        """Digests whose mtime_ns is not a time (a registry without its storage directory)."""
        ...

    def problems(self) -> tuple[str, ...]:
        """What the store itself skipped and why (a registry: a bad tag name, a storage entry)."""
        ...

    def superseded(self) -> dict[str, int]:
        """Digest -> when a tag moved off that manifest (a registry's tag history; {} for a
        directory, whose exports are ordered by their own times and index.json)."""
        ...

    def scan_blobs(self) -> BlobScan:
        """Every blob with its size and time, and every entry that is not a blob."""
        ...

    def sniff_ahead(self, wanted: bool = True) -> None:
        """A hint, before `scan_blobs`: this read will ask for most blobs' heads (it knows none
        of them yet); the store may read them ahead, in parallel. `wanted=False`, after: no
        more will be asked for (what was read ahead can go)."""
        ...

    def scan_ingest(self) -> tuple[IngestEntry, ...]:
        """Uploads left unfinished."""
        ...

    def scan_quarantine(self) -> QuarantineScan:
        """What gc moved aside and can still put back."""
        ...

    def read_top(self, name: str, limit: int = ...) -> bytes | None:
        """A small top-level document whole (index.json, oci-layout); None when absent."""
        ...

    def read_index(self) -> IndexRead:
        """index.json as it is between BuildKit's writes (BusyError while one is in progress)."""
        ...

    def stat_top(self, name: str) -> os.stat_result | None:
        """A top-level entry's lstat, or None."""
        ...

    def read_blob(self, digest: Digest, limit: int) -> bytes:
        """A blob whole, at most `limit` bytes (a document); FileNotFoundError when missing."""
        ...

    def read_blob_head(self, blob: BlobFile, n: int) -> bytes:
        """The first `n` bytes of a blob (to tell a document from a layer)."""
        ...

    def open_blob_fd(self, blob: BlobFile) -> int:
        """A read-only descriptor to stream a blob for hashing (the caller closes it)."""
        ...

    def stat_blob(self, digest: str) -> os.stat_result | None:
        """A blob's lstat for a valid digest string, or None when absent."""
        ...

    def walk_files(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every file in the store with its lstat (for what is not a blob)."""
        ...
