"""Ingest throughput of searchmm against the bare model forward on the same images.

Headline: engine images/s / bare-forward images/s, target >= 0.9. The engine figure is the
in-process `Engine.ingest` call with the model already loaded (scan, digest, decode, preprocess,
encode, commit, index save); the baseline is `model.encode_image` + normalisation over the same
images already decoded and preprocessed into tensors, with the same model, batch size, device and
torch threads. `searchmm ingest` as a subprocess is measured too, for reference.

    .venv/bin/python bench/ingest_efficiency.py --model ViT-B-32 --pretrained none --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import torch
from PIL import Image

from searchmm import Engine, ModelSpec
from searchmm.model.loading import load_encoder
from searchmm.settings import resolve_device

TARGET = 0.9


@dataclass
class IngestRun:
    wall_s: float  # the timed call (in-process) or the whole process (CLI)
    summary_s: float  # the ingest summary's elapsed_s
    encoded: int


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; medians reported")
    return parser.parse_args()


@contextlib.contextmanager
def autocast(device: str) -> Iterator[None]:
    """The engine's precision policy: bf16/fp16 autocast on CUDA, plain fp32 elsewhere."""
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        yield


def decoded_batches(paths: list[str], preprocess: Any, batch_size: int) -> list[torch.Tensor]:
    """Every image decoded, preprocessed and stacked in batches: the baseline's untimed part."""
    tensors = []
    for path in paths:
        with Image.open(path) as img:
            tensors.append(preprocess(img.convert("RGB")))
    return [
        torch.stack(tensors[start : start + batch_size])
        for start in range(0, len(tensors), batch_size)
    ]


def bare_forward(model: Any, batches: list[torch.Tensor], device: str) -> float:
    """Seconds for `encode_image` + L2 normalisation over every batch, as float32 numpy."""
    started = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        for batch in batches:
            features = model.encode_image(batch.to(device, non_blocking=True))
            torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
    return time.perf_counter() - started


def engine_ingest(
    spec: ModelSpec, device: str, photos: harness.PhotoSet, args: argparse.Namespace, warmup: Any
) -> IngestRun:
    """One `Engine.ingest` into a fresh index dir; the model is loaded and warmed before timing."""
    with (
        tempfile.TemporaryDirectory(prefix="searchmm-bench-index-") as index_dir,
        Engine(index_dir, model=spec, device=device, backend="torch") as engine,
    ):
        engine.load_model().encode_images(warmup)
        started = time.perf_counter()
        summary = engine.ingest([photos.folder], batch_size=args.batch_size, workers=args.workers)
        wall = time.perf_counter() - started
    check_complete(summary.encoded_images, len(summary.failed), photos)
    return IngestRun(wall, summary.elapsed_s, summary.encoded_images)


def cli_ingest(photos: harness.PhotoSet, args: argparse.Namespace, device: str) -> IngestRun:
    """`searchmm ingest ... --json` as a fresh process into a fresh index dir, wall-clock timed."""
    with tempfile.TemporaryDirectory(prefix="searchmm-bench-index-") as index_dir:
        command = [
            harness.searchmm_executable(),
            "ingest",
            str(photos.folder),
            "--index-dir",
            index_dir,
            *harness.cli_model_options(args),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--device",
            device,
            "--json",
        ]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"searchmm ingest exited {done.returncode}:\n{done.stderr}")
    summary = json.loads(done.stdout)
    check_complete(summary["encoded_images"], len(summary["failed"]), photos)
    return IngestRun(wall, summary["elapsed_s"], summary["encoded_images"])


def check_complete(encoded: int, failed: int, photos: harness.PhotoSet) -> None:
    if encoded != len(photos.paths) or failed:
        raise SystemExit(
            f"ingest encoded {encoded} of {len(photos.paths)} images ({failed} failed): "
            "the comparison needs every image encoded"
        )


