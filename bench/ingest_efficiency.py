"""Ingest throughput with torch and with onnxruntime, against each runtime's bare forward.

Headlines: engine images/s / bare-forward images/s for each backend (target >= 0.9), and the
two backends against each other, in process and as `searchmm ingest` from a fresh process. The
engine figure is the in-process `Engine.ingest` call with the encoder already loaded (scan,
digest, decode, preprocess, encode, commit, index save); the bare forward is the runtime alone
(torch `model.encode_image`, or the ONNX image tower's session) plus normalisation over the same
images already decoded and preprocessed, with the same model, batch size and threads. The
ONNX export is made once, untimed, into a scratch machine cache that every run uses.

    .venv/bin/python bench/ingest_efficiency.py --model ViT-B-32-256 --pretrained w.safetensors \
        --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from PIL import Image

from searchmm import Engine, ModelSpec
from searchmm.model.loading import load_encoder
from searchmm.model.onnx_export import ensure_export
from searchmm.settings import resolve_device

TARGET = 0.9
BACKENDS = ("torch", "onnx")
RATE_LABELS = {
    "bare_forward": "bare forward",
    "engine_call": "engine in-process (Engine.ingest call)",
    "engine_summary": "engine in-process (summary elapsed_s)",
    "cli_wall": "CLI subprocess wall",
    "cli_summary": "CLI summary elapsed_s",
}


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


def decoded_batches(paths: list[str], preprocess: Any, batch_size: int) -> list[np.ndarray]:
    """Every image decoded, preprocessed and stacked in batches: the baseline's untimed part."""
    pixels = []
    for path in paths:
        with Image.open(path) as img:
            pixels.append(preprocess(img.convert("RGB")))
    return [
        np.stack(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)
    ]


def bare_torch(model: Any, batches: list[np.ndarray], device: str) -> float:
    """Seconds for `encode_image` + L2 normalisation over every batch, as float32 numpy."""
    started = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        for batch in batches:
            features = model.encode_image(torch.from_numpy(batch).to(device, non_blocking=True))
            torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()
    return time.perf_counter() - started


def bare_onnx(encoder: Any, batches: list[np.ndarray]) -> float:
    """Seconds for the ONNX image tower's session run + L2 normalisation over every batch."""
    started = time.perf_counter()
    for batch in batches:
        encoder.encode_images(batch)
    return time.perf_counter() - started


def engine_ingest(
    spec: ModelSpec,
    device: str,
    photos: harness.PhotoSet,
    args: argparse.Namespace,
    warmup: np.ndarray,
    backend: str,
) -> IngestRun:
    """One `Engine.ingest` into a fresh index dir; the model is loaded and warmed before timing."""
    with (
        tempfile.TemporaryDirectory(prefix="searchmm-bench-index-") as index_dir,
        Engine(index_dir, model=spec, device=device, backend=backend) as engine,
    ):
        engine.load_model().encode_images(warmup)
        started = time.perf_counter()
        summary = engine.ingest([photos.folder], batch_size=args.batch_size, workers=args.workers)
        wall = time.perf_counter() - started
    check_complete(summary.encoded_images, len(summary.failed), photos)
    return IngestRun(wall, summary.elapsed_s, summary.encoded_images)


