"""`ocicache ref` and `ref --explain`: specs for every export of every real fixture, in every
format; CSV quoting that round-trips; refusals; explanations of specs users already have."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pin_helpers import CASES, copy_case, groundtruth, run

from ocicache import api
from ocicache.core import spec as spec_mod
from ocicache.format.documents import IMPORT_LIMIT
from ocicache.format.schema import validate
from ocicache.synth import Builder

D = "sha256:" + "ab" * 32
LINE_FORMATS = ("bare", "buildx", "buildctl", "bake", "gha")


def _csv(value: str) -> list[str]:
    return next(csv.reader(io.StringIO(value, newline="")))


def _unrender(line: str, fmt: str) -> str:
    """Read a rendered line back the way its consumer would (shell, HCL, YAML)."""
    if fmt == "bare":
        return line
    if fmt in ("buildx", "buildctl"):
        flag, value = shlex.split(line)
        assert flag == {"buildx": "--cache-from", "buildctl": "--import-cache"}[fmt]
        return value
    if fmt == "bake":
        assert line.startswith("cache-from = [") and line.endswith("]")
        # An HCL string with only \\ \" \n \r \t escapes reads like a JSON string.
        literal = line[len("cache-from = [") : -1]
        return str(json.loads(literal)).replace("$${", "${").replace("%%{", "%{")
    if fmt == "gha":
        yaml = pytest.importorskip("yaml")
        value = yaml.safe_load(line)["cache-from"]
        # docker/build-push-action reads the line as CSV and joins the fields with ",".
        return ",".join(_csv(value)) if value.startswith('"') else str(value)
    raise AssertionError(fmt)


def _expected_default(case: str) -> str:
    """From the ground truth: index.json's `latest`, else the newest export BuildKit wrote."""
    final = json.loads(groundtruth(case)["final"]["index_json_raw"])
    for m in final["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "latest":
            return str(m["digest"])
    exports = [b for b in groundtruth(case)["builds"] if b["kind"] == "export" and b.get("manifest_digest")]
    return str(exports[-1]["manifest_digest"])


# -- every export of every fixture, in every format ---------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_ref_every_export_every_format(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case(case, tmp_path / case)
    snap = api.history(d)
    digests = [e.digest for e in snap.exports]
    on_disk = {b["digest"] for b in groundtruth(case)["final"]["blobs_on_disk"]}
    built = {
        b["manifest_digest"]
        for b in groundtruth(case)["builds"]
        if b.get("manifest_digest") and b["manifest_digest"] in on_disk
    }
    assert built <= set(digests)  # every export BuildKit wrote that is still on disk
    want = {dg: f"type=local,src={d},digest={dg}" for dg in digests}
    for fmt in LINE_FORMATS:
        code, out, err = run(capsys, "ref", str(d), "--all", "--format", fmt)
        assert code == 0, err
        lines = out.splitlines()
        assert [_unrender(x, fmt) for x in lines] == [want[dg] for dg in digests]
    # One REF at a time: each export by digest, and the default.
    for dg in digests:
        code, out, _ = run(capsys, "ref", str(d), dg)
        assert (code, out) == (0, want[dg] + "\n")
    code, out, _ = run(capsys, "ref", str(d))
    assert out == want[_expected_default(case)] + "\n"
    code, out, _ = run(capsys, "ref", str(d), "--format", "json")
    doc = json.loads(out)
    assert validate(doc, "ref") == []
    assert doc["spec"] == want[_expected_default(case)]
    assert {f: _unrender(line, f) for f, line in doc["lines"].items()} == {
        f: doc["spec"] for f in LINE_FORMATS
    }
    code, out, _ = run(capsys, "ref", str(d), "--all", "--json")
    doc = json.loads(out)
    assert validate(doc, "refs") == []
    assert [r["spec"] for r in doc["refs"]] == [want[dg] for dg in digests]


def test_ref_by_tag_and_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    index = json.loads((d / "index.json").read_bytes())
    by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"] for m in index["manifests"]}
    for tag, digest in by_tag.items():
        assert run(capsys, "ref", str(d), tag)[1] == f"type=local,src={d},digest={digest}\n"
    assert run(capsys, "ref", str(d), "~0")[1] == f"type=local,src={d},digest={by_tag['latest']}\n"
    code, _, err = run(capsys, "ref", str(d), "nosuchtag")
    assert code == 5 and "nosuchtag" in err


# -- quoting ------------------------------------------------------------------------------------
_PATH_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r")


@settings(max_examples=300, deadline=None)
@given(st.text(_PATH_CHARS, min_size=1, max_size=40).map(lambda s: "/" + s))
def test_spec_csv_round_trip(path: str) -> None:
    spec = spec_mod.local_spec(path, digest=D)
    assert _csv(spec) == ["type=local", f"src={path}", f"digest={D}"]
    parsed = spec_mod.parse(spec)
    assert (parsed.type, parsed.get("src"), parsed.get("digest")) == ("local", path, D)
    for fmt in ("bare", "buildx", "buildctl", "bake"):
        assert _unrender(spec_mod.render(spec, fmt), fmt) == spec


@settings(max_examples=100, deadline=None)
@given(st.text(st.sampled_from(" ,\"'abc:#é$\\{}-"), min_size=1, max_size=20))
def test_gha_line_round_trip(tail: str) -> None:
    spec = spec_mod.local_spec("/c/" + tail, digest=D)
    assert _unrender(spec_mod.render(spec, "gha"), "gha") == spec


def test_quoting_only_when_needed() -> None:
    assert spec_mod.local_spec("/var/cache", digest=D) == f"type=local,src=/var/cache,digest={D}"
    assert spec_mod.local_spec("/a,b", digest=D) == f'type=local,"src=/a,b",digest={D}'
    assert spec_mod.local_spec('/a"b', digest=D) == f'type=local,"src=/a""b",digest={D}'
    assert spec_mod.local_spec("/a b", digest=D) == f"type=local,src=/a b,digest={D}"


def test_real_directory_with_commas_quotes_spaces(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("a-history-min", tmp_path / 'my cache, "new" é')
    for fmt in LINE_FORMATS:
        code, out, err = run(capsys, "ref", str(d), "~2", "--format", fmt)
        assert code == 0, err
        fields = _csv(_unrender(out.rstrip("\n"), fmt))
        assert fields[:2] == ["type=local", f"src={d}"]
        assert fields[2] == "digest=" + api.history(d).exports[2].digest


# -- refusals and warnings -------------------------------------------------------------------------
def _layers(b: Builder, n: int) -> list[dict[str, Any]]:
    return [b.layer(f"l{i}") for i in range(n)]


def _rewrite_manifest(b: Builder, digest: str, doc: dict[str, Any], tag: str) -> str:
    data = json.dumps(doc, separators=(",", ":")).encode()
    new = b.blob(data)
    b.point(tag, new, len(data))
    return new


def test_refuses_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = Builder(tmp_path / "c")
    digest = b.export(_layers(b, 2))
    manifest = json.loads((b.root / "blobs/sha256" / digest[7:]).read_bytes())
    (b.root / "blobs/sha256" / manifest["config"]["digest"][7:]).unlink()
    code, out, err = run(capsys, "ref", str(b.root))
    assert (code, out) == (6, "")
    assert "cache config" in err and "missing" in err


def test_refuses_manifest_over_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = Builder(tmp_path / "m")
    digest = b.export(_layers(b, 2))
    doc = json.loads((b.root / "blobs/sha256" / digest[7:]).read_bytes())
    doc["layers"][0]["annotations"]["pad"] = "x" * IMPORT_LIMIT
    _rewrite_manifest(b, digest, doc, "latest")
    code, out, err = run(capsys, "ref", str(b.root))
    assert (code, out) == (6, "")
    assert "over 1 MiB" in err and "manifest" in err
    # --all prints the others and says why this one is left out.
    code, out, err = run(capsys, "ref", str(b.root), "--all")
    assert code == 0 and out == f"type=local,src={b.root},digest={digest}\n"
    assert "not importable" in err


def test_refuses_config_over_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = Builder(tmp_path / "k")
    digest = b.export(_layers(b, 1))
    doc = json.loads((b.root / "blobs/sha256" / digest[7:]).read_bytes())
    config = json.loads((b.root / "blobs/sha256" / doc["config"]["digest"][7:]).read_bytes())
    config["records"].extend(
        {"digest": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()} for i in range(IMPORT_LIMIT // 70)
    )
    data = json.dumps(config, separators=(",", ":")).encode()
    assert len(data) > IMPORT_LIMIT
    doc["config"] = {**doc["config"], "digest": b.blob(data), "size": len(data)}
    _rewrite_manifest(b, digest, doc, "latest")
    code, _, err = run(capsys, "ref", str(b.root))
    assert code == 6 and "cache config is" in err and "over 1 MiB" in err


def test_warns_missing_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = Builder(tmp_path / "w")
    layers = _layers(b, 3)  # a chain: layers[0] is the base
    b.export(layers)
    (b.root / "blobs/sha256" / layers[2]["digest"][7:]).unlink()
    code, out, err = run(capsys, "ref", str(b.root))
    assert code == 0 and out.startswith("type=local,")
    assert layers[2]["digest"] in err and "will rebuild" in err and "base layer" not in err
    (b.root / "blobs/sha256" / layers[0]["digest"][7:]).unlink()
    code, out, err = run(capsys, "ref", str(b.root), "--json")
    doc = json.loads(out)
    assert validate(doc, "ref") == []
    assert doc["missingBaseLayers"] == [layers[0]["digest"]]
    assert f"base layer {layers[0]['digest']} is missing" in err


# -- explain --------------------------------------------------------------------------------------
def test_explain_corrects_the_docs_example(capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"type=local,ref=/opt/docker-cache,digest={D}"
    code, out, _ = run(capsys, "ref", "--explain", spec)
    assert code == 1
    assert "local cache importer requires src" in out
    assert out.splitlines()[-1] == f"corrected type=local,src=/opt/docker-cache,digest={D}"
    code, out, _ = run(capsys, "ref", "--explain", spec, "--json")
    doc = json.loads(out)
    assert validate(doc, "explain") == []
    assert doc["corrected"] == f"type=local,src=/opt/docker-cache,digest={D}"
    assert doc["outcome"] == "fails" and doc["works"] is False
    assert any(f["key"] == "ref" and f["severity"] == "error" for f in doc["findings"])


def _explain(spec: str, directory: Path | None = None) -> dict[str, Any]:
    from ocicache.cli.render_pin import explain_json

    doc = explain_json(api.explain(spec, directory))
    assert validate(doc, "explain") == []
    return doc


def test_explain_against_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_case("f-tags", tmp_path / "f")
    snap = api.history(d)
    old = snap.exports[3]
    good = f"type=local,src={d},digest={old.digest}"
    code, out, _ = run(capsys, "ref", "--explain", f"--cache-from {shlex.quote(good)}")
    assert code == 0 and "(unchanged)" in out
    # The tag BuildKit could not find (the fixture's own failed import).
    doc = _explain(f"type=local,src={d},tag=nosuchtag")
    assert doc["outcome"] == "skipped" and doc["corrected"] is None
    assert "no digest found for tag nosuchtag" in doc["findings"][-1]["message"]
    doc = _explain(f"type=local,src={d},tag=beta")
    assert doc["outcome"] == "imports" and doc["corrected"] == f"type=local,src={d},tag=beta"
    # tag is ignored when digest is given; unknown and export-only keys are ignored.
    doc = _explain(f"type=local,src={d},tag=beta,digest={old.digest},mode=max,foo=1")
    assert doc["corrected"] == good and doc["outcome"] == "imports"
    assert {(f["key"], f["severity"]) for f in doc["findings"]} >= {
        ("tag", "note"),
        ("mode", "note"),
        ("foo", "note"),
    }
    # A digest prefix, the cache config's digest, a digest not in the directory.
    doc = _explain(f"type=local,src={d},digest={old.digest[:19]}")
    assert doc["outcome"] == "fails" and doc["corrected"] == good
    assert old.config is not None
    doc = _explain(f"type=local,src={d},digest={old.config.digest}")
    assert doc["outcome"] == "skipped" and doc["corrected"] == good
    doc = _explain(f"type=local,src={d},digest={D}")
    assert doc["outcome"] == "skipped"
    assert doc["corrected"] == f"type=local,src={d}"  # falls back to `latest`, which exists
    # dest= (an export key) in place of src; missing type; keys in upper case.
    doc = _explain(f"type=local,dest={d},tag=alpha")
    assert doc["outcome"] == "fails" and doc["corrected"] == f"type=local,src={d},tag=alpha"
    doc = _explain(f"SRC={d},TAG=alpha")
    assert doc["outcome"] == "fails" and doc["corrected"] == f"type=local,src={d},tag=alpha"
    doc = _explain(f'cache-from: "type=local,src={d}"')
    assert doc["outcome"] == "imports"
    doc = _explain("type=local,src=~/no-such-cache-dir")
    assert doc["corrected"] == f"type=local,src={Path.home()}/no-such-cache-dir"


def test_explain_other_types_and_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert _explain("user/app:cache")["outcome"] == "unchecked"
    assert _explain("type=registry,ref=user/app:cache")["outcome"] == "unchecked"
    code, _, err = run(capsys, "ref", "--explain", "type=local,src")
    assert code == 2 and "invalid value" in err
    code, _, err = run(capsys, "ref", "--explain", 'type=local,"src=/a"x')
    assert code == 2
