"""Ingest on one GPU: images/s with JPEGs decoded on the GPU and with CPU decoding, beside the
bare model forward on the same GPU; and where a FAISS index build gains from the GPU.

Prepared for a machine with a CUDA GPU (these have none): it refuses to record anything else.
`--device cpu` runs every part on the CPU to check the script itself (nothing is written).

    .venv/bin/python bench/gpu_ingest.py --count 5000 --repeats 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
from cold_query import random_weights

from searchmm import Engine, ModelSpec
from searchmm.index.gpu import gpu_count
from searchmm.index.specs import IndexParams, choose_spec
from searchmm.index.vector_index import VectorIndex
from searchmm.model.loading import load_encoder

INDEX_SIZES = (20_000, 100_000, 500_000, 2_000_000)
DIM = 512


def bare_forward(spec: ModelSpec, device: str, batch: int, seconds: float = 10.0) -> float:
    """Images/s of the image tower alone on random pixels already on the device."""
    import torch

    encoder = load_encoder(spec, device)
    size = encoder.image_size
    pixels = torch.randn(batch, 3, size, size, device=device)
    encoder.encode_tensor(pixels)  # warm-up: kernels chosen, memory allocated
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        encoder.encode_tensor(pixels)  # returns numpy: the GPU has finished
        done += batch
    return done / (time.perf_counter() - started)


def ingest_rate(spec: ModelSpec, photos: Path, store: Path, device: str, **options: Any) -> dict:
    with Engine(store, model=spec, device=device) as engine:
        engine.load_model()  # the model's load is not what is compared
        summary = engine.ingest([photos], progress=False, **options)
    found = summary.to_dict()
    return {"images_per_s": found["items_per_s"], "stages": found["images_per_s_by_stage"]}


def index_builds(use_gpu: bool, sizes: tuple[int, ...]) -> dict[int, float]:
    """Seconds to build the engine's choice of index for each size, on the GPU or not."""
    rng = np.random.default_rng(0)
    out = {}
    for n in sizes:
        vectors = rng.standard_normal((n, DIM), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = np.arange(n, dtype=np.int64)
        started = time.perf_counter()
        spec = choose_spec(n, DIM)
        VectorIndex.build(DIM, ids, vectors, spec, use_gpu=use_gpu, params=IndexParams())
        out[n] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="generated 640x480 JPEGs")
    parser.add_argument("--model", default=None, help="[default: ViT-B-32 without --model-config]")
    parser.add_argument("--model-config", type=Path, default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8, help="CPU decode workers")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="searchmm-gpu-bench-"))
    args.model = args.model or (None if args.model_config else "ViT-B-32")
    spec = ModelSpec.from_options(
        args.model, str(random_weights(args, scratch / "w.safetensors")), args.model_config
    )
    photos = scratch / "photos"
    harness.generate_photos(photos, args.count)
    forward = bare_forward(spec, args.device, args.batch_size)
    ways: dict[str, list[dict[str, Any]]] = {"gpu decode": [], "cpu decode": []}
    for repeat in range(args.repeats):  # interleaved
        for way, gpu_decode in (("gpu decode", True), ("cpu decode", False)):
            store = scratch / f"{way.replace(' ', '-')}-{repeat}"
            options = {"batch_size": args.batch_size, "workers": args.workers}
            ways[way].append(
                ingest_rate(spec, photos, store, args.device, **options, gpu_decode=gpu_decode)
            )
    sizes = INDEX_SIZES if args.device != "cpu" else INDEX_SIZES[:1]
    builds = {"cpu": index_builds(False, sizes)}
    if gpu_count():
        builds["gpu"] = index_builds(True, sizes)
    rates = {way: harness.median([r["images_per_s"] for r in runs]) for way, runs in ways.items()}
    rows = [
        ("bare forward, random pixels on the device", f"{forward:,.0f} img/s"),
        *((f"ingest, {way}", f"{rate:,.0f} img/s") for way, rate in rates.items()),
        *(
            (f"index build, {n:,} vectors, {where}", f"{seconds:.2f} s")
            for where, found in builds.items()
            for n, seconds in found.items()
        ),
    ]
    if not args.device.startswith("cuda"):
        for label, value in rows:
            print(f"{label}: {value}")
        print("not recorded: only a CUDA run is")
        return
    harness.record(
        "gpu_ingest",
        "Ingest on one GPU: GPU and CPU decoding beside the bare forward",
        args.output,
        {
            "count": args.count,
            "model": args.model,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "repeats": args.repeats,
        },
        rows,
        {"forward": forward, "ingest": ways, "index_builds": builds},
        [
            {
                "metric": "ingest (GPU decode) / bare forward",
                "ratio": rates["gpu decode"] / forward,
            },
            {
                "metric": "ingest (CPU decode) / bare forward",
                "ratio": rates["cpu decode"] / forward,
            },
        ],
        [
            "bare forward: the image tower on one batch of random pixels already on the GPU, "
            "repeated for 10 s, results copied back",
            "ingest: Engine.ingest of the generated JPEGs into a new store, model loaded first: "
            "scan, digests, decode, encode, commits, index build",
            "index build: the engine's choice of index for the size, trained and filled, on the "
            "CPU and (faiss-gpu) the GPU",
        ],
    )


if __name__ == "__main__":
    main()
