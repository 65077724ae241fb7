"""The writer of blobs into a cache directory (`ocicache copy`), and of a new directory's layout.

A blob is written as BuildKit's content store commits one: into a temporary file in the same
folder (`blobs/<algorithm>/.ocicache-copy-<random>`, a name that is never a digest), hashed
while it is written, made read-only (0444), fsynced, renamed to `blobs/<algorithm>/<encoded>`
and the folder fsynced. The rename happens only when the bytes hash to the digest and their
count is the size: a file named by a digest always holds that digest's content, and a crash
leaves at most a temporary file (removed by the next copy, which holds the directory's lock:
quarantine.gc_lock). The digest is validated before it names anything; folders are opened with
O_NOFOLLOW relative to the directory's fd, so a symlink at `blobs` or `blobs/<algorithm>` is
refused, never followed. `link_verified` hard-links an existing file (the same inode that was
just hashed, through /proc/self/fd) instead of copying it.

`ensure_layout` makes a directory an OCI layout as BuildKit leaves one (`oci-layout`,
`index.json` with no entries, `blobs/sha256/`), each file written atomically; it refuses a
directory that holds anything else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator

from ocicache.base.errors import CorruptError, NotACacheDirError, RefusedError
from ocicache.format.digest import Digest, parse_digest
from ocicache.format.names import BLOBS, INDEX_JSON, LOCK_FILE, OCI_LAYOUT
from ocicache.store.indexwrite import TEMP_PREFIX as INDEX_TEMP_PREFIX
from ocicache.store.indexwrite import replace_index
from ocicache.store.layout import Layout
from ocicache.store.lock import index_lock

TEMP_PREFIX = ".ocicache-copy-"
OCI_LAYOUT_BYTES = b'{"imageLayoutVersion":"1.0.0"}'
EMPTY_INDEX = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}'
BLOB_MODE = 0o444
CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NOT_A_DIR = "not a directory (or a symlink); not followed"
# A hard link is not possible here: copy the bytes instead.
NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.EACCES, errno.ENOENT)


def _write_error(e: OSError, where: str) -> RefusedError:
    return RefusedError(f"cannot write: {e.strerror or e}", file=where)


class BlobWriter:
    """Writes blobs into one directory's `blobs/` (see the module docstring). The caller holds
    the directory's gc lock (quarantine.gc_lock) while it writes: one writer at a time."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.root = str(layout.root)

    def _where(self, digest: Digest, name: str | None = None) -> str:
        return f"{self.root}/{BLOBS}/{digest.algorithm}/{name or digest.encoded}"

    def folder_fd(self, algorithm: str) -> int:
        """fd of `blobs/<algorithm>`, made (0755, fsynced into its parent) when absent."""
        fd = self.layout.blob_dir_fd(algorithm)
        if fd is not None:
            return fd
        for rel, parent in ((BLOBS, None), (f"{BLOBS}/{algorithm}", BLOBS)):
            parent_fd = self.layout.root_fd if parent is None else self.layout._subdir_fd(parent)
            if parent_fd is None:
                raise RefusedError(_NOT_A_DIR, file=f"{self.root}/{parent}")
            name = rel.rpartition("/")[2]
            try:
                os.mkdir(name, 0o755, dir_fd=parent_fd)
                os.fsync(parent_fd)
            except FileExistsError:
                pass
            except OSError as e:
                raise _write_error(e, f"{self.root}/{rel}") from None
            self.layout.forget_dir(rel)
        fd = self.layout.blob_dir_fd(algorithm)
        if fd is None:
            raise RefusedError(_NOT_A_DIR, file=f"{self.root}/{BLOBS}/{algorithm}")
        return fd

    def present(self, digest: str, size: int) -> bool:
        """True when `blobs/<alg>/<encoded>` is a regular file of `size` bytes."""
        st = self.layout.stat_blob(str(parse_digest(digest)))
        return st is not None and stat.S_ISREG(st.st_mode) and st.st_size == size

    def remove_stale_temps(self) -> int:
        """Remove what a killed writer left (`blobs/*/.ocicache-copy-*`); how many."""
        removed = 0
        for algorithm in ("sha256", "sha512"):
            fd = self.layout.blob_dir_fd(algorithm)
            if fd is None:
                continue
            for entry in os.scandir(fd):
                if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.name, dir_fd=fd)
                        removed += 1
        return removed

    def write(
        self,
        digest: str,
        size: int,
        chunks: Iterable[bytes],
        where: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Write the blob from `chunks`, hashed as they come: renamed into place only when they
        are `size` bytes hashing to `digest`, else CorruptError naming `where` (the source) and
        nothing is left behind."""
        d = parse_digest(digest)
        fd_dir = self.folder_fd(d.algorithm)
        temp = TEMP_PREFIX + secrets.token_hex(8)
        target = self._where(d)
        try:
            fd = os.open(temp, _WRITE_FLAGS, 0o600, dir_fd=fd_dir)
        except OSError as e:
            raise _write_error(e, target) from None
        renamed = False
        try:
            h = hashlib.new(d.algorithm)
            n = 0
            try:
                for chunk in chunks:
                    n += len(chunk)
                    if n > size:
                        raise CorruptError(
                            f"more than the {size} bytes its descriptor gives; not copied", file=where
                        )
                    h.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                require_content(d.algorithm, h, n, size, digest, where)
                os.fchmod(fd, BLOB_MODE)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temp, d.encoded, src_dir_fd=fd_dir, dst_dir_fd=fd_dir)
            renamed = True
            os.fsync(fd_dir)
        except OSError as e:
            if renamed:
                return  # in place; only the folder's fsync failed
            raise _write_error(e, target) from None
        finally:
            if not renamed:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=fd_dir)

    def link_verified(
        self,
        digest: str,
        size: int,
        src_fd: int,
        where: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> bool:
        """Hash the open file `src_fd` (CorruptError naming `where` unless it is `size` bytes
        of `digest`), then hard-link that very inode into place. False when no hard link can
        be made here (another filesystem, not allowed): the caller copies instead."""
        d = parse_digest(digest)
        h = hashlib.new(d.algorithm)
        n = 0
        os.lseek(src_fd, 0, os.SEEK_SET)
        while chunk := os.read(src_fd, CHUNK):
            n += len(chunk)
            if n > size:
                break
            h.update(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        require_content(d.algorithm, h, n, size, digest, where, " or more" if n > size else "")
        fd_dir = self.folder_fd(d.algorithm)
        temp = TEMP_PREFIX + secrets.token_hex(8)
        try:
            os.link(f"/proc/self/fd/{src_fd}", temp, dst_dir_fd=fd_dir, follow_symlinks=True)
        except OSError as e:
            if e.errno in NO_LINK:
                return False
            raise _write_error(e, self._where(d)) from None
        try:
            os.rename(temp, d.encoded, src_dir_fd=fd_dir, dst_dir_fd=fd_dir)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=fd_dir)
            raise _write_error(e, self._where(d)) from None
        with contextlib.suppress(OSError):
            os.fsync(fd_dir)
        return True


def ensure_layout(path: str | os.PathLike[str]) -> bool:
    """Make `path` an empty OCI layout when it is missing or an empty directory (True: made);
    leave a cache directory as it is (False); NotACacheDirError for anything else.

    The order makes an interrupted run harmless: index.json first (from then on the folder is a
    cache directory with no entries, which the next run completes), then oci-layout, then
    blobs/sha256. Each file is written to a temp file, fsynced and renamed; index.json under
    BuildKit's lock."""
    root = os.path.abspath(path)
    try:
        os.makedirs(root, 0o755, exist_ok=True)
    except FileExistsError:
        raise NotACacheDirError("not a directory", file=root) from None
    except OSError as e:
        raise RefusedError(f"cannot create: {e.strerror or e}", file=root) from None
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except NotADirectoryError:
        raise NotACacheDirError("not a directory", file=root) from None
    except OSError as e:
        raise NotACacheDirError(f"cannot open: {e.strerror or e}", file=root) from None
    try:
        names = {e.name for e in os.scandir(fd)}
        if INDEX_JSON in names or BLOBS in names:
            if OCI_LAYOUT not in names and INDEX_JSON in names:
                _write_file(fd, OCI_LAYOUT, OCI_LAYOUT_BYTES, root)
            return False
        ours = {n for n in names if n.startswith((INDEX_TEMP_PREFIX, ".oci-layout" + TEMP_PREFIX))}
        if names - ours - {OCI_LAYOUT, LOCK_FILE}:
            raise NotACacheDirError(
                "not a cache directory and not empty; not written into",
                file=root,
                hint="copy into a cache directory, a new directory or an empty one",
            )
        try:
            with index_lock(fd):
                replace_index(fd, EMPTY_INDEX, 0o644)
            _write_file(fd, OCI_LAYOUT, OCI_LAYOUT_BYTES, root)
            os.mkdir(BLOBS, 0o755, dir_fd=fd)
            sub = os.open(BLOBS, _DIR_FLAGS, dir_fd=fd)
            try:
                os.mkdir("sha256", 0o755, dir_fd=sub)
                os.fsync(sub)
            finally:
                os.close(sub)
            os.fsync(fd)
        except FileExistsError:
            pass
        except OSError as e:
            raise RefusedError(f"cannot write: {e.strerror or e}", file=root) from None
        for name in ours:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=fd)
        return True
    finally:
        os.close(fd)


