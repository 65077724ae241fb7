"""What ocicache saw of a registry repository's tags on earlier runs, kept between runs.

A registry's API answers only where a tag points now: the digests a cache tag held before are
gone from it (distribution keeps them in its storage's tag index, which only `--registry-storage`
reads). So each run that lists a repository's tags records what it saw, and a later one can say
"cache-main held sha256:... from ... to ...".

One small JSON file per (host, repository), under $XDG_CACHE_HOME/ocicache (base/xdg.py):
`registry/<first 32 hex of sha256(host + "/" + repo)>.json`, holding

    {"host": H, "repo": R, "tags": {TAG: [{"digest": D, "first_seen_ns": N, "last_seen_ns": N}, ...]}}

each tag's entries oldest first. Never an error for the file:
- an absent, unreadable, malformed or oversized (MAX_FILE) file, or one naming another host or
  repository, reads as nothing recorded; a malformed entry or tag is dropped;
- writes go to a temporary file in the same directory, fsync'ed, renamed over the old one
  (atomic), mode 0600, directories created 0700; a write that fails (a read-only cache
  directory, a full disk) is skipped without a word;
- read, merged and written under an flock of `<same name>.lock` beside it (0600), so that two
  processes recording at once both keep what they saw; one that cannot take the lock within
  LOCK_WAIT_S (or at all) records anyway, and then the last writer wins;
- bounded: MAX_PER_TAG entries per tag, MAX_TAGS tags, and fewer entries per tag when the file
  would pass MAX_FILE (so that what is written is always read back);
- OCICACHE_NO_CACHE=1 (no cache directory): nothing is read or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ocicache.base.errors import UsageError
from ocicache.base.fileio import flock_within, read_at_most
from ocicache.base.xdg import cache_dir
from ocicache.format.digest import is_valid_digest
from ocicache.store.registry.storage import is_repository_name, is_tag_name

SUBDIR = "registry"
MAX_FILE = 4 << 20  # bytes: a larger file is not read
MAX_PER_TAG = 200  # entries kept per tag (the newest)
MAX_TAGS = 2000  # tags kept (those seen now first, then the most recently seen)
LOCK_WAIT_S = 2.0  # at most this long for another process's update of the same file
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC


@dataclass(frozen=True, slots=True)
class Seen:
    """A tag seen pointing at `digest`, first and last at these times (ns since the epoch)."""

    digest: str
    first_seen_ns: int
    last_seen_ns: int


Record = dict[str, tuple[Seen, ...]]


def record_path(host: str, repo: str) -> Path | None:
    """The file of (host, repo); None when there is no cache directory (OCICACHE_NO_CACHE)."""
    _check(host, repo)
    base = cache_dir()
    if base is None:
        return None
    key = hashlib.sha256(f"{host}/{repo}".encode()).hexdigest()[:32]
    return base / SUBDIR / f"{key}.json"


def load(host: str, repo: str) -> Record:
    """What was recorded for (host, repo), tag by tag, oldest first; {} when nothing is (or
    the file cannot be used). UsageError only for a bad host or repository name."""
    path = record_path(host, repo)
    if path is None:
        return {}
    return _read(path, host, repo)


def update(host: str, repo: str, current: Mapping[str, str], now_ns: int) -> Record:
    """Record that each tag of `current` points at its digest at `now_ns`: the tag's newest
    entry is extended when it is that digest, else a new entry is appended. Tags absent from
    `current` keep their history. Returns the record as kept (limits applied), written or not."""
    path = record_path(host, repo)
    if type(now_ns) is not int or now_ns < 0:
        raise UsageError(f"now_ns must be a non-negative integer, not {now_ns!r}")
    for tag, digest in current.items():
        if not is_tag_name(tag):
            raise UsageError(f"{str(tag)[:80]!r} is not a tag name")
        if not is_valid_digest(digest):
            raise UsageError(f"tag {tag}: {str(digest)[:80]!r} is not a digest")
    with _locked(path):
        return _update(path, host, repo, current, now_ns)


def _update(path: Path | None, host: str, repo: str, current: Mapping[str, str], now_ns: int) -> Record:
    merged = _read(path, host, repo) if path is not None else {}
    for tag in sorted(current):
        digest = current[tag]
        history = list(merged.get(tag, ()))
        if history and history[-1].digest == digest:
            last = history[-1]
            history[-1] = Seen(digest, last.first_seen_ns, max(last.last_seen_ns, now_ns))
        else:
            history.append(Seen(digest, now_ns, now_ns))
        merged[tag] = tuple(history)
    kept, body = _fit(host, repo, merged, set(current))
    if path is not None:
        _write(path, body)
    return kept


def forget(host: str, repo: str, digests: set[str] | frozenset[str]) -> None:
    """Drop every entry of these digests (gc deleted them); a tag left with none is dropped."""
    path = record_path(host, repo)
    if path is None or not digests or not os.path.lexists(path):
        return  # (nothing recorded: no folder or lock file is made for nothing)
    with _locked(path):
        _forget(path, host, repo, digests)


def _forget(path: Path, host: str, repo: str, digests: set[str] | frozenset[str]) -> None:
    record = _read(path, host, repo)
    changed = False
    out: Record = {}
    for tag, history in record.items():
        left = tuple(s for s in history if s.digest not in digests)
        changed = changed or len(left) != len(history)
        if left:
            out[tag] = left
    if changed:
        _write(path, _fit(host, repo, out, set())[1])


# -- reading ------------------------------------------------------------------------------------------
def _check(host: str, repo: str) -> None:
    if not isinstance(host, str) or not host or len(host) > 255 or not host.isprintable() or "/" in host:
        raise UsageError(f"{str(host)[:80]!r} is not a registry host")
    if any(c.isspace() for c in host):
        raise UsageError(f"{host!r} is not a registry host")
    if not is_repository_name(repo):
        raise UsageError(f"{str(repo)[:80]!r} is not a repository name")


def _read(path: Path, host: str, repo: str) -> Record:
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError:
        return {}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
            return {}
        data = read_at_most(fd, MAX_FILE)
    except OSError:
        return {}
    finally:
        os.close(fd)
    if len(data) > MAX_FILE:
        return {}
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(doc, dict) or doc.get("host") != host or doc.get("repo") != repo:
        return {}
    tags = doc.get("tags")
    if not isinstance(tags, dict):
        return {}
    out: Record = {}
    for tag, entries in tags.items():
        if not is_tag_name(tag) or not isinstance(entries, list):
            continue
        history = tuple(s for s in map(_seen, entries) if s is not None)
        if history:
            out[tag] = history[-MAX_PER_TAG:]
    return dict(sorted(out.items()))


def _seen(entry: object) -> Seen | None:
    if not isinstance(entry, dict):
        return None
    digest, first, last = entry.get("digest"), entry.get("first_seen_ns"), entry.get("last_seen_ns")
    if not isinstance(digest, str) or not is_valid_digest(digest):
        return None
    if type(first) is not int or type(last) is not int or first < 0 or last < first:
        return None
    return Seen(digest, first, last)


# -- limits and writing -----------------------------------------------------------------------------
def _fit(host: str, repo: str, record: Record, now: set[str]) -> tuple[Record, bytes]:
    """The record within MAX_TAGS, MAX_PER_TAG and MAX_FILE, and its file's bytes."""
    tags = dict(record)
    if len(tags) > MAX_TAGS:
        ranked = sorted(tags, key=lambda t: (t in now, max(s.last_seen_ns for s in tags[t]), t), reverse=True)
        tags = {t: tags[t] for t in ranked[:MAX_TAGS]}
    tags = {t: h[-MAX_PER_TAG:] for t, h in sorted(tags.items())}
    if not tags:
        return tags, _dump(host, repo, tags)
    # The most entries per tag that fit, from each entry's exact length in the file (a digest
    # and two integers need no escaping; one comma too many per tag), then measured for real.
    fixed = len(_dump(host, repo, {})) + sum(len(json.dumps(t)) + 4 for t in tags)
    lengths = [[_entry_length(s) for s in h] for h in tags.values()]

    def size(cap: int) -> int:
        return fixed + sum(sum(n[-cap:]) for n in lengths)

    lo, hi = 1, max(len(h) for h in tags.values())
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= MAX_FILE else (lo, mid - 1)
    while True:
        kept = {t: h[-lo:] for t, h in tags.items()}
        body = _dump(host, repo, kept)
        if len(body) <= MAX_FILE or lo == 1:
            return kept, body
        lo -= 1