def cli_ingest(
    photos: harness.PhotoSet, args: argparse.Namespace, device: str, backend: str
) -> IngestRun:
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
            "--backend",
            backend,
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
        os.environ["SEARCHMM_CACHE_DIR"] = str(Path(scratch) / "machine-cache")
        photos = harness.photo_set(args.images, args.count, Path(scratch))
        n = len(photos.paths)
        print(f"{n} images from {photos.source}; {spec.describe()} on {device}")

        encoder = load_encoder(spec, device)
        onnx = ensure_export(encoder, Path(scratch) / "export")  # into the machine cache
        if onnx is None:
            raise SystemExit("the model could not be exported to ONNX: see the warning above")
        batches = decoded_batches(photos.paths, encoder.preprocess, args.batch_size)
        bare_torch(encoder.model, batches[:1], device)  # warm-up: first-call allocations
        bare_onnx(onnx, batches[:1])

        bare_s: dict[str, list[float]] = {b: [] for b in BACKENDS}
        engine_runs: dict[str, list[IngestRun]] = {b: [] for b in BACKENDS}
        cli_runs: dict[str, list[IngestRun]] = {b: [] for b in BACKENDS}
        for repeat in range(args.repeats):  # interleaved, so that drift hits all alike
            print(f"repeat {repeat + 1}/{args.repeats}: bare forwards, engine, CLI")
            bare_s["torch"].append(bare_torch(encoder.model, batches, device))
            bare_s["onnx"].append(bare_onnx(onnx, batches))
            for backend in BACKENDS:
                run = engine_ingest(spec, device, photos, args, batches[0], backend)
                engine_runs[backend].append(run)
            for backend in BACKENDS:
                cli_runs[backend].append(cli_ingest(photos, args, device, backend))

    def rate(seconds: list[float]) -> float:
        return n / harness.median(seconds)

    rates = {
        b: {
            "bare_forward": rate(bare_s[b]),
            "engine_call": rate([r.wall_s for r in engine_runs[b]]),
            "engine_summary": rate([r.summary_s for r in engine_runs[b]]),
            "cli_wall": rate([r.wall_s for r in cli_runs[b]]),
            "cli_summary": rate([r.summary_s for r in cli_runs[b]]),
        }
        for b in BACKENDS
    }
    rows = [("images", str(n))]
    rows += [
        (f"{b}: {label}, images/s", f"{rates[b][key]:.2f}")
        for b in BACKENDS
        for key, label in RATE_LABELS.items()
    ]
    headlines: list[dict[str, Any]] = []
    for b in BACKENDS:
        ratio = rates[b]["engine_call"] / rates[b]["bare_forward"]
        headlines.append(
            {
                "metric": f"{b}: engine images/s / bare forward images/s",
                "ratio": ratio,
                "target": f">= {TARGET}",
                "met": ratio >= TARGET,
            }
        )
    for what in ("bare_forward", "engine_call", "cli_wall"):
        ratio = rates["onnx"][what] / rates["torch"][what]
        headlines.append(
            {"metric": f"onnx / torch images/s, {what.replace('_', ' ')}", "ratio": ratio}
        )
    harness.record(
        name="ingest_efficiency",
        title="searchmm ingest efficiency, torch and onnxruntime",
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
            "engine_call_s": {b: [r.wall_s for r in engine_runs[b]] for b in BACKENDS},
            "engine_summary_s": {b: [r.summary_s for r in engine_runs[b]] for b in BACKENDS},
            "cli_wall_s": {b: [r.wall_s for r in cli_runs[b]] for b in BACKENDS},
            "cli_summary_s": {b: [r.summary_s for r in cli_runs[b]] for b in BACKENDS},
            "images_per_s": rates,
        },
        headlines=headlines,
        timed=[
            "bare forward, torch: model.encode_image over the pre-stacked batches under "
            "torch.inference_mode, then L2 normalisation and a float32 numpy copy; onnx: the "
            "export's image-tower session run and the same normalisation. Decoding and "
            "preprocessing are done before the clock starts; one warm-up batch before.",
            "engine in-process: one Engine.ingest([folder]) call into a fresh index dir with "
            "--backend, the encoder already loaded and warmed by one batch: write lock, store "
            "creation, model record, scan, content digests, decode worker start, decode + "
            "preprocess in --workers processes, encode, SQLite commit per batch, FAISS index "
            "build and save, linking the machine's ONNX export into the store.",
            "engine summary elapsed_s: the ingest's own clock (Pipeline.run): scan, digests, "
            "decode, encode and commits; it leaves out the lock, the model record and the "
            "index save.",
            "CLI wall: `searchmm ingest ... --backend B --json` as a fresh process: interpreter "
            "start, imports, model load (torch: open_clip build + checkpoint read; onnx: the "
            "image tower's session) plus everything above.",
        ],
    )


if __name__ == "__main__":
    main()
