"""Distribution's filesystem storage (`docker/registry/v2`), read read-only for one repository.

`--registry-storage ROOT`: ROOT is the registry's storage root (the `rootdirectory` of its
config, holding `docker/registry/v2`) or that `v2` directory itself. The layout, as
distribution v2.8.2 writes it (fixtures/registry/README.md):

    blobs/<alg>/<2 hex>/<hex>/data                           every blob, once, for all repositories
    repositories/<name>/_layers/<alg>/<hex>/link            a blob linked into the repository
                .../_manifests/revisions/<alg>/<hex>/link   every manifest pushed to it
                .../_manifests/tags/<tag>/current/link      the tag's digest now
                .../_manifests/tags/<tag>/index/<alg>/<hex>/link   every digest the tag held
                .../_uploads/<uuid>/{data,startedat,...}    an upload in progress or abandoned

What the tag index tells that the registry's HTTP API does not: every digest a tag has ever
pointed at, and when (the mtime of its index link; oldest first is the order it held them).

The directory may be hostile (anyone who can write to it), so:
- nothing is ever written, created or renamed;
- no symlink is followed below ROOT: every directory is opened with O_NOFOLLOW|O_DIRECTORY
  relative to its parent's descriptor; a file is lstat'ed (relative to its directory's
  descriptor) and opened, with O_NOFOLLOW|O_NONBLOCK, only when it is a regular file small
  enough; a symlink, a device, a FIFO, a file where a directory belongs or the reverse is
  skipped and said in `problems()`;
- a name becomes part of a path only after it is validated: hex of the algorithm's length under
  `<alg>/`, the tag grammar under `tags/`, the UUID form under `_uploads/`, distribution's
  repository grammar for the repository asked for (UsageError otherwise);
- a link file is read bounded (LINK_LIMIT bytes) and must hold exactly `<alg>:<hex>` (surrounding
  whitespace allowed) naming its own directory; anything else is skipped and said (by its
  length: no content of a file is ever repeated in a problem).

A directory left without its `link` (distribution's API delete removes only the link file) is
what distribution takes for absent, and so is it here: skipped without a word.

Every listing is read once, on first use, and kept: the object is a snapshot of one read.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ocicache.base.errors import NotACacheDirError, UsageError
from ocicache.base.timefmt import parse_rfc3339_ns
from ocicache.format.digest import is_hex_name, parse_digest

V2 = ("docker", "registry", "v2")
LINK_LIMIT = 256  # a link file holds `sha512:<128 hex>` at most (135 bytes)
STARTEDAT_LIMIT = 256  # an upload's `startedat`: one RFC 3339 time
ALGORITHMS = ("sha256", "sha512")
REPO_NAME_MAX = 255  # distribution's reference.NameTotalLengthMax

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | _CLOEXEC

# distribution/reference: path-component = alpha-numeric (separator alpha-numeric)*, separator
# = [_.] | __ | [-]*. Written with `-+`, not `[-]*` (the same names: an empty separator only
# joins alpha-numerics), so that a long name that fails cannot backtrack exponentially.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_REPO_DIRS = ("_manifests", "_layers", "_uploads")
_HEX = {"sha256": re.compile("[0-9a-f]{64}"), "sha512": re.compile("[0-9a-f]{128}")}


def is_repository_name(name: object) -> bool:
    """True for a repository name distribution accepts (`myorg/app-cache`)."""
    return isinstance(name, str) and len(name) <= REPO_NAME_MAX and _REPO.fullmatch(name) is not None


def is_tag_name(name: object) -> bool:
    """True for a tag distribution accepts: `[\\w][\\w.-]{0,127}` (ASCII word characters)."""
    return isinstance(name, str) and _TAG.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class TagHistory:
    """One tag: its digest now (None when `current/link` is missing or unreadable) and every
    digest its `index/` holds, with that link's mtime, oldest first."""

    tag: str
    current: str | None
    index: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Revision:
    """A manifest pushed to the repository: its revision link's mtime, and the size and mtime
    of its blob's data (None when the data file is absent)."""

    digest: str
    link_mtime_ns: int
    size: int | None
    data_mtime_ns: int | None


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload in progress or abandoned: bytes received so far (the size of its `data`) and
    when it started (`startedat`, None when missing or unreadable)."""

    uuid: str
    bytes: int
    started_ns: int | None


_ReadFn = Callable[["_Reader", int, int], None]  # fn(reader, v2_fd, repo_fd)


def _why(e: OSError, fd: int | None = None, name: str | None = None) -> str:
    """Why opening failed. A symlink opened with O_DIRECTORY|O_NOFOLLOW fails with ENOTDIR, as a
    file does: given where, one lstat tells them apart."""
    if e.errno == errno.ELOOP:
        return "a symlink, not followed"
    if e.errno == errno.ENOTDIR:
        if fd is not None and name is not None:
            try:
                if stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    return "a symlink, not followed"
            except OSError:
                pass
        return "not a directory"
    return e.strerror or type(e).__name__


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink, not followed"
    if stat.S_ISDIR(mode):
        return "a directory, not a file"
    return "not a regular file"


class _Reader:
    """One read: problems collected in order; descriptors closed by the caller's `with`."""

    def __init__(self, prefix: str, problems: list[str]) -> None:
        self.prefix = prefix
        self.problems = problems

    def rel(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def note(self, rel: str, why: str) -> None:
        self.problems.append(f"{rel}: {why}")

    def subdir(self, fd: int, name: str, rel: str, *, missing_ok: bool = True) -> int | None:
        """The descriptor of directory `name` below fd, never through a symlink; None when it
        is absent (said unless missing_ok) or cannot be opened (always said)."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not missing_ok:
                self.note(rel, "missing")
            return None
        except OSError as e:
            self.note(rel, _why(e, fd, name))
            return None

    def entries(self, fd: int, rel: str) -> list[str]:
        """The names in the directory, sorted; a directory that cannot be listed is said."""
        try:
            return sorted(os.listdir(fd))
        except OSError as e:
            self.note(rel, f"cannot be listed: {_why(e)}")
            return []

    def read_small(self, fd: int, name: str, rel: str, limit: int) -> tuple[bytes, int] | None:
        """The content and mtime of regular file `name` below fd, read only when at most
        `limit` bytes; None when absent (silently) or skipped (said).

        One lstat, then the open (O_NOFOLLOW|O_NONBLOCK): a device node or a FIFO is never
        opened, a symlink never followed. Swapped in between, the open refuses a symlink, a
        FIFO reads as nothing (no blocking) and what is read is checked like any content."""
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.note(rel, _why(e))
            return None
        if not stat.S_ISREG(st.st_mode):
            self.note(rel, _kind(st.st_mode))
            return None
        if st.st_size > limit:
            self.note(rel, f"{st.st_size} bytes, more than the {limit} it may hold; not read")
            return None
        try:
            f = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except OSError as e:
            self.note(rel, f"cannot be opened: {_why(e)}")
            return None
        try:
            data = os.read(f, limit + 1)
        except OSError as e:
            self.note(rel, f"cannot be read: {_why(e)}")
            return None
        finally:
            os.close(f)
        if len(data) > limit:  # grew after the lstat
            self.note(rel, f"more than the {limit} bytes it may hold; not read")
            return None
        return data, st.st_mtime_ns

    def link(self, fd: int, rel: str, expect: str | None = None) -> tuple[str, int] | None:
        """The digest in `link` below fd and the file's mtime; None when absent (silently) or
        bad (said). With `expect`, the link must name that digest (its directory's)."""
        got = self.read_small(fd, "link", rel, LINK_LIMIT)
        if got is None:
            return None
        data, mtime_ns = got
        digest = _link_digest(data)
        if digest is None:
            self.note(rel, f"not a link file ({len(data)} bytes that are not <algorithm>:<hex>); skipped")
            return None
        if expect is not None and digest != expect:
            self.note(rel, f"names {digest}, not its directory's digest {expect}; skipped")
            return None
        return digest, mtime_ns

    def digest_links(self, fd: int, rel: str) -> list[tuple[str, int]]:
        """(digest, link mtime) of every `<alg>/<hex>/link` below fd that names its directory;
        bad names, non-directories and bad links are said. (The loop over thousands of
        revisions and tag index entries: a link that reads as expected costs one lstat, one
        open and one read; anything else is read again by `link`, which says why.)"""
        out: list[tuple[str, int]] = []
        for alg in self.entries(fd, rel):
            arel = f"{rel}/{alg}"
            if alg not in ALGORITHMS:
                self.note(arel, "not a digest algorithm directory (sha256, sha512); skipped")
                continue
            afd = self.subdir(fd, alg, arel)
            if afd is None:
                continue
            try:
                is_hex = _HEX[alg].fullmatch
                for name in self.entries(afd, arel):
                    if is_hex(name) is None:
                        self.note(f"{arel}/{name}", f"not a {alg} digest name; skipped")
                        continue
                    try:
                        hfd = os.open(name, _DIR_FLAGS, dir_fd=afd)
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        self.note(f"{arel}/{name}", _why(e, afd, name))
                        continue
                    try:
                        digest = f"{alg}:{name}"
                        got = _expected_link(hfd, digest)
                        if got is None:
                            got = self.link(hfd, f"{arel}/{name}/link", digest)
                        if got is not None:
                            out.append(got)
                    finally:
                        os.close(hfd)
            finally:
                os.close(afd)
        return out


def _expected_link(fd: int, digest: str) -> tuple[str, int] | None:
    """The fast path of `_Reader.link`: (digest, mtime) when `link` below fd is a small regular
    file holding exactly `digest` (whitespace around it allowed); None for anything else,
    without a word (the careful read then says what)."""
    try:
        st = os.stat("link", dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_size > LINK_LIMIT:
            return None
        f = os.open("link", _FILE_FLAGS, dir_fd=fd)
        try:
            data = os.read(f, LINK_LIMIT + 1)
        finally:
            os.close(f)
    except OSError:
        return None
    want = digest.encode("ascii")
    if data == want or (len(data) <= LINK_LIMIT and data.strip(b" \t\r\n\v\f") == want):
        return digest, st.st_mtime_ns
    return None


def _link_digest(data: bytes) -> str | None:
    text = data.strip(b" \t\r\n\v\f")
    if not text.isascii():
        return None
    alg, sep, hexpart = text.decode("ascii").partition(":")
    if not sep or not is_hex_name(alg, hexpart):
        return None
    return f"{alg}:{hexpart}"


class _Blobs:
    """Stat of `blobs/<alg>/<2>/<hex>/data`, every directory opened without following symlinks;
    the `blobs/<alg>/<2>` descriptors are kept for the read (close())."""

    def __init__(self, reader: _Reader, v2_fd: int) -> None:
        self.r = reader
        self.v2_fd = v2_fd
        self.fds: dict[tuple[str, ...], int | None] = {}

    def _dir(self, *parts: str) -> int | None:
        if parts in self.fds:
            return self.fds[parts]
        parent = self.v2_fd if len(parts) == 1 else self._dir(*parts[:-1])
        fd = None if parent is None else self.r.subdir(parent, parts[-1], self.r.rel(*parts))
        self.fds[parts] = fd
        return fd

    def stat(self, alg: str, hexpart: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of the blob's data; None when absent or skipped (said)."""
        pfd = self.fds.get(("blobs", alg, hexpart[:2]), -1)
        if pfd == -1:
            pfd = self._dir("blobs", alg, hexpart[:2])
        if pfd is None:
            return None
        try:
            hfd = os.open(hexpart, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.r.note(self._rel(alg, hexpart), _why(e, pfd, hexpart))
            return None
        try:
            st = os.stat("data", dir_fd=hfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as e:
            self.r.note(f"{self._rel(alg, hexpart)}/data", _why(e))
            return None
        finally:
            os.close(hfd)
        if not stat.S_ISREG(st.st_mode):
            self.r.note(f"{self._rel(alg, hexpart)}/data", _kind(st.st_mode))
            return None
        return st.st_size, st.st_mtime_ns

    def _rel(self, alg: str, hexpart: str) -> str:
        return self.r.rel("blobs", alg, hexpart[:2], hexpart)

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)
        self.fds.clear()


class DistributionStorage:
    """One repository of a distribution storage directory, read read-only (module docstring).

    NotACacheDirError when ROOT holds no `docker/registry/v2` (and is not that directory) or
    the repository is absent; UsageError when `repo` is not a repository name."""

    def __init__(self, root: str | os.PathLike[str], repo: str) -> None:
        if not is_repository_name(repo):
            if not isinstance(repo, str):
                raise UsageError(f"a repository name is a string, not {type(repo).__name__}")
            shown = repo if len(repo) <= 80 else repo[:77] + "..."
            raise UsageError(
                f"{shown!r} is not a repository name (lower-case components of [a-z0-9] joined by "
                "'.', '_', '__' or '-', separated by '/')"
            )
        self.root = Path(root)
        self.repo = repo
        self._problems: dict[str, list[str]] = {}
        self._tags: dict[str, TagHistory] | None = None
        self._revisions: dict[str, Revision] | None = None
        self._layers: frozenset[str] | None = None
        self._uploads: tuple[Upload, ...] | None = None
        self._prefix = self._find_v2()  # v2 relative to ROOT ("" when ROOT is v2)
        self.v2 = self.root.joinpath(*self._prefix.split("/")) if self._prefix else self.root
        v2_fd = self._open_v2()
        try:
            os.close(self._open_repo(v2_fd))
        finally:
            os.close(v2_fd)

    def __repr__(self) -> str:
        return f"DistributionStorage({str(self.root)!r}, {self.repo!r})"

    # -- opening ----------------------------------------------------------------------------------
    def _open_root(self) -> int:
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except OSError as e:
            raise NotACacheDirError(
                f"cannot open the registry storage: {_why(e)}", file=str(self.root)
            ) from None

    def _find_v2(self) -> str:
        """Where v2 is below ROOT: `docker/registry/v2`, or "" when ROOT is v2 itself."""
        fd = self._open_root()
        try:
            for i, name in enumerate(V2):
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if i == 0 and _is_dir_at(fd, "repositories"):
                        return ""  # ROOT is the v2 directory
                    raise NotACacheDirError(
                        f"not a registry storage root: no {'/'.join(V2[: i + 1])} "
                        "(want the storage rootdirectory, holding docker/registry/v2, or that v2)",
                        file=str(self.root),
                    ) from None
                except OSError as e:
                    raise NotACacheDirError(
                        f"{'/'.join(V2[: i + 1])}: {_why(e)}", file=str(self.root)
                    ) from None
                if not stat.S_ISDIR(st.st_mode):
                    why = "a symlink, not followed" if stat.S_ISLNK(st.st_mode) else "not a directory"
                    raise NotACacheDirError(
                        f"not a registry storage root: {'/'.join(V2[: i + 1])}: {why}",
                        file=str(self.root),
                    )
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
            return "/".join(V2)
        except OSError as e:
            raise NotACacheDirError(
                f"cannot open the registry storage: {_why(e)}", file=str(self.root)
            ) from None
        finally:
            os.close(fd)

    def _open_v2(self) -> int:
        fd = self._open_root()
        for name in self._prefix.split("/") if self._prefix else ():
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise NotACacheDirError(f"{self._prefix}: {_why(e, fd, name)}", file=str(self.root)) from None
            finally:
                os.close(fd)
            fd = nfd
        return fd

    def _open_repo(self, v2_fd: int) -> int:
        """The repository's directory, walked one component at a time without symlinks."""
        shown = str(self.v2 / "repositories" / self.repo)
        fd = os.dup(v2_fd)
        for name in ("repositories", *self.repo.split("/")):
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                raise NotACacheDirError(
                    f"no repository {self.repo} in this registry storage", file=shown
                ) from None
            except OSError as e:
                why = _why(e, fd, name)
                raise NotACacheDirError(f"repository {self.repo}: {name}: {why}", file=shown) from None
            finally:
                os.close(fd)
            fd = nfd
        if not any(_is_dir_at(fd, d) for d in _REPO_DIRS):
            os.close(fd)
            raise NotACacheDirError(
                f"not a repository (none of {', '.join(_REPO_DIRS)}): {self.repo} holds other "
                "repositories only, or nothing",
                file=shown,
            )
        return fd

    def _read(self, section: str, fn: _ReadFn) -> None:
        problems: list[str] = []
        reader = _Reader(self._prefix, problems)
        v2_fd = self._open_v2()
        try:
            repo_fd = self._open_repo(v2_fd)
            try:
                fn(reader, v2_fd, repo_fd)
            finally:
                os.close(repo_fd)
        finally:
            os.close(v2_fd)
        self._problems[section] = problems

    def _repo_rel(self, *parts: str) -> str:
        return "/".join(p for p in (self._prefix, "repositories", self.repo, *parts) if p)

    # -- the listings -----------------------------------------------------------------------------
    def tags(self) -> dict[str, TagHistory]:
        """Every tag (by name) with its current digest and its index, oldest first."""
        if self._tags is None:
            out: dict[str, TagHistory] = {}

            def read(r: _Reader, v2_fd: int, repo_fd: int) -> None:
                rel = self._repo_rel("_manifests")
                mfd = r.subdir(repo_fd, "_manifests", rel)
                if mfd is None:
                    return
                try:
                    tfd = r.subdir(mfd, "tags", f"{rel}/tags")
                    if tfd is not None:
                        try:
                            self._read_tags(r, tfd, f"{rel}/tags", out)
                        finally:
                            os.close(tfd)
                finally:
                    os.close(mfd)

            self._read("tags", read)
            self._tags = out
        return dict(self._tags)

    def _read_tags(self, r: _Reader, tfd: int, rel: str, out: dict[str, TagHistory]) -> None:
        for tag in r.entries(tfd, rel):
            trel = f"{rel}/{tag}"
            if not is_tag_name(tag):
                r.note(trel, "not a tag name; skipped")
                continue
            fd = r.subdir(tfd, tag, trel)
            if fd is None:
                continue
            try:
                current = None
                cfd = r.subdir(fd, "current", f"{trel}/current", missing_ok=False)
                if cfd is not None:
                    try:
                        got = r.link(cfd, f"{trel}/current/link")
                        if got is not None:
                            current = got[0]
                        elif not _exists_at(cfd, "link"):
                            r.note(f"{trel}/current/link", "missing")
                    finally:
                        os.close(cfd)
                index: list[tuple[str, int]] = []
                ifd = r.subdir(fd, "index", f"{trel}/index")
                if ifd is not None:
                    try:
                        index = r.digest_links(ifd, f"{trel}/index")
                    finally:
                        os.close(ifd)
                index.sort(key=lambda x: (x[1], x[0]))
                out[tag] = TagHistory(tag, current, tuple(index))
            finally:
                os.close(fd)

    def revisions(self) -> dict[str, Revision]:
        """Every manifest revision linked in the repository, oldest link first, with its blob's
        data size and mtime (None when the blob's data is absent)."""
        if self._revisions is None:
            found: list[Revision] = []

            def read(r: _Reader, v2_fd: int, repo_fd: int) -> None:
                rel = self._repo_rel("_manifests")
                mfd = r.subdir(repo_fd, "_manifests", rel)
                if mfd is None:
                    return
                blobs = _Blobs(r, v2_fd)
                try:
                    rfd = r.subdir(mfd, "revisions", f"{rel}/revisions")
                    if rfd is None:
                        return
                    try:
                        for digest, mtime_ns in r.digest_links(rfd, f"{rel}/revisions"):
                            alg, hexpart = digest.split(":", 1)
                            data = blobs.stat(alg, hexpart)
                            size, data_mtime = data if data is not None else (None, None)
                            found.append(Revision(digest, mtime_ns, size, data_mtime))
                    finally:
                        os.close(rfd)
                finally:
                    blobs.close()
                    os.close(mfd)

            self._read("revisions", read)
            found.sort(key=lambda v: (v.link_mtime_ns, v.digest))
            self._revisions = {v.digest: v for v in found}
        return dict(self._revisions)

    def layer_links(self) -> frozenset[str]:
        """Every digest linked under `_layers/` (layers and configs alike)."""
        if self._layers is None:
            found: list[tuple[str, int]] = []

            def read(r: _Reader, v2_fd: int, repo_fd: int) -> None:
                rel = self._repo_rel("_layers")
                lfd = r.subdir(repo_fd, "_layers", rel)
                if lfd is not None:
                    try:
                        found.extend(r.digest_links(lfd, rel))
                    finally:
                        os.close(lfd)

            self._read("layers", read)
            self._layers = frozenset(d for d, _ in found)
        return self._layers

    def uploads(self) -> tuple[Upload, ...]:
        """Uploads in `_uploads/`, oldest start first (unknown starts last)."""
        if self._uploads is None:
            found: list[Upload] = []

            def read(r: _Reader, v2_fd: int, repo_fd: int) -> None:
                rel = self._repo_rel("_uploads")
                ufd = r.subdir(repo_fd, "_uploads", rel)
                if ufd is None:
                    return
                try:
                    for name in r.entries(ufd, rel):
                        upload = self._read_upload(r, ufd, name, f"{rel}/{name}")
                        if upload is not None:
                            found.append(upload)
                finally:
                    os.close(ufd)

            self._read("uploads", read)
            found.sort(key=lambda u: (u.started_ns is None, u.started_ns or 0, u.uuid))
            self._uploads = tuple(found)
        return self._uploads

    def _read_upload(self, r: _Reader, ufd: int, name: str, rel: str) -> Upload | None:
        if not _UUID.fullmatch(name):
            r.note(rel, "not an upload UUID; skipped")
            return None
        fd = r.subdir(ufd, name, rel)
        if fd is None:
            return None
        try:
            size = 0
            try:
                st = os.stat("data", dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            except OSError as e:
                r.note(f"{rel}/data", _why(e))
                return None
            else:
                if not stat.S_ISREG(st.st_mode):
                    r.note(f"{rel}/data", f"{_kind(st.st_mode)}; upload skipped")
                    return None
                size = st.st_size
            started = None
            got = r.read_small(fd, "startedat", f"{rel}/startedat", STARTEDAT_LIMIT)
            if got is not None:
                text = got[0].strip(b" \t\r\n\v\f")
                started = parse_rfc3339_ns(text.decode("ascii")) if text.isascii() else None
                if started is None:
                    r.note(f"{rel}/startedat", f"not an RFC 3339 time ({len(got[0])} bytes)")
            return Upload(name, size, started)
        finally:
            os.close(fd)

    # -- blobs ------------------------------------------------------------------------------------
    def blob(self, digest: str) -> tuple[int, int] | None:
        """(size, mtime_ns) of the blob's data, None when absent (or skipped: a symlink, not a
        regular file, said in problems()). UsageError for a string that is not a digest."""
        d = parse_digest(digest)
        problems: list[str] = []
        v2_fd = self._open_v2()
        blobs = _Blobs(_Reader(self._prefix, problems), v2_fd)
        try:
            return blobs.stat(d.algorithm, d.encoded)
        finally:
            blobs.close()
            os.close(v2_fd)
            kept = self._problems.setdefault("blobs", [])
            kept.extend(p for p in problems if p not in kept)

    def problems(self) -> tuple[str, ...]:
        """What was skipped and why, each naming its path relative to ROOT: reads every listing
        (tags, revisions, layer links, uploads) first, then adds what blob() found."""
        self.tags()
        self.revisions()
        self.layer_links()
        self.uploads()
        out: dict[str, None] = {}
        for section in ("tags", "revisions", "layers", "uploads", "blobs"):
            out.update(dict.fromkeys(self._problems.get(section, ())))
        return tuple(out)


def _is_dir_at(fd: int, name: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _exists_at(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except OSError:
        return False
    return True
