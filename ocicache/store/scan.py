"""The lstat of every entry of each blobs/<algorithm>/: the one pass over blobs/ every command
makes (store/layout.Layout.scan_columns), as columns in one marshal document; and, for a
listing's child on a first read, every regular blob's first 64 bytes (`heads`).

It imports os, marshal, stat, time and format/names' constants, nothing else: a listing's child
(listing.py), forked before anything else of ocicache loads, runs it at once (a ~40 ms head
start on the layout module's imports; tests/test_listing.py checks what it imports)."""

from __future__ import annotations

import marshal
import os
import stat
import time

from ocicache.format.names import BLOBS, HEX_LENGTHS, SNIFF_BYTES

TYPE_CHECKING = False  # (typing itself is not imported: it loads re, enum, collections, ...)
if TYPE_CHECKING:
    from collections.abc import Callable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# How a blob is opened to be read: never through a symlink, never waiting on a FIFO.
READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
NOATIME = getattr(os, "O_NOATIME", 0)


def open_to_read(name: str, dir_fd: int) -> int:
    """An fd reading the file `name` below `dir_fd`, opened with READ_FLAGS, and O_NOATIME
    when the file's owner may use it (only the owner may); OSError as os.open raises it. The
    one way a blob is opened (Layout's reads and a listing child's heads)."""
    try:
        return os.open(name, READ_FLAGS | NOATIME, dir_fd=dir_fd)
    except PermissionError:
        if not NOATIME:
            raise
    return os.open(name, READ_FLAGS, dir_fd=dir_fd)


_BATCH = 256  # heads sent at a time


def identity(st: os.stat_result) -> str:
    """An lstat's "device:inode"."""
    return f"{st.st_dev}:{st.st_ino}"


def columns(root_fd: int, blobs_fd: int, folder_fd: Callable[[str], int | None]) -> bytes:
    """(DIR's and blobs/'s "dev:ino", [(algorithm, "dev:ino" or a stray's reason, names, sizes,
    mtimes, modes, allocated, inodes, links, (inode, ctime) pairs), ...]), names sorted, as one
    marshal document. `folder_fd(algorithm)`: the fd of blobs/<algorithm> (None when it is not a
    real directory); Layout.scan_from_columns reads the result."""
    return marshal.dumps(_scan(root_fd, blobs_fd, folder_fd))


def _scan(root_fd: int, blobs_fd: int, folder_fd: Callable[[str], int | None]) -> tuple[object, ...]:
    folders: list[tuple[object, ...]] = []
    for alg in sorted(os.listdir(blobs_fd)):
        if alg not in HEX_LENGTHS:
            folders.append((alg, "unknown digest algorithm folder"))
            continue
        alg_fd = folder_fd(alg)
        if alg_fd is None:
            folders.append((alg, "not a directory (or a symlink); not followed"))
            continue
        # The hot loop of every command (one entry per blob, 50k+ in big caches): one lstat per
        # name, its fields appended to columns (no stat_result is kept: 50k of them alive at
        # once is slower, measured).
        names = os.listdir(alg_fd)
        names.sort()
        sizes: list[int] = []
        mtimes: list[int] = []
        modes: list[int] = []
        allocated: list[int] = []
        inodes: list[str] = []
        links: list[int] = []
        # Only for the fingerprint: a file rewritten in place (its mtime set back, even) or
        # replaced by another of the same size has another ctime or inode.
        changes: list[int] = []
        lstat = os.stat
        for name in names:
            try:
                st = lstat(name, dir_fd=alg_fd, follow_symlinks=False)
            except OSError:
                st = None
            if st is None:
                sizes.append(0)
                mtimes.append(0)
                modes.append(-1)  # cannot stat
                allocated.append(0)
                inodes.append("")
                links.append(0)
                changes.extend((0, 0))
                continue
            n = st.st_nlink
            sizes.append(st.st_size)
            mtimes.append(st.st_mtime_ns)
            modes.append(st.st_mode)
            allocated.append(st.st_blocks * 512)
            inodes.append(f"{st.st_dev}:{st.st_ino}" if n > 1 else "")
            links.append(n)
            changes.extend((st.st_ino, st.st_ctime_ns))
        folders.append(
            (alg, identity(os.fstat(alg_fd)), names, sizes, mtimes, modes, allocated, inodes, links, changes)
        )
    return (identity(os.fstat(root_fd)), identity(os.fstat(blobs_fd)), folders)


