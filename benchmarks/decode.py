"""Time decoding, validating and parsing every cache manifest and config of DIR, two ways.

`slow` is the Python path (documents.loads_blob -> classify -> parse_*), `fast` is
decoder.decode_blob (msgspec). Both start from cold memos (parsed times, valid digests) and
with the cyclic GC off, as a first `ocicache history` run does; medians of --repeat runs.

    python benchmarks/decode.py /tmp/ocb/cache-50102
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ocicache.base import timefmt
from ocicache.format import decoder
from ocicache.format import documents as docs

Blob = tuple[str, bytes]


def documents(root: Path) -> list[Blob]:
    """Every cache manifest and config in DIR's blobs/ (digest, bytes)."""
    out = []
    for path in sorted((root / "blobs" / "sha256").iterdir()):
        if path.stat().st_size > docs.JSON_LIMIT:
            continue
        with open(path, "rb") as f:
            if not docs.looks_like_json(f.read(64)):
                continue
        data = path.read_bytes()
        try:
            kind = docs.classify(docs.loads_blob(data, path.name))
        except Exception:
            continue
        if kind in (docs.KIND_CACHE_MANIFEST, docs.KIND_CACHE_CONFIG):
            out.append(("sha256:" + path.name, data))
    return out


def slow(blobs: list[Blob]) -> list[object]:
    out: list[object] = []
    for digest, data in blobs:
        doc = docs.loads_blob(data, digest)
        if docs.classify(doc) == docs.KIND_CACHE_MANIFEST:
            out.append(docs.parse_cache_manifest(doc, digest, digest))
        else:
            out.append(docs.parse_cache_config(doc, digest, digest))
    return out


def fast(blobs: list[Blob]) -> list[object]:
    out: list[object] = []
    for digest, data in blobs:
        answer = decoder.decode_blob(data, digest, digest)
        out.append(answer[1] if answer is not None else None)
    return out


def timed(
    fns: dict[str, Callable[[list[Blob]], list[object]]], blobs: list[Blob], repeat: int
) -> dict[str, float]:
    """Median seconds of each way; the ways take turns, so a noisy moment hits both."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            timefmt._memo.clear()
            decoder._valid_digests.clear()
            start = time.perf_counter()
            fn(blobs)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    blobs = documents(args.dir)
    if slow(blobs) != fast(blobs):
        print("the two paths disagree")
        return 1
    gc.disable()
    mb = sum(len(d) for _, d in blobs) / 1e6
    print(f"{len(blobs)} documents, {mb:.1f} MB")
    for name, seconds in timed({"slow": slow, "fast": fast}, blobs, args.repeat).items():
        print(f"{name}: {seconds:.3f} s (median of {args.repeat})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
