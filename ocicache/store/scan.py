"""The lstat of every entry of each blobs/<algorithm>/: the one pass over blobs/ every command
makes (store/layout.Layout.scan_columns), as columns in one marshal document.

It imports os, marshal and format/names' constants, nothing else: a listing's child
(listing.py), forked before anything else of ocicache loads, runs it at once (a ~40 ms head
start on the layout module's imports; tests/test_listing.py checks what it imports)."""

from __future__ import annotations

import marshal
import os

from ocicache.format.names import BLOBS, HEX_LENGTHS

TYPE_CHECKING = False  # (typing itself is not imported: it loads re, enum, collections, ...)
if TYPE_CHECKING:
    from collections.abc import Callable

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def identity(st: os.stat_result) -> str:
    """An lstat's "device:inode"."""
    return f"{st.st_dev}:{st.st_ino}"


def columns(root_fd: int, blobs_fd: int, folder_fd: Callable[[str], int | None]) -> bytes:
    """(DIR's and blobs/'s "dev:ino", [(algorithm, "dev:ino" or a stray's reason, names, sizes,
    mtimes, modes, allocated, inodes, links, (inode, ctime) pairs), ...]), names sorted, as one
    marshal document. `folder_fd(algorithm)`: the fd of blobs/<algorithm> (None when it is not a
    real directory); Layout.scan_from_columns reads the result."""
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
    return marshal.dumps((identity(os.fstat(root_fd)), identity(os.fstat(blobs_fd)), folders))


def columns_of(root: str) -> bytes:
    """`columns` of the directory `root`, its folders opened as Layout opens them (DIR as named,
    a symlink even; blobs/ and blobs/<algorithm>/ with O_NOFOLLOW). What a listing's child runs;
    the reading Layout uses the bytes only if every folder's "dev:ino" is the one it opened."""
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

        return columns(root_fd, blobs_fd, folder_fd)
    finally:
        for fd in opened:
            os.close(fd)