def serve(root: str, send: Callable[[bytes], None], go: Callable[[], bool]) -> None:
    """What a listing's child runs. `columns` of the directory `root`, its folders opened as
    Layout opens them (DIR as named, a symlink even; blobs/ and blobs/<algorithm>/ with
    O_NOFOLLOW), sent after the clock's time before the scan began (8 bytes, big-endian: ns
    since the epoch) and their length (8 bytes); the reading Layout uses them only if every
    folder's "dev:ino" is the one it opened and the index.json it read is older than the scan.
    Then, if `go()` (the parent's answer: this read will sniff), `heads`."""
    started = time.time_ns()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    opened = [root_fd]
    try:
        blobs_fd = os.open(BLOBS, DIR_FLAGS, dir_fd=root_fd)
        opened.append(blobs_fd)

        def folder_fd(alg: str) -> int | None:
            try:
                fd = os.open(alg, DIR_FLAGS, dir_fd=blobs_fd)
            except OSError:
                return None
            opened.append(fd)
            return fd

        # The very bytes Layout's own scan makes (marshal marks objects for back-references by
        # their reference counts, and the fingerprint hashes these bytes): the same call.
        data = columns(root_fd, blobs_fd, folder_fd)
        send(started.to_bytes(8, "big") + len(data).to_bytes(8, "big") + data)
        if go():
            scanned = marshal.loads(data)
            del data
            heads(scanned, blobs_fd, send)
    finally:
        for fd in opened:
            os.close(fd)


def heads(scanned: tuple[object, ...], blobs_fd: int, send: Callable[[bytes], None]) -> None:
    """The first SNIFF_BYTES of every regular file the scan saw, newest first (the order the
    reader sniffs in), sent in batches of records: the entry's position among all the scan's
    names (4 bytes, big-endian, folder after folder), the head's length (1 byte), the head.

    A head is sent only when the file opened (as Layout opens a blob: O_NOFOLLOW, O_NONBLOCK)
    is a regular file whose size, mtime, inode and ctime are the scan's: it is then the head of
    the very file the scan listed. Anything else (gone, replaced, a short read) is not sent, and
    the parent reads that head itself. Only the first bytes are ever read (a layer can be
    gigabytes). Each folder is opened again, and read only if it is the one scanned (its
    "dev:ino")."""
    folders = scanned[2]
    assert isinstance(folders, list)
    starts: list[int] = []  # each folder's first position
    where: list[tuple[int, int]] = []  # (folder, index) of every regular file
    mtimes: list[int] = []
    position = 0
    for f, folder in enumerate(folders):
        starts.append(position)
        if len(folder) == 2:  # (a stray folder: no names)
            continue
        position += len(folder[2])
        folder_mtimes = folder[4]
        for i, mode in enumerate(folder[5]):
            if mode != -1 and stat.S_ISREG(mode):
                where.append((f, i))
                mtimes.append(folder_mtimes[i])
    # Newest first, ties in name order: as the reader walks inv.blobs (sorted, stable).
    order = sorted(range(len(where)), key=mtimes.__getitem__, reverse=True)
    fds: dict[int, int] = {}  # folder -> its fd, when it is still the folder scanned
    for f, folder in enumerate(folders):
        if len(folder) == 2:
            continue
        try:
            fd = os.open(folder[0], DIR_FLAGS, dir_fd=blobs_fd)
        except OSError:
            continue
        if identity(os.fstat(fd)) == folder[1]:
            fds[f] = fd
        else:
            os.close(fd)
    try:
        _send_heads(folders, where, order, starts, fds, send)
    finally:
        for fd in fds.values():
            os.close(fd)


def _send_heads(
    folders: list[tuple[object, ...]],
    where: list[tuple[int, int]],
    order: list[int],
    starts: list[int],
    fds: dict[int, int],
    send: Callable[[bytes], None],
) -> None:
    out: list[bytes] = []
    for k in order:
        f, i = where[k]
        folder = folders[f]
        fd_dir = fds.get(f)
        changes = folder[9]
        head = None
        if fd_dir is not None:
            head = _head(fd_dir, folder[2][i], folder[3][i], folder[4][i], changes[2 * i], changes[2 * i + 1])
        position = (starts[f] + i).to_bytes(4, "big")
        out.append(position + (_NO_HEAD if head is None else bytes((len(head),)) + head))
        if len(out) == _BATCH:
            send(b"".join(out))
            out.clear()
    if out:
        send(b"".join(out))


_NO_HEAD = b"\xff"  # a record's length byte: no head for this entry (the parent reads it)


def _head(fd_dir: int, name: str, size: int, mtime: int, ino: int, ctime: int) -> bytes | None:
    """The first SNIFF_BYTES of the file `name`, if it is still the regular file the scan saw
    and it gives them all; else None."""
    try:
        fd = open_to_read(name, fd_dir)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_size != size
            or st.st_mtime_ns != mtime
            or st.st_ino != ino
            or st.st_ctime_ns != ctime
        ):
            return None
        head = os.read(fd, SNIFF_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return head if len(head) == min(SNIFF_BYTES, size) else None
