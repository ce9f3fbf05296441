"""What the benchmarks share: their command-line options, the photos they run on, the machine
description, and how a result is printed and recorded under `bench/results/`.

Every speed figure is a ratio against a baseline measured in the same run: absolute times drift
on shared machines, ratios much less.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchmm import ModelSpec
from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE
from searchmm.settings import default_workers

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
COCO_SAMPLE_IMAGES = REPO_ROOT.parent / "shared" / "data" / "coco-val2017-sample" / "images"
GENERATED_SIZE = (640, 480)  # a typical photo: COCO's most common size
SKIMAGE_PHOTOS = (
    "chelsea",
    "astronaut",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "retina",
    "stereo_motorcycle",
    "immunohistochemistry",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Photos, model and ingest options shared by both benchmarks (names as `searchmm ingest`)."""
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help=f"folder of photos [default: {COCO_SAMPLE_IMAGES} if present, else --count "
        "generated 640x480 JPEGs]",
    )
    parser.add_argument(
        "--count", type=int, default=100, help="photos to generate when there is no --images"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="open_clip architecture [default: ViT-B-32, or the --model-config file's stem]",
    )
    parser.add_argument("--pretrained", default="none", help="tag, checkpoint path or none")
    parser.add_argument("--model-config", type=Path, default=None, help="custom architecture JSON")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="decode worker processes"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="where results go")


def model_spec(args: argparse.Namespace) -> ModelSpec:
    return ModelSpec.from_options(args.model, args.pretrained, args.model_config)


def cli_model_options(args: argparse.Namespace) -> list[str]:
    """The same model as `model_spec`, as `searchmm ingest` options."""
    options = ["--pretrained", args.pretrained]
    if args.model:
        options += ["--model", args.model]
    if args.model_config:
        options += ["--model-config", str(args.model_config)]
    return options


def searchmm_executable() -> str:
    """The `searchmm` console script of the running interpreter's environment."""
    beside = Path(sys.executable).with_name("searchmm")
    found = str(beside) if beside.exists() else shutil.which("searchmm")
    if found is None:
        raise SystemExit("cannot find the `searchmm` command: pip install -e . in this venv")
    return found


@dataclass
class PhotoSet:
    folder: Path
    paths: list[str]
    source: str


def fresh_machine_cache(scratch: Path) -> None:
    """A machine cache of this run's own (for this process and the commands it starts): the
    bench measures the ONNX export this code makes, not one an older searchmm left behind."""
    os.environ["SEARCHMM_CACHE_DIR"] = str(scratch / "machine-cache")


def photo_set(images: Path | None, count: int, scratch: Path) -> PhotoSet:
    """The given folder, else the COCO sample, else `count` photos generated under `scratch`."""
    if images is None and COCO_SAMPLE_IMAGES.is_dir():
        images = COCO_SAMPLE_IMAGES
    if images is not None:
        from searchmm.sources.scan import scan

        paths = sorted(entry.path for entry in scan([images]).images)
        if not paths:
            raise SystemExit(f"no images under {images}")
        return PhotoSet(images.resolve(), paths, str(images.resolve()))
    folder = scratch / "photos"
    return PhotoSet(folder, generate_photos(folder, count), f"{count} generated from scikit-image")


def generate_photos(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` distinct 640x480 JPEGs cut from scikit-image's real photos (crop, flip, colour)."""
    from PIL import Image, ImageEnhance
    from skimage import data

    rng = np.random.default_rng(seed)
    sources = []
    for name in SKIMAGE_PHOTOS:
        pixels = getattr(data, name)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo pair: left view
        sources.append(Image.fromarray(pixels).convert("RGB"))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        photo = sources[i % len(sources)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.5, 1.0)), int(h * rng.uniform(0.5, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = photo.crop((x, y, x + cw, y + ch)).resize(GENERATED_SIZE, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = ImageEnhance.Color(out).enhance(rng.uniform(0.3, 1.7))
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
        path = folder / f"photo-{i:05d}.jpg"
        out.save(path, quality=90)
        paths.append(str(path))
    return paths


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    import faiss
    import open_clip
    import torch

    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 min: others' work
        "python": platform.python_version(),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "faiss": faiss.__version__,
    }


def model_config_fields(
    args: argparse.Namespace, spec: ModelSpec, photos: PhotoSet
) -> dict[str, Any]:
    """The model and data fields every script records in its config."""
    return {
        "model": spec.name,
        "pretrained": spec.pretrained,
        "model_config": str(args.model_config) if args.model_config else None,
        "images": photos.source,
    }


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def record(
    name: str,
    title: str,
    output: Path,
    config: dict[str, Any],
    rows: Sequence[tuple[str, str]],
    measurements: dict[str, Any],
    headlines: Sequence[dict[str, Any]],
    timed: Sequence[str],
) -> None:
    """Print the table, then write `<output>/<name>.json` and `<output>/<name>.md`.

    `headlines` are the ratios with their targets (`metric`, `ratio`, `target`, `met`); `timed`
    says in words what each timed section includes.
    """
    from rich.console import Console
    from rich.table import Table

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    machine = machine_info()
    verdicts = [  # a headline without a target is a comparison, reported as measured
        (
            h["metric"],
            f"{h['ratio']:.3f}",
            str(h.get("target", "-")),
            "" if "met" not in h else "met" if h["met"] else "MISSED",
        )
        for h in headlines
    ]

    table = Table(title=title)
    table.add_column("measurement")
    table.add_column("value", justify="right")
    for label, value in rows:
        table.add_row(label, value)
    for metric, ratio, target, verdict in verdicts:
        table.add_row(f"[bold]{metric}[/bold] (target {target})", f"[bold]{ratio}[/bold] {verdict}")
    Console().print(table)

    output.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": name,
        "date": now.isoformat(),
        "command": command,
        "machine": machine,
        "config": config,
        "headline": list(headlines),
        "measurements": measurements,
        "timed": list(timed),
    }
    (output / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    gpu = f", GPU {machine['gpu']}" if machine["gpu"] else ", no GPU"
    lines = [
        f"# {title}",
        "",
        f"- date: {now.isoformat()}",
        f"- machine: {machine['cores']} cores, {machine['cpu']}{gpu}; {machine['torch_threads']} "
        f"torch threads; Python {machine['python']}, torch {machine['torch']}, "
        f"open_clip {machine['open_clip']}, faiss {machine['faiss']}; load average "
        f"{' / '.join(map(str, machine['load_average']))} (1/5/15 min, at the end)",
        "- config: " + ", ".join(f"{k}={v}" for k, v in config.items()),
        "",
        "```",
        command,
        "```",
        "",
        "| ratio | value | target | |",
        "|---|---:|---|---|",
        *(f"| {m} | {r} | {t} | {v} |" for m, r, t, v in verdicts),
        "",
        "| measurement | value |",
        "|---|---:|",
        *(f"| {label} | {value} |" for label, value in rows),
        "",
        "What is timed:",
        "",
        *(f"- {line}" for line in timed),
        "",
    ]
    (output / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {output / name}.json and .md")


# -- memory (added for index_bench.py and scaling.py) -----------------------------------------


def _status_kib(field: str) -> int:
    """A `kB` field of /proc/self/status (VmRSS, VmHWM), in KiB; 0 where there is no /proc."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """The process's resident set size now."""
    return _status_kib("VmRSS") * 1024


def peak_rss_bytes() -> int:
    """The process's peak resident set size since start or the last `reset_peak_rss`."""
    return _status_kib("VmHWM") * 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc), so RSS deltas mean something."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)