# {"digest":"","first_seen_ns":,"last_seen_ns":} and the comma after it
_ENTRY = len('{"digest":"","first_seen_ns":,"last_seen_ns":},')


def _entry_length(s: Seen) -> int:
    return _ENTRY + len(s.digest) + len(str(s.first_seen_ns)) + len(str(s.last_seen_ns))


def _dump(host: str, repo: str, record: Record) -> bytes:
    doc = {
        "host": host,
        "repo": repo,
        "tags": {
            tag: [
                {"digest": s.digest, "first_seen_ns": s.first_seen_ns, "last_seen_ns": s.last_seen_ns}
                for s in history
            ]
            for tag, history in record.items()
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _mkdirs(directory: Path) -> None:
    """Create `directory` and any missing parent, each 0700 (an existing one is left as is)."""
    missing = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)


@contextlib.contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    """Hold an flock of `path`'s lock file while the body runs, waited for at most
    LOCK_WAIT_S; without it (no cache directory, a read-only one, no flock, the wait ran out)
    the body runs all the same."""
    fd = None
    if path is not None:
        with contextlib.suppress(OSError):
            _mkdirs(path.parent)
            fd = os.open(
                path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC, 0o600
            )
    try:
        if fd is not None:
            flock_within(fd, LOCK_WAIT_S, 0.01)  # (whatever it gives, the body runs)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # (releases the lock)


def _write(path: Path, body: bytes) -> None:
    """Replace the file atomically with `body`; any failure leaves the old file and is ignored."""
    try:
        _mkdirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)  # 0600
    except OSError:
        return
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
