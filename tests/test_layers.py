"""The package's layers, as README.md's "Layout of the code" states them: imports point down only.

Every `import` and `from ... import` in ocicache/ (type-checking imports and imports inside
functions included) is walked; an edge from a layer to one above it fails, naming the module
and the line. Above the storage seam (core, ops) nothing may depend on how a local directory is
read: core reaches storage only through `ocicache.store.base` (the Store protocol and its values).
"""

from __future__ import annotations

import ast
from pathlib import Path

import ocicache

PACKAGE = Path(ocicache.__file__).parent
# Top to bottom. A module may import its own layer and any layer below it.
LAYERS = ("cli", "api", "ops", "core", "store", "format", "base")
# Outside the layers: the package root (its version), `python -m ocicache`, and synth.py (writes
# BuildKit-like directories for tests and benchmarks; nothing in the layers imports it).
OUTSIDE = {"ocicache", "ocicache.__main__", "ocicache.synth"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ocicache" or module in OUTSIDE:
        return None
    return parts[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ocicache":
                out.extend((node.lineno, f"ocicache.{a.name}") for a in node.names if a.name != "__version__")
            elif node.module.startswith("ocicache."):
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names if a.name.startswith("ocicache"))
    return out


def _edges() -> list[tuple[str, int, str]]:
    return [
        (_module_name(p), line, target) for p in sorted(PACKAGE.rglob("*.py")) for line, target in _imports(p)
    ]


def test_every_module_is_in_a_layer() -> None:
    strays = [
        m for m in map(_module_name, PACKAGE.rglob("*.py")) if m not in OUTSIDE and _layer(m) not in LAYERS
    ]
    assert not strays, f"modules outside the layers {LAYERS}: {strays}"


def test_no_relative_imports() -> None:
    relative = [
        f"{p.name}:{n.lineno}"
        for p in PACKAGE.rglob("*.py")
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ImportFrom) and n.level
    ]
    assert not relative


def test_imports_point_down() -> None:
    up = []
    for module, line, target in _edges():
        src, dst = _layer(module), _layer(target)
        if src is None or dst is None:
            continue
        if LAYERS.index(dst) < LAYERS.index(src):
            up.append(f"{module}:{line} imports {target} ({src} -> {dst})")
    assert not up, "upward imports:\n" + "\n".join(up)


def test_nothing_in_the_layers_imports_synth() -> None:
    users = [f"{m}:{line}" for m, line, t in _edges() if t == "ocicache.synth" and _layer(m)]
    assert not users


def test_core_reaches_storage_only_through_the_seam() -> None:
    leaks = [
        f"{m}:{line} imports {t}"
        for m, line, t in _edges()
        if _layer(m) == "core" and _layer(t) == "store" and t != "ocicache.store.base"
    ]
    assert not leaks, "core below the seam:\n" + "\n".join(leaks)


def test_the_local_directory_satisfies_the_store_protocol() -> None:
    from ocicache.store.base import Store
    from ocicache.store.layout import Layout

    members = [
        n
        for n, v in vars(Store).items()
        if (not n.startswith("_") and callable(v)) or isinstance(v, property)
    ]
    assert members and "scan_blobs" in members
    missing = [n for n in members if not hasattr(Layout, n) and n != "root"]
    assert not missing, f"Layout lacks {missing}"