def _write_file(dir_fd: int, name: str, data: bytes, root: str) -> None:
    temp = f".{name}{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        fd = os.open(temp, _WRITE_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise RefusedError(f"cannot write: {e.strerror or e}", file=f"{root}/{name}") from None


def verified(
    chunks: Iterable[bytes],
    digest: str,
    size: int,
    where: str,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """`chunks` passed through, hashed on the way: the last chunk is held back until the whole
    is known to be `size` bytes of `digest`, else CorruptError naming `where`. A receiver that
    completes only on the last byte (a registry's upload, whose Content-Length is `size`) never
    completes a wrong blob."""
    d = parse_digest(digest)
    h = hashlib.new(d.algorithm)
    n = 0
    held: bytes | None = None
    for chunk in chunks:
        if not chunk:
            continue
        n += len(chunk)
        if n > size:
            raise CorruptError(f"more than the {size} bytes its descriptor gives; not copied", file=where)
        h.update(chunk)
        if held is not None:
            yield held
        held = chunk
        if on_bytes is not None:
            on_bytes(len(chunk))
    require_content(d.algorithm, h, n, size, digest, where)
    if held is not None:
        yield held


def require_content(
    algorithm: str, h: hashlib._Hash, n: int, size: int, digest: str, where: str, more: str = ""
) -> None:
    """CorruptError naming `where` unless what was hashed (`n` bytes into `h`) is `size` bytes
    of `digest`."""
    if n != size:
        raise CorruptError(f"{n} bytes{more}, its descriptor gives {size}; not copied", file=where)
    got = f"{algorithm}:{h.hexdigest()}"
    if got != digest:
        raise CorruptError(f"content hashes to {got}, not {digest}; not copied", file=where)
