"""`ocicache copy` proven with real BuildKit (../shared/buildkit, skipped when absent): one build
exports its cache to a directory and to a registry (a real docker-registry); the export is copied
in all four directions (dir->dir, dir->registry, registry->dir, registry->registry between two
registries); a fresh daemon (an empty build cache) then imports from each DST with the spec
`ocicache ref DST` prints: every step CACHED. Each import is also made with its result written
out (--output type=local), so that every layer is really read from DST, not only the manifest
and the cache config: every step is then CACHED or extracted from the imported cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from buildkit_helpers import STEPS, cached_steps, context, daemon, loaded_steps, needs_buildkit
from clirun import json_of, run_inprocess
from regserver import start_registry


@pytest.mark.slow
@needs_buildkit
def test_a_copied_export_imports_with_every_step_cached_in_all_four_directions(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "registry")
    other = start_registry(tmp_path / "registry-2")
    try:
        ctx = {v: context(tmp_path, v) for v in ("one", "two")}
        src_dir = tmp_path / "exported"
        src_reg = f"registry://{reg.host}/team/app-cache:main"
        export_registry = f"type=registry,ref={reg.host}/team/app-cache:main,registry.insecure=true,mode=max"
        with daemon(tmp_path / "bk") as bk:
            for v in ("one", "two"):  # two exports: the directory and the repository hold an older one
                r = bk.build(
                    ctx[v],
                    "--export-cache",
                    f"type=local,dest={src_dir},mode=max",
                    "--export-cache",
                    export_registry,
                )
                assert r.returncode == 0, r.stderr[-2000:]
        hist = json.loads(run_inprocess("history", str(src_dir), "--json").out)
        assert len(hist["exports"]) == 2
        newest = hist["exports"][0]["digest"]
        # The four copies of the current export (variant "two").
        dsts = {
            "dir->dir": str(tmp_path / "moved-dir"),
            "dir->registry": f"registry://{reg.host}/from-dir/cache",
            "registry->dir": str(tmp_path / "from-registry"),
            "registry->registry": f"registry://{other.host}/moved/cache",
        }
        sources = {
            "dir->dir": str(src_dir),
            "dir->registry": str(src_dir),
            "registry->dir": src_reg,
            "registry->registry": src_reg,
        }
        copied: dict[str, dict] = {}
        for way, dst in dsts.items():
            doc = json_of("copy", sources[way], dst)
            (e,) = doc["exports"]
            copied[way] = e
            assert e["copiedBlobs"] == e["blobs"], (way, e)
            check = json.loads(
                run_inprocess("check", dst, "--json", *(["--deep"] if "registry://" in dst else [])).out
            )
            assert check["ok"], (way, check["findings"])
        assert copied["dir->dir"]["digest"] == copied["dir->registry"]["digest"] == newest
        # The registry's export is the same build, pushed as BuildKit pushes (its own digest).
        assert copied["registry->dir"]["digest"] == copied["registry->registry"]["digest"]
        # Only the current export went: the older one's own blobs stayed behind.
        only = json.loads(run_inprocess("history", dsts["dir->dir"], "--json").out)
        assert [e["digest"] for e in only["exports"]] == [newest]
        results = {}
        for way, dst in dsts.items():
            spec = run_inprocess("ref", dst)
            assert spec.code == 0, spec.err
            with daemon(tmp_path / f"fresh-{way.replace('>', '')}") as fresh:
                r = fresh.build(ctx["two"], "--import-cache", spec.out.strip())
                assert r.returncode == 0, r.stderr[-2000:]
                cached = cached_steps(r.stderr)
            out = tmp_path / f"out-{way.replace('>', '')}"
            with daemon(tmp_path / f"pull-{way.replace('>', '')}") as fresh:
                r = fresh.build(
                    ctx["two"], "--import-cache", spec.out.strip(), "--output", f"type=local,dest={out}"
                )
                assert r.returncode == 0, r.stderr[-2000:]
                loaded = loaded_steps(r.stderr)
            results[way] = (cached, loaded, (out / "out").read_text())
        assert results == {way: (STEPS, STEPS, "content two\n") for way in dsts}, results
    finally:
        reg.stop()
        other.stop()
