"""The only reader of a cache directory: bounded reads through directory fds, never following a symlink.

Every path below DIR is opened relative to a directory file descriptor with O_NOFOLLOW, so a
symlink (for `blobs`, `blobs/sha256` or a blob) can never lead a read outside DIR, and a blob
name only becomes a path after `digest.is_hex_name` accepted it. Files are opened with
O_NONBLOCK (a FIFO cannot hang us) and checked to be regular files before any read; O_NOATIME
is used where the kernel allows it, so reading changes nothing, not even access times.
"""

from __future__ import annotations

import errno
import hashlib
import marshal
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocicache.base.errors import CorruptError, NotACacheDirError, TooLargeError
from ocicache.base.fileio import read_at_most
from ocicache.format.digest import ALGORITHMS, Digest
from ocicache.format.names import (
    BLOBS,
    HEX_LENGTHS,
    INDEX_JSON,
    INDEX_LIMIT,
    INDEX_LIMIT_NAME,
    INGEST,
    OWN_DIR,
    QUARANTINE,
    SNIFF_BYTES,
)
from ocicache.store import scan
from ocicache.store.base import (
    BlobFile,
    BlobScan,
    IndexRead,
    IngestEntry,
    QuarantinedBlob,
    QuarantineScan,
    Stray,
    batch_ns,
    blob_relpath,
)

if TYPE_CHECKING:
    from ocicache.store.listing import Heads, Listing


_DIR_FLAGS = scan.DIR_FLAGS
# Registered algorithms' encoded parts are lower-case hex of a fixed length (digest.py).
# How much older than a listing's scan index.json must be for the scan to be known to list
# every blob that index names (Layout._listed_after_index): a file's mtime comes from the
# kernel's coarse clock (a tick behind) and is cut to the filesystem's granularity (a
# nanosecond on ext4, xfs, btrfs and tmpfs; a second on some; two on FAT).
INDEX_SETTLED_NS = 2_000_000_000

_HEX_DIGITS = "0123456789abcdef"
_HEX_LEN = HEX_LENGTHS
_HEX_BYTES = _HEX_DIGITS.encode()


def _all_hex(text: str) -> bool:
    """True when every character of `text` is a lower-case hex digit (in C: 3 MB in ~2 ms)."""
    try:
        return not text.encode("ascii").translate(None, _HEX_BYTES)
    except UnicodeEncodeError:
        return False


def inode_key(st: os.stat_result) -> str:
    """ "device:inode" of a file with other hard links, else "" (as BlobFile.inode)."""
    return f"{st.st_dev}:{st.st_ino}" if st.st_nlink > 1 else ""


