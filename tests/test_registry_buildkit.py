"""A registry cache made by real BuildKit (../shared/buildkit, skipped when absent), pushed to a
real registry (docker-registry, tests/regserver.py): the spec `ocicache ref` prints imports with
every step CACHED on a fresh daemon, before and after `ocicache gc` and the registry's own
garbage collector. Each import also writes its result out (--output type=local), so every layer
is really pulled: an all-CACHED import alone fetches only the manifest and the cache config
(fixtures/registry/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from buildkit_helpers import STEPS, cached_steps, context, daemon, loaded_steps, needs_buildkit
from clirun import json_of, run_inprocess
from regserver import start_registry


@pytest.mark.slow
@needs_buildkit
def test_ref_imports_all_cached_before_and_after_gc(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "registry")
    try:
        ref = f"{reg.host}/team/app-cache:main"
        target = f"type=registry,ref={ref},registry.insecure=true"
        storage = ["--registry-storage", str(reg.storage)]
        with daemon(tmp_path / "bk") as bk:
            ctx = {v: context(tmp_path, v) for v in ("one", "two")}
            for v in ("one", "two"):  # two exports: the tag moves, the first is left untagged
                r = bk.build(ctx[v], "--export-cache", f"{target},mode=max")
                assert r.returncode == 0, r.stderr[-2000:]
        doc = json_of("history", target, *storage)
        assert len(doc["exports"]) == 2
        newest, older = (e["digest"] for e in doc["exports"])
        assert doc["exports"][0]["tags"] == ["main"] and doc["exports"][1]["tags"] == []

        def imports(ref_arg: str, variant: str, name: str) -> str:
            spec = run_inprocess("ref", target, ref_arg, *storage)
            assert spec.code == 0, spec.err
            out = tmp_path / (name + "-out")
            with daemon(tmp_path / name) as fresh:  # an empty build cache: only the import helps
                r = fresh.build(ctx[variant], "--import-cache", spec.out.strip())
                assert r.returncode == 0, r.stderr[-2000:]
                assert cached_steps(r.stderr) == STEPS, r.stderr[-3000:]
            with daemon(tmp_path / (name + "-pull")) as fresh:  # and every layer is there
                r = fresh.build(
                    ctx[variant], "--import-cache", spec.out.strip(), "--output", f"type=local,dest={out}"
                )
                assert r.returncode == 0, r.stderr[-2000:]
                assert loaded_steps(r.stderr) == STEPS, r.stderr[-3000:]
            assert (out / "out").read_text() == f"content {variant}\n"
            return spec.out.strip()

        assert newest in imports("~0", "two", "fresh0")
        assert older in imports("~1", "one", "fresh1")
        # gc drops the older export (its manifest only), the registry's GC frees its blobs.
        gc = json_of("gc", target, *storage, "--grace", "0")
        assert gc["registry"]["deletedManifests"] == [older]
        p = reg.garbage_collect()
        assert p.returncode == 0, p.stderr
        after = json_of("history", target, *storage)
        assert [e["digest"] for e in after["exports"]] == [newest]
        assert after["exports"][0]["complete"]
        imports("~0", "two", "fresh2")
        check = json_of("check", target, "--deep")
        assert check["ok"], check["findings"]
    finally:
        reg.stop()
