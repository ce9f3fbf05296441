"""`searchmm ingest --executor ray` on a local two-node Ray cluster against the local executor,
same machine, photos and weights; and a projection of images/s on N GPU nodes from the stage
rates each ingest reports.

The cluster is the tests' (tests/helpers/ray_cluster.py): a head and a worker node of one CPU
each in a private network namespace. It cannot be faster than the local executor on 2 cores:
what is measured is its overhead (target <= 1.3x the local wall). Both ingest into a new store
with `--backend torch` (Ray's actors encode with torch), runs interleaved, medians.

    .venv/bin/python bench/ray_ingest.py --count 400 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
from cold_query import random_weights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.ray_cluster import ADDRESS, RayCluster, unshare_refused
from helpers.store import stored_vectors

TARGET = 1.3
# clip-retrieval's reported rate for ViT-B-32 on one A100 ("bottlenecked by resizing")
A100_IMAGES_PER_S = 2500


def ingest(cluster: RayCluster, args: list[str]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = cluster.run(harness.searchmm_executable(), "ingest", *args, "--json", timeout=3600)
    return time.perf_counter() - started, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=400, help="generated 640x480 photos")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--model-config", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    if (why := unshare_refused()) is not None:
        raise SystemExit(f"a private network for Ray: {why}")
    scratch = Path(tempfile.mkdtemp(prefix="searchmm-ray-bench-"))
    harness.fresh_machine_cache(scratch)
    weights = random_weights(args, scratch / "weights.safetensors")
    photos = harness.generate_photos(scratch / "photos", args.count)
    model = ["--model", args.model, "--pretrained", str(weights), "--backend", "torch"]
    common = [str(scratch / "photos"), *model, "--batch-size", str(args.batch_size)]
    cluster = RayCluster()
    runs: dict[str, list[tuple[float, dict[str, Any]]]] = {"local": [], "ray": []}
    try:
        for repeat in range(args.repeats):
            for name, extra in (
                ("local", []),
                ("ray", ["--executor", "ray", "--ray-address", ADDRESS]),
            ):
                index_dir = scratch / f"{name}-{repeat}"
                runs[name].append(ingest(cluster, [*common, "--index-dir", str(index_dir), *extra]))
    finally:
        cluster.close()
    file_bytes = harness.median([Path(p).stat().st_size for p in photos])
    vector = next(iter(stored_vectors(scratch / "local-0", "image").values()))
    report(args, len(photos), runs, Traffic(file_bytes, 224 * 224 * 3, vector.nbytes))


@dataclass(frozen=True)
class Traffic:
    """Bytes an image moves across a cluster: its file to a decoder (median file here), its
    uint8 crop to an encoder on another node, its vector to the driver."""

    file: float
    crop: int
    vector: int


def report(
    args: argparse.Namespace,
    count: int,
    runs: dict[str, list[tuple[float, dict[str, Any]]]],
    traffic: Traffic,
) -> None:
    wall = {name: harness.median([w for w, _ in found]) for name, found in runs.items()}
    stages = {
        name: {
            stage: harness.median([s["images_per_s_by_stage"][stage] for _, s in found])
            for stage in ("decode", "encode", "commit")
        }
        for name, found in runs.items()
    }
    commit = stages["local"]["commit"]
    decode = stages["local"]["decode"]
    rows = [
        ("photos", f"{count} generated 640x480 JPEGs"),
        ("model", f"{args.model}, random init from a .safetensors file, torch"),
    ]
    for name in runs:
        walls = ", ".join(f"{w:.1f}" for w, _ in runs[name])
        rows.append((f"{name}: wall s (runs), median", f"{walls}; {wall[name]:.1f}"))
        rows.append((f"{name}: images/s", f"{count / wall[name]:.1f}"))
        per_stage = ", ".join(f"{k} {v:,.1f}" for k, v in stages[name].items())
        rows.append((f"{name}: images/s by stage (decode per worker)", per_stage))
    cores_per_gpu = A100_IMAGES_PER_S / decode
    rows += [
        (
            "projection: one A100 node encodes (clip-retrieval's figure)",
            f"{A100_IMAGES_PER_S:,} img/s",
        ),
        ("projection: decode cores to feed it at the measured rate", f"{cores_per_gpu:.0f}"),
        (
            "projection: the driver's commit rate (measured) caps the cluster",
            f"{commit:,.0f} img/s",
        ),
        (
            "projection: GPU nodes before the commit rate bounds",
            f"{commit / A100_IMAGES_PER_S:.1f}",
        ),
        (
            "network per A100 node: files read from the shared filesystem",
            f"{traffic.file * A100_IMAGES_PER_S / 1e6:,.0f} MB/s "
            f"({traffic.file / 1e3:.0f} kB a photo)",
        ),
        (
            "network per A100 node: crops from decoders on other nodes (uint8)",
            f"{traffic.crop * A100_IMAGES_PER_S / 1e6:,.0f} MB/s at most",
        ),
        (
            "network: vectors into the driver at the commit cap",
            f"{traffic.vector * commit / 1e6:,.1f} MB/s ({traffic.vector:,} bytes a vector)",
        ),
    ]
    headlines = [harness_headline(wall["ray"] / wall["local"])]
    config = {
        "count": count,
        "model": args.model,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
    }
    found = {
        "runs": {k: [w for w, _ in v] for k, v in runs.items()},
        "stages": stages,
        "wall": wall,
    }
    title = "Ray executor (local 2-node cluster) against the local executor"
    harness.record("ray_ingest", title, args.output, config, rows, found, headlines, TIMED)


def harness_headline(ratio: float) -> dict[str, Any]:
    return {
        "metric": "ray wall / local wall, same machine",
        "ratio": ratio,
        "target": f"<= {TARGET}",
        "met": ratio <= TARGET,
    }


TIMED = [
    "wall: `searchmm ingest PHOTOS --executor local|ray` into a new store, a fresh process, "
    "start to exit: scan, digests, model load (driver; and each actor for ray), decode, encode, "
    "commits, index build; ray also connects to the cluster and starts its workers.",
    "images/s by stage: the ingest's own summary: images over the seconds each stage spent "
    "(decode summed over its workers).",
    "projection: A100 rate from clip-retrieval's README; decode cores and node counts divide "
    "it by the rates measured here; network: bytes an image moves (median file of these photos, "
    "a 224x224x3 crop, one stored vector) times that rate.",
]


if __name__ == "__main__":
    main()
