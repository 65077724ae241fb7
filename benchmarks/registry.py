"""Registry reads: `ocicache history` on a registry holding N cache exports, against a baseline
measured in the same run.

A private docker-registry (tests/regserver.py: Debian's distribution 2.8.2 on 127.0.0.1, a
config of its own) is filled with N shape-A cache exports of L layers each, all pushed to one tag
(so N-1 are older exports, known only through --registry-storage). Timed, interleaved, medians
of --repeat runs, interpreter start-up included:
- baseline: one sequential GET of every manifest and every cache config (2N requests: what a
  history must fetch at the least), in this process;
- `history --json` (the tag only: 1 export);
- `history --json --registry-storage ROOT` (all N exports).

    PYTHONPATH=. python benchmarks/registry.py --exports 300 --layers 20
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from regserver import MANIFEST_ACCEPT, registry_binary, start_registry  # noqa: E402

from ocicache.store.registry.client import RegistryClient  # noqa: E402
from ocicache.store.registry.target import parse_target  # noqa: E402

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def fill(client: RegistryClient, exports: int, layers: int) -> list[tuple[str, str]]:
    """Push `exports` cache exports to tag main; (manifest, cache config) digests, oldest first."""
    base = [os.urandom(64) for _ in range(layers)]
    out = []
    for i in range(exports):
        descs = []
        for j, shared in enumerate(base):
            data = shared if j < layers - 2 else os.urandom(64)  # two new layers per export
            digest = client.push_blob(data)
            created = f"2026-11-{1 + i % 28:02d}T00:{i % 60:02d}:{j % 60:02d}Z"
            descs.append(
                {
                    "mediaType": LAYER,
                    "digest": digest,
                    "size": len(data),
                    "annotations": {"buildkit/createdat": created, "containerd.io/uncompressed": digest},
                }
            )
        records = [
            {
                "digest": "sha256:" + hashlib.sha256(f"{i}-{k}".encode()).hexdigest(),
                "results": [{"layerIndex": k, "createdAt": "2026-11-01T00:00:00Z"}],
            }
            for k in range(layers)
        ]
        config = json.dumps(
            {
                "layers": [{"blob": d["digest"], "parent": k - 1} for k, d in enumerate(descs)],
                "records": records,
            }
        ).encode()
        config_digest = client.push_blob(config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.buildkit.cacheconfig.v0",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": descs,
            }
        ).encode()
        out.append(
            (
                client.put_manifest("main", manifest, "application/vnd.oci.image.manifest.v1+json"),
                config_digest,
            )
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exports", type=int, default=300)
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if registry_binary() is None:
        print("docker-registry is not installed (apt-get install docker-registry)", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="ocicache-regbench-"))
    reg = start_registry(work / "registry")
    try:
        target = f"registry://{reg.host}/bench/cache"
        parsed = parse_target(target)
        assert parsed is not None
        with RegistryClient(parsed) as client:
            pushed = fill(client, args.exports, args.layers)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            "XDG_CACHE_HOME": str(work / "xdg"),
            "OCICACHE_NO_CACHE": "1",
        }

        def ocicache(*argv: str) -> float:
            start = time.monotonic()
            r = subprocess.run([sys.executable, "-m", "ocicache", *argv], env=env, capture_output=True)
            took = time.monotonic() - start
            if r.returncode != 0:
                raise SystemExit(f"ocicache {' '.join(argv)} failed: {r.stderr.decode()[-500:]}")
            return took

        def baseline() -> float:
            start = time.monotonic()
            for manifest, config in pushed:
                req = urllib.request.Request(reg.url(f"/v2/bench/cache/manifests/{manifest}"))
                req.add_header("Accept", MANIFEST_ACCEPT)
                urllib.request.urlopen(req, timeout=30).read()
                urllib.request.urlopen(reg.url(f"/v2/bench/cache/blobs/{config}"), timeout=30).read()
            return time.monotonic() - start

        runs: dict[str, list[float]] = {"baseline": [], "tag": [], "storage": []}
        for _ in range(args.repeat):
            runs["baseline"].append(baseline())
            runs["tag"].append(ocicache("history", target, "--json"))
            runs["storage"].append(
                ocicache("history", target, "--json", "--registry-storage", str(reg.storage))
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        n = args.exports
        print(
            f"{n} exports x {args.layers} layers, medians of {args.repeat} (seconds, ratio to the baseline)"
        )
        print(f"  baseline: {2 * n} sequential GETs (every manifest and cache config)  {med['baseline']:.2f}")
        ratio = med["tag"] / med["baseline"]
        print(f"  history (the tag: 1 export)                       {med['tag']:.2f}  {ratio:.2f}x")
        print(
            f"  history --registry-storage ({n} exports)          {med['storage']:.2f}  "
            f"{med['storage'] / med['baseline']:.2f}x"
        )
    finally:
        reg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
