"""The one exception hierarchy of ocicache, each class carrying its documented exit code."""

from __future__ import annotations

# Exit codes (documented in README.md, "Exit codes"). Typer/click uses 2 for usage errors.
EXIT_OK = 0
EXIT_PROBLEMS = 1  # `check` found integrity problems
# `ref --explain`: the spec would fail the build or import nothing (same value as EXIT_PROBLEMS:
# the command ran and found the input wrong; 0 means it imports, possibly with warnings).
EXIT_WONT_IMPORT = 1
EXIT_USAGE = 2  # bad command line, bad REF/SPEC syntax
EXIT_NOT_CACHE_DIR = 3  # DIR missing, unreadable, or not a cache directory
EXIT_CORRUPT = 4  # a document needed for the answer is torn, malformed or invalid
EXIT_NOT_FOUND = 5  # REF names no export (or more than one)
EXIT_REFUSED = 6  # a deleting/rewriting command refused to act (fail closed)
EXIT_BUSY = 7  # BuildKit holds index.json.lock; try again
EXIT_OUTPUT = 8  # the output could not be written (stdout closed, full, a broken pipe)
EXIT_REGISTRY = 9  # a registry could not be reached or would not answer (network, TLS, 401/403, 5xx)


class OcicacheError(Exception):
    """Base class: `file` and `where` say what the error is about; `hint` may help the user."""

    exit_code = EXIT_CORRUPT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        parts = [p for p in (self.file, self.where) if p]
        parts.append(self.message)
        return ": ".join(parts)


class UsageError(OcicacheError):
    """The arguments do not make sense (bad REF syntax, bad duration, bad name)."""

    exit_code = EXIT_USAGE


class NotACacheDirError(OcicacheError):
    """DIR does not exist, cannot be read, or holds no OCI layout."""

    exit_code = EXIT_NOT_CACHE_DIR


class CorruptError(OcicacheError):
    """A document (index.json, a manifest, a cache config) is torn, malformed or invalid."""

    exit_code = EXIT_CORRUPT


class TooLargeError(CorruptError):
    """A file is larger than ocicache will read (a named limit, far past any real directory):
    not torn, not invalid, just not read. Writers refuse rather than drop what they cannot read."""

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        limit_name: str,
        file: str | None = None,
        where: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, file=file, where=where, hint=hint)
        self.limit = limit
        self.limit_name = limit_name


class NotFoundError(OcicacheError):
    """A REF resolves to no export, or to more than one."""

    exit_code = EXIT_NOT_FOUND


class RefusedError(OcicacheError):
    """A command that deletes or rewrites refuses to act because it cannot be sure it is safe."""

    exit_code = EXIT_REFUSED


class BusyError(OcicacheError):
    """BuildKit (or another ocicache) holds the index.json lock."""

    exit_code = EXIT_BUSY


class RegistryError(OcicacheError):
    """A registry could not be reached, refused our credentials, kept failing (5xx, 429 after
    retries), redirected to another host, or answered outside the distribution API."""

    exit_code = EXIT_REGISTRY


class OutputError(OcicacheError):
    """stdout could not be written: closed, full, or a reader that went away (a broken pipe).

    `quiet`: say nothing on stderr (a broken pipe: the reader stopped on purpose, as with
    `| head`; Unix tools then end without a word)."""

    exit_code = EXIT_OUTPUT

    def __init__(self, message: str, *, quiet: bool = False) -> None:
        super().__init__(message, file="stdout")
        self.quiet = quiet


def missing_manifest_hint(directory: object, name: str | None, pin: bool = False) -> str:
    """What to do when index.json names a manifest that is missing (gc, check, ref, history
    say it): export again, or remove the entry."""
    import shlex

    if name is None:
        return "re-export that build (--cache-to) to replace the entry"
    force = "" if pin else " --force"
    return (
        f"re-export, or `ocicache unpin {shlex.quote(str(directory))} {shlex.quote(name)}"
        f"{force}` to remove the entry"
    )