class Layout:
    """A cache directory opened for reading. Use as a context manager (it holds directory fds)."""

    def __init__(self, root: str | os.PathLike[str], listing: Listing | None = None) -> None:
        """`listing`, a listing of the same directory begun earlier, lets the first
        `scan_blobs` take the blobs' lstat from it (listing.py)."""
        self.root = Path(os.path.abspath(root))
        self._listing = listing
        self._sniff_ahead = False
        self._heads: Heads | None = None  # what the listing's child reads ahead (read_blob_head)
        try:
            # DIR itself may be a symlink the user chose to name; nothing below it may be.
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotACacheDirError("no such directory", file=str(self.root)) from None
        except NotADirectoryError:
            raise NotACacheDirError("not a directory", file=str(self.root)) from None
        except OSError as e:
            raise NotACacheDirError(f"cannot open: {e.strerror}", file=str(self.root)) from None
        self._dir_fds: dict[str, int | None] = {}
        names = set(self._listdir(self._root_fd))
        if INDEX_JSON not in names and BLOBS not in names:
            self.close()
            raise NotACacheDirError(
                "not a cache directory (no index.json and no blobs/)",
                file=str(self.root),
                hint="point at the DIR given to --cache-to type=local,dest=DIR",
            )
        self.top_names = frozenset(names)

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        self._drop_heads()
        listing, self._listing = self._listing, None
        if listing is not None:
            listing.close()
        for fd in self._dir_fds.values():
            if fd is not None:
                os.close(fd)
        self._dir_fds.clear()
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1

    def __enter__(self) -> Layout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root_fd(self) -> int:
        return self._root_fd

    @property
    def target(self) -> str:
        return str(self.root)

    @property
    def kind(self) -> str:
        return "local"

    def untimed(self) -> frozenset[str]:
        return frozenset()  # every blob's mtime is the file's

    def problems(self) -> tuple[str, ...]:
        return ()  # a directory's are found by the reader (strays, index.json, ...)

    def superseded(self) -> dict[str, int]:
        return {}

    # -- directories ---------------------------------------------------------------------------
    def _subdir_fd(self, relpath: str) -> int | None:
        """fd of a directory below DIR, opened component by component with O_NOFOLLOW."""
        if relpath in self._dir_fds:
            return self._dir_fds[relpath]
        parent, _, name = relpath.rpartition("/")
        parent_fd = self._subdir_fd(parent) if parent else self._root_fd
        fd: int | None = None
        if parent_fd is not None:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError:
                fd = None  # absent, a symlink (ELOOP), or not a directory
        self._dir_fds[relpath] = fd
        return fd

    def forget_dir(self, relpath: str) -> None:
        """Drop a cached directory fd (a writer just made that directory)."""
        fd = self._dir_fds.pop(relpath, None)
        if fd is not None:
            os.close(fd)

    def blob_dir_fd(self, algorithm: str) -> int | None:
        """fd of `blobs/<algorithm>` (None when absent or not a real directory)."""
        if algorithm not in ALGORITHMS:
            return None
        return self._subdir_fd(f"{BLOBS}/{algorithm}")

    @staticmethod
    def _listdir(fd: int) -> list[str]:
        return sorted(e.name for e in os.scandir(fd))

    # -- reads -----------------------------------------------------------------------------------
    def _open(self, dir_fd: int, name: str, where: str) -> int:
        try:
            fd = scan.open_to_read(name, dir_fd)
        except PermissionError:
            raise CorruptError("permission denied", file=where) from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise CorruptError("is a symlink; not followed", file=where) from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise CorruptError("not a regular file", file=where)
        return fd

    def _read(self, dir_fd: int, name: str, where: str, limit: int, limit_name: str | None = None) -> bytes:
        return self._read_stat(dir_fd, name, where, limit, limit_name)[0]

    def _read_stat(
        self, dir_fd: int, name: str, where: str, limit: int, limit_name: str | None = None
    ) -> tuple[bytes, os.stat_result, os.stat_result]:
        """The bytes of a file (at most `limit`), and its fstat just before and just after the
        read (an in-place rewrite during the read moves its size, mtime or ctime)."""
        fd = self._open(dir_fd, name, where)
        try:
            before = os.fstat(fd)
            if before.st_size > limit:
                raise _too_large(where, before.st_size, limit, limit_name)
            data = read_at_most(fd, limit)
            after = os.fstat(fd)
        except OSError as e:
            raise CorruptError(f"cannot read: {e.strerror}", file=where) from None
        finally:
            os.close(fd)
        if len(data) > limit:
            raise _too_large(where, max(len(data), after.st_size), limit, limit_name)
        return data, before, after

    def read_top(self, name: str, limit: int = INDEX_LIMIT) -> bytes | None:
        """Bytes of a top-level file (index.json, oci-layout), or None when it does not exist."""
        try:
            return self._read(
                self._root_fd, name, name, limit, INDEX_LIMIT_NAME if limit == INDEX_LIMIT else None
            )
        except FileNotFoundError:
            return None

    def read_top_stat(
        self, name: str, limit: int = INDEX_LIMIT
    ) -> tuple[bytes, os.stat_result, os.stat_result] | None:
        """read_top, with the file's fstat before and after the read (see _read_stat)."""
        try:
            return self._read_stat(
                self._root_fd, name, name, limit, INDEX_LIMIT_NAME if limit == INDEX_LIMIT else None
            )
        except FileNotFoundError:
            return None

    def read_index(self) -> IndexRead:
        """index.json read between BuildKit's writes (indexread.py)."""
        from ocicache.store.indexread import read_index

        return read_index(self)

    def stat_top(self, name: str) -> os.stat_result | None:
        """lstat of a top-level entry, or None."""
        try:
            return os.stat(name, dir_fd=self._root_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read_blob(self, digest: Digest, limit: int) -> bytes:
        """The bytes of a blob (at most `limit`); FileNotFoundError when it is missing."""
        fd = self.blob_dir_fd(digest.algorithm)
        if fd is None:
            raise FileNotFoundError(self.blob_relpath(digest))
        return self._read(fd, digest.encoded, self.blob_relpath(digest), limit)

    def read_blob_head(self, blob: BlobFile, n: int) -> bytes:
        """The first `n` bytes of a blob file (to tell JSON from layer bytes): as the listing's
        child read it (`sniff_ahead`), when it did, else read now."""
        heads = self._heads
        if heads is not None and n <= SNIFF_BYTES:
            head = heads.get(blob.algorithm, blob.name)
            if head is not None:
                return head[:n]
        fd = self.blob_dir_fd(blob.algorithm)
        if fd is None:
            raise FileNotFoundError(blob.relpath)
        f = self._open(fd, blob.name, blob.relpath)
        try:
            return os.read(f, n)
        finally:
            os.close(f)

    def open_blob_fd(self, blob: BlobFile) -> int:
        """A read-only fd on a blob file (caller closes it); used for hashing."""
        fd = self.blob_dir_fd(blob.algorithm)
        if fd is None:
            raise FileNotFoundError(blob.relpath)
        return self._open(fd, blob.name, blob.relpath)

    def stat_blob(self, digest: str) -> os.stat_result | None:
        """lstat of blobs/<alg>/<encoded> for a valid digest string, or None when absent."""
        alg, _, name = digest.partition(":")
        fd = self.blob_dir_fd(alg)
        if fd is None or len(name) != _HEX_LEN.get(alg, -1) or name.strip(_HEX_DIGITS):
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    blob_relpath = staticmethod(blob_relpath)

    # -- scans ----------------------------------------------------------------------------------
    def scan_blobs(self) -> BlobScan:
        """One lstat pass over blobs/: every blob by digest, and everything else as a stray.

        The first scan of a Layout given a listing takes its columns from the listing's child
        when they are certainly of these very folders and began after index.json was last
        written; later scans (gc re-scans before deleting) stat anew."""
        listing, self._listing = self._listing, None
        self._drop_heads()  # (a head read ahead is of the first scan's file)
        if listing is not None:
            data = listing.take(heads=self._sniff_ahead, began_after=self._listed_after_index)
            got = self._from_columns(data) if data is not None else None
            if got is not None:
                scan, folders = got
                self._heads = listing.heads(folders)
                return scan
            listing.close()
        blobs_fd = self._subdir_fd(BLOBS)
        if blobs_fd is None:
            strays: list[Stray] = []
            if self.stat_top(BLOBS) is not None:
                strays.append(Stray(BLOBS, "not a directory (or a symlink); not followed", 0))
            return BlobScan({}, tuple(strays))
        scan = self.scan_from_columns(self.scan_columns())
        assert scan is not None  # the folders it names are the ones just opened
        return scan

    def scan_columns(self) -> bytes:
        """The lstat of every entry of each blobs/<algorithm>/, as one marshal document
        (store/scan.columns; a listing's child makes the same); `scan_from_columns` reads it.
        b"" when blobs/ cannot be opened."""
        blobs_fd = self._subdir_fd(BLOBS)
        if blobs_fd is None:
            return b""
        return scan.columns(self._root_fd, blobs_fd, self.blob_dir_fd)

    def _listed_after_index(self, began_ns: int) -> bool:
        """Whether a listing's scan, begun at `began_ns`, lists every blob the index.json read
        before this scan can name. BuildKit writes an export's blobs, then index.json (in place,
        which sets its mtime): a scan begun after that write lists them all. A listing is begun
        before the read (the CLI's, at once; gc's, before each plan), so an export may land in
        between: judged by index.json's mtime now (never older than that of the bytes read),
        INDEX_SETTLED_NS before the scan at the latest; else Layout scans itself. (A stale
        scan could delete nothing: what it lacks is unknown to the read, a needed manifest
        missing from it a refusal.)"""
        st = self.stat_top(INDEX_JSON)
        return st is None or st.st_mtime_ns + INDEX_SETTLED_NS <= began_ns

    def list_ahead(self) -> None:
        """Begin now, in a child (listing.py), the scan the next `scan_blobs` takes (and the
        heads, if `sniff_ahead` asks): a real gc's, begun under its lock, just before its read.
        A listing begun earlier and not taken (its read failed) is stopped: it is older. None
        is begun while index.json is younger than INDEX_SETTLED_NS (an export landing): its
        scan would not be taken (_listed_after_index), and the read scans itself."""
        from ocicache.store.listing import Listing

        if self._listing is not None:
            self._listing.close()
            self._listing = None
        if not self._listed_after_index(time.time_ns()):
            return
        self._listing = Listing(str(self.root))

    def sniff_ahead(self, wanted: bool = True) -> None:
        """This read will sniff most blobs (a first read): the listing's child, if any, reads
        their heads while this process parses the documents (read_blob_head takes them).
        `wanted=False`: the read is done; the child is stopped and its heads let go."""
        self._sniff_ahead = wanted
        if not wanted:
            self._drop_heads()

    def _drop_heads(self) -> None:
        heads, self._heads = self._heads, None
        if heads is not None:
            heads.close()

    def scan_from_columns(self, data: bytes) -> BlobScan | None:
        """The BlobScan of `scan_columns`'s bytes; None unless they are well formed and DIR,
        blobs/ and each blobs/<algorithm>/ are the folders this Layout holds open."""
        got = self._from_columns(data)
        return None if got is None else got[0]

    def _from_columns(self, data: bytes) -> tuple[BlobScan, list[tuple[str, list[str]]]] | None:
        """scan_from_columns, and each folder's (algorithm, names) in the columns' order."""
        identity = scan.identity
        blobs_fd = self._subdir_fd(BLOBS)
        if not data or blobs_fd is None:
            return None
        try:
            root_ident, blobs_ident, folders = marshal.loads(data)
            if root_ident != identity(os.fstat(self._root_fd)) or blobs_ident != identity(os.fstat(blobs_fd)):
                return None
            blobs: dict[str, BlobFile] = {}
            strays: list[Stray] = []
            named: list[tuple[str, list[str]]] = []
            for folder in folders:
                alg = folder[0]
                rel_alg = f"{BLOBS}/{alg}"
                if len(folder) == 2:
                    strays.append(Stray(rel_alg, folder[1], 0))
                    continue
                _, ident, names, sizes, mtimes, modes, allocated, inodes, links, changes = folder
                alg_fd = self.blob_dir_fd(alg)
                if alg_fd is None or ident != identity(os.fstat(alg_fd)):
                    return None
                if not (
                    len(names)
                    == len(sizes)
                    == len(mtimes)
                    == len(modes)
                    == len(allocated)
                    == len(inodes)
                    == len(links)
                    == len(changes) // 2
                ):
                    return None
                self._add_blobs(alg, rel_alg, folder, blobs, strays)
                named.append((alg, names))
        except (ValueError, TypeError, EOFError, KeyError):
            return None
        fingerprint = hashlib.sha256(data).digest()
        return BlobScan(blobs, tuple(sorted(strays, key=lambda s: s.relpath)), fingerprint), named

    @staticmethod
    def _add_blobs(
        alg: str, rel_alg: str, folder: tuple[Any, ...], blobs: dict[str, BlobFile], strays: list[Stray]
    ) -> None:
        """One folder's columns into BlobFiles (every regular file with a digest's name, in
        name order) and Strays (the rest)."""
        _, _, names, sizes, mtimes, modes, allocated, inodes, links, _ = folder
        hex_len = _HEX_LEN[alg]
        prefix = alg + ":"
        odd: list[int] = []
        # The usual case checked at C speed (every name the right length and hex, every mode a
        # regular file's); only otherwise is each entry looked at.
        if (
            names
            and set(map(len, names)) == {hex_len}
            and _all_hex("".join(names))
            and all(stat.S_ISREG(m) for m in set(modes))
        ):
            pass
        else:
            odd = [
                i
                for i, (name, mode) in enumerate(zip(names, modes, strict=True))
                if len(name) != hex_len or name.strip(_HEX_DIGITS) or not stat.S_ISREG(mode)
            ]
        for i in odd:
            name, mode, rel = names[i], modes[i], f"{rel_alg}/{names[i]}"
            if mode == -1:
                strays.append(Stray(rel, "cannot stat", 0))
            elif len(name) != hex_len or name.strip(_HEX_DIGITS):
                strays.append(Stray(rel, "name is not a digest", sizes[i], allocated[i], inodes[i]))
            else:
                strays.append(Stray(rel, f"{file_kind(mode)}, not a regular file; not followed", 0))
        columns = [names, sizes, mtimes, modes, allocated, inodes, links]
        if odd:
            skip = set(odd)
            columns = [[v for i, v in enumerate(c) if i not in skip] for c in columns]
        digests = [prefix + n for n in columns[0]]
        new = tuple.__new__  # BlobFile's own __new__ without its per-call argument handling
        blobs.update(
            zip(digests, [new(BlobFile, t) for t in zip(digests, *columns[1:], strict=True)], strict=True)
        )

    def scan_ingest(self) -> tuple[IngestEntry, ...]:
        """Every `ingest/<name>/` folder (interrupted writes), sorted by name."""
        ingest_fd = self._subdir_fd(INGEST)
        if ingest_fd is None:
            return ()
        out: list[IngestEntry] = []
        for entry in sorted(os.scandir(ingest_fd), key=lambda e: e.name):
            rel = f"{INGEST}/{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                regular = stat.S_ISREG(st.st_mode)
                alone, shared = _allocation([st] if regular else [])
                out.append(
                    IngestEntry(
                        entry.name,
                        rel,
                        st.st_size if regular else 0,
                        None,
                        None,
                        st.st_mtime_ns,
                        None,
                        alone,
                        shared,
                    )
                )
                continue
            out.append(self._ingest_entry(entry.name, rel, st))
        return tuple(out)

    def _ingest_entry(self, name: str, rel: str, dir_st: os.stat_result) -> IngestEntry:
        fd = self._subdir_fd(rel)
        if fd is None:
            return IngestEntry(name, rel, 0, None, None, dir_st.st_mtime_ns, None)
        total_bytes = 0
        data_size: int | None = None
        mtime = dir_st.st_mtime_ns
        files: dict[str, os.stat_result] = {}
        for f in os.scandir(fd):
            try:
                fst = f.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(fst.st_mode):
                total_bytes += fst.st_size
                files[f.name] = fst
        alone, shared = _allocation(list(files.values()))
        if "data" in files:
            data_size = files["data"].st_size
            mtime = files["data"].st_mtime_ns
        total = _small_int(self, fd, "total", f"{rel}/total") if "total" in files else None
        ref = _small_text(self, fd, "ref", f"{rel}/ref") if "ref" in files else None
        return IngestEntry(name, rel, total_bytes, data_size, total, mtime, ref, alone, shared)

    def quarantine_batches(self) -> list[str]:
        """Names of the batch folders in gc's quarantine (sorted)."""
        fd = self._subdir_fd(QUARANTINE)
        return [] if fd is None else self._listdir(fd)

    def scan_quarantine(self) -> QuarantineScan:
        """Every blob gc moved into `.ocicache/quarantine/` (quarantine.py), and odd entries.

        Read afresh each call (gc moves blobs in and out while it runs)."""
        for rel in [r for r in self._dir_fds if r == OWN_DIR or r.startswith(OWN_DIR + "/")]:
            self.forget_dir(rel)
        fd = self._subdir_fd(QUARANTINE)
        if fd is None:
            st = self.stat_top(OWN_DIR)
            return QuarantineScan((), () if st is None or stat.S_ISDIR(st.st_mode) else (OWN_DIR,))
        blobs: list[QuarantinedBlob] = []
        odd: list[str] = []
        for batch in self._listdir(fd):
            made = batch_ns(batch)
            batch_fd = self._subdir_fd(f"{QUARANTINE}/{batch}") if made is not None else None
            if made is None or batch_fd is None:
                odd.append(f"{QUARANTINE}/{batch}")
                continue
            for alg in self._listdir(batch_fd):
                rel_alg = f"{QUARANTINE}/{batch}/{alg}"
                alg_fd = self._subdir_fd(rel_alg) if alg in ALGORITHMS else None
                if alg_fd is None:
                    odd.append(rel_alg)
                    continue
                hex_len = _HEX_LEN[alg]
                for entry in sorted(os.scandir(alg_fd), key=lambda e: e.name):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    name = entry.name
                    if len(name) != hex_len or name.strip(_HEX_DIGITS) or not stat.S_ISREG(st.st_mode):
                        odd.append(f"{rel_alg}/{name}")
                        continue
                    blocks = 0 if st.st_nlink > 1 else st.st_blocks * 512
                    blobs.append(QuarantinedBlob(batch, made, alg, name, st.st_size, blocks))
        return QuarantineScan(tuple(blobs), tuple(odd))

    def walk_files(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every entry below DIR (relative path, lstat), not following symlinks; sorted."""
        yield from _walk(self._root_fd, "")


def _allocation(files: list[os.stat_result]) -> tuple[int, tuple[tuple[str, int], ...]]:
    """What regular files take on disk: (bytes of those with no other hard link, and
    ("device:inode", bytes) of each of the others, once per inode)."""
    alone = 0
    shared: dict[str, int] = {}
    for st in files:
        if st.st_nlink > 1:
            shared[f"{st.st_dev}:{st.st_ino}"] = st.st_blocks * 512
        else:
            alone += st.st_blocks * 512
    return alone, tuple(sorted(shared.items()))


def _walk(root_fd: int, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    """Depth-first, sorted, iteratively (a folder tree can be thousands deep): a stack of open
    folders, each with the entries still to list."""
    stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = []
    stack.append((root_fd, prefix, iter(sorted(os.scandir(root_fd), key=lambda e: e.name))))
    try:
        while stack:
            fd, base, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                if fd != root_fd:
                    os.close(fd)
                continue
            rel = f"{base}{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            yield rel, st
            if stat.S_ISDIR(st.st_mode):
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    listed = sorted(os.scandir(sub), key=lambda e: e.name)
                except OSError:
                    os.close(sub)
                    continue
                stack.append((sub, rel + "/", iter(listed)))
    finally:
        for fd, _, _ in stack:
            if fd != root_fd:
                os.close(fd)


def _too_large(where: str, size: int, limit: int, limit_name: str | None) -> TooLargeError:
    name = limit_name or "read limit"
    return TooLargeError(
        f"{size} bytes: larger than ocicache's {name} ({_mib(limit)}, {limit} bytes); not read",
        file=where,
        limit=limit,
        limit_name=name,
    )


def _mib(n: int) -> str:
    return f"{n >> 30} GiB" if n >= 1 << 30 and not n % (1 << 30) else f"{n / (1 << 20):g} MiB"


def _small_text(layout: Layout, dir_fd: int, name: str, where: str) -> str | None:
    try:
        return layout._read(dir_fd, name, where, 4096).decode("utf-8", "replace").strip()
    except (OSError, CorruptError):
        return None


def _small_int(layout: Layout, dir_fd: int, name: str, where: str) -> int | None:
    text = _small_text(layout, dir_fd, name, where)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def file_kind(mode: int) -> str:
    """'a symlink', 'a FIFO', ... for an lstat mode that is not a regular file."""
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
