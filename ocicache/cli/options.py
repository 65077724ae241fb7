"""What every typer command shares: arguments and options (one definition, one help text), the
clock of tables' relative times."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

DIR_HELP = (
    "The cache: a directory (--cache-to type=local,dest=DIR), or a registry: "
    "registry://HOST[:PORT]/REPO[:TAG] or type=registry,ref=HOST/REPO:TAG as given to --cache-to."
)

# Every argument names its metavar: typer's default prints `{directory}` in the usage line.
DirArg = typer.Argument(..., help=DIR_HELP, show_default=False, metavar="DIR")
InsecureOpt = typer.Option(
    False, "--insecure", help="Registry over plain HTTP (as registry.insecure=true; loopback hosts are)."
)
StorageOpt = typer.Option(
    None,
    "--registry-storage",
    metavar="ROOT",
    help="The registry's storage directory (distribution's filesystem driver), read-only: "
    "older exports and when each tag moved.",
)


def names(target: object) -> tuple[str | None, str]:
    """(the JSON `directory`, the JSON `target`) of a command's target."""
    import os

    from ocicache.store.targets import RegistrySource

    if isinstance(target, RegistrySource):
        return None, target.target.display()
    path = os.path.abspath(target)  # type: ignore[call-overload]
    return path, path


def target(directory: str, insecure: bool = False, registry_storage: str | None = None):  # type: ignore[no-untyped-def]
    """What DIR names: the path, or a RegistrySource (UsageError when malformed)."""
    from ocicache.store.targets import resolve_target

    return resolve_target(directory, insecure=insecure, storage=registry_storage)


JsonOpt = typer.Option(False, "--json", help="Print a versioned JSON document.")
NoTruncOpt = typer.Option(False, "--no-trunc", help="Print full digests.")


def now() -> datetime:
    """The time `now` for relative times in tables (the library takes it as a parameter)."""
    return datetime.now(UTC)