def main() -> None:
    args = parse_args()
    spec = harness.model_spec(args)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="searchmm-bench-") as scratch:
        photos = harness.photo_set(args.images, args.count, Path(scratch))
        n = len(photos.paths)
        print(f"{n} images from {photos.source}; {spec.describe()} on {device}")

        encoder = load_encoder(spec, device)
        bare = encoder.model
        batches = decoded_batches(photos.paths, encoder.preprocess, args.batch_size)
        bare_forward(bare, batches[:1], device)  # warm-up: first-call allocations

        bare_s, engine_runs, cli_runs = [], [], []
        for repeat in range(args.repeats):  # interleaved, so that drift hits all three alike
            print(f"repeat {repeat + 1}/{args.repeats}: bare forward, engine, CLI")
            bare_s.append(bare_forward(bare, batches, device))
            engine_runs.append(engine_ingest(spec, device, photos, args, batches[0]))
            cli_runs.append(cli_ingest(photos, args, device))

    bare_rate = n / harness.median(bare_s)
    engine_rate = n / harness.median([r.wall_s for r in engine_runs])
    summary_rate = n / harness.median([r.summary_s for r in engine_runs])
    cli_wall_rate = n / harness.median([r.wall_s for r in cli_runs])
    cli_summary_rate = n / harness.median([r.summary_s for r in cli_runs])
    ratio = engine_rate / bare_rate
    rows = [
        ("images", str(n)),
        ("bare forward, images/s", f"{bare_rate:.2f}"),
        ("engine in-process (Engine.ingest call), images/s", f"{engine_rate:.2f}"),
        ("engine in-process (summary elapsed_s), images/s", f"{summary_rate:.2f}"),
        ("CLI subprocess wall, images/s", f"{cli_wall_rate:.2f}"),
        ("CLI summary elapsed_s, images/s", f"{cli_summary_rate:.2f}"),
        ("CLI wall / bare forward", f"{cli_wall_rate / bare_rate:.3f}"),
        ("CLI summary / bare forward", f"{cli_summary_rate / bare_rate:.3f}"),
    ]
    harness.record(
        name="ingest_efficiency",
        title="searchmm ingest efficiency",
        output=args.output,
        config={
            **harness.model_config_fields(args, spec, photos),
            "count": n,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "device": device,
            "repeats": args.repeats,
        },
        rows=rows,
        measurements={
            "bare_forward_s": bare_s,
            "engine_call_s": [r.wall_s for r in engine_runs],
            "engine_summary_s": [r.summary_s for r in engine_runs],
            "cli_wall_s": [r.wall_s for r in cli_runs],
            "cli_summary_s": [r.summary_s for r in cli_runs],
            "images_per_s": {
                "bare_forward": bare_rate,
                "engine_call": engine_rate,
                "engine_summary": summary_rate,
                "cli_wall": cli_wall_rate,
                "cli_summary": cli_summary_rate,
            },
        },
        headlines=[
            {
                "metric": "engine images/s / bare forward images/s",
                "ratio": ratio,
                "target": f">= {TARGET}",
                "met": ratio >= TARGET,
            }
        ],
        timed=[
            "bare forward: model.encode_image over the pre-stacked batches (host-to-device copy "
            "included) under torch.inference_mode, then L2 normalisation and a float32 numpy "
            "copy; decoding and preprocessing are done before the clock starts; one warm-up "
            "batch before.",
            "engine in-process: one Engine.ingest([folder]) call into a fresh index dir, with "
            "the encoder already loaded and warmed by one batch: write lock, store creation, "
            "model record, scan, content digests, DataLoader worker start, decode + preprocess "
            "in --workers processes, encode, SQLite commit per batch, FAISS index build and "
            "save. Headline figure.",
            "engine summary elapsed_s: the ingest's own clock (Pipeline.run): scan, digests, "
            "decode, encode and commits; it leaves out the lock, the model record and the "
            "index save.",
            "CLI wall: `searchmm ingest ... --json` as a fresh process: interpreter start, "
            "imports, model creation (random init here) plus everything above.",
        ],
    )


if __name__ == "__main__":
    main()
