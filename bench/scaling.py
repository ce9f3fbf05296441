"""Ingest scaling: time, store size and index size per item at 1k, 10k and 100k images.

Each size is ingested through the engine API (`Engine(dir, model=...).ingest([folder])`) into a
fresh index directory with a tiny open_clip architecture (random initialisation, the one the
tests use), so the model is a small part of the cost and the engine's own per-item costs show.
Measured at each size: wall time per item of the full ingest, store bytes per item (searchmm.db
and its -wal/-shm files), index bytes per item (the saved FAISS files), and the wall time of a
no-change re-ingest (a fresh `Engine`, as a second `searchmm ingest` run would be). At the
largest size, 1% new images are then added and ingested (the incremental path). Headline: the
full ingest's time per item at each size / its time per item at the smallest size (the
flatness figure, target <= 1.2); the smallest size is run again at the end and
the baseline is the mean of its two runs, so that drift in the machine's load shows.

Items are images, 128x96 JPEGs cut from scikit-image's real photos (a different crop, flip and
colour balance each), generated once into bench/results/tmp/scaling-images/ (git-ignored) and
reused; the sets are folders of symbolic links to 1,000-image shards of that cache, so every
size shares the same images and one folder is ingested at each size.

    .venv/bin/python bench/scaling.py --sizes 1k,10k,100k
    .venv/bin/python bench/scaling.py --quick   # smoke run: 200, 1k, 2k images
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
import numpy as np

from searchmm import Engine, ModelSpec
from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE
from searchmm.ingest.summary import IngestSummary
from searchmm.settings import default_workers, resolve_device
from searchmm.store.connections import DB_FILENAME
from searchmm.vocabulary import Kind

FLATNESS_TARGET = 1.2
INCREMENTAL_TARGET = 1.5
SHARD = 1000  # images per cache folder
GENERATOR_VERSION = 1  # bump when generate_shard changes, so old caches are regenerated
# The same architecture as tests/helpers/files.py TINY_CONFIG (3.6M parameters).
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CACHE = harness.RESULTS_DIR / "tmp" / "scaling-images"


# -- images ------------------------------------------------------------------------------------


def generate_shard(folder: Path, shard: int, size: tuple[int, int], sources: list[Any]) -> None:
    """1,000 distinct JPEGs of `size` in `folder`, seeded by the shard number."""
    from PIL import Image, ImageEnhance

    rng = np.random.default_rng([GENERATOR_VERSION, shard])
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for i in range(SHARD):
        photo = sources[int(rng.integers(len(sources)))]
        w, h = photo.size
        cw = int(w * rng.uniform(0.2, 1.0))
        ch = min(h, int(cw * size[1] / size[0] * rng.uniform(0.8, 1.25)))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = ImageEnhance.Color(out).enhance(rng.uniform(0.3, 1.7))
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
        out.save(tmp / f"img-{shard:04d}-{i:04d}.jpg", quality=int(rng.integers(75, 95)))
    tmp.rename(folder)


def image_cache(shards: int, size: tuple[int, int]) -> tuple[list[Path], float]:
    """The first `shards` cache folders, generating the missing ones; and the seconds spent."""
    from PIL import Image
    from skimage import data

    root = CACHE / f"v{GENERATOR_VERSION}-{size[0]}x{size[1]}"
    folders = [root / f"shard-{s:04d}" for s in range(shards)]
    missing = [(s, f) for s, f in enumerate(folders) if not f.is_dir()]
    started = time.perf_counter()
    if missing:
        sources = []
        for name in harness.SKIMAGE_PHOTOS:
            pixels = getattr(data, name)()
            pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo: left view
            sources.append(Image.fromarray(pixels).convert("RGB"))
        print(f"generating {len(missing) * SHARD:,} {size[0]}x{size[1]} JPEGs under {root}")
        for s, folder in missing:
            generate_shard(folder, s, size, sources)
    return folders, time.perf_counter() - started


def link_set(parent: Path, name: str, shards: list[Path]) -> Path:
    """A folder holding one symbolic link per shard: the root a size's ingest is given."""
    folder = parent / name
    folder.mkdir(parents=True)
    for shard in shards:
        (folder / shard.name).symlink_to(shard, target_is_directory=True)
    return folder


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class IngestTiming:
    wall_s: float
    cpu_s: float  # user + system, this process and its reaped children (the decode workers)
    summary: dict[str, Any]


def cpu_seconds() -> float:
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


@dataclass
class SizeResult:
    n: int
    full: IngestTiming
    rerun: IngestTiming
    db_bytes: int = 0
    wal_bytes: int = 0
    shm_bytes: int = 0
    index_bytes: int = 0
    index_spec: str = ""
    incremental: IngestTiming | None = None
    incremental_new: int = 0
    incremental_rerun: IngestTiming | None = None
    profiles: dict[str, str] = field(default_factory=dict)

    @property
    def store_bytes(self) -> int:
        return self.db_bytes + self.wal_bytes + self.shm_bytes


def timed_ingest(
    index_dir: Path, root: Path, args: argparse.Namespace, engine: Engine | None = None
) -> tuple[IngestTiming, IngestSummary]:
    """One `Engine.ingest([root])`; a fresh Engine (no model loaded) unless one is given."""
    own = engine is None
    engine = engine or Engine(index_dir, device=args.device, backend="torch")
    try:
        cpu, started = cpu_seconds(), time.perf_counter()
        summary = engine.ingest([root], batch_size=args.batch_size, workers=args.workers)
        wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    finally:
        if own:
            engine.close()
    return IngestTiming(wall, cpu, summary.to_dict()), summary


def profiled_ingest(index_dir: Path, root: Path, args: argparse.Namespace, top: int = 30) -> str:
    """cProfile of one ingest (fresh Engine), the top functions by cumulative and by own time."""
    profile = cProfile.Profile()
    engine = Engine(index_dir, device=args.device, backend="torch")
    try:
        profile.enable()
        engine.ingest([root], batch_size=args.batch_size, workers=args.workers)
        profile.disable()
    finally:
        engine.close()
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def check(summary: IngestSummary, encoded: int, unchanged: int, what: str) -> None:
    """Every image must be encoded exactly once (no copy reused, no failure) for a fair count."""
    got = (summary.encoded_images, summary.unchanged, summary.reused, len(summary.failed))
    if got != (encoded, unchanged, 0, 0):
        raise SystemExit(
            f"{what}: encoded/unchanged/reused/failed {got}, expected ({encoded}, {unchanged}, "
            f"0, 0)"
        )


def store_sizes(index_dir: Path) -> tuple[int, int, int]:
    def size(name: str) -> int:
        path = index_dir / name
        return path.stat().st_size if path.exists() else 0

    return size(DB_FILENAME), size(DB_FILENAME + "-wal"), size(DB_FILENAME + "-shm")


def measure_size(
    n: int,
    shards: list[Path],
    extra: list[Path],
    spec: ModelSpec,
    args: argparse.Namespace,
    scratch: Path,
    last: bool,
    tag: str = "",
) -> SizeResult:
    """Full ingest, sizes, no-change re-ingest; at the largest size the incremental path too."""
    root = link_set(scratch / "sets", f"n{n}{tag}", shards[: n // SHARD])
    index_dir = scratch / f"index-{n}{tag}"
    progress(f"n={n:,}{tag}: full ingest")
    with Engine(index_dir, model=spec, device=args.device, backend="torch") as engine:
        engine.load_model().encode_images(warmup_batch(engine, shards[0], args.batch_size))
        full, summary = timed_ingest(index_dir, root, args, engine)
        stats = engine.stats()
    check(summary, n, 0, f"full ingest of {n}")
    result = SizeResult(n, full, full)
    result.db_bytes, result.wal_bytes, result.shm_bytes = store_sizes(index_dir)
    result.index_bytes = sum(index.bytes for index in stats.indexes.values())
    result.index_spec = stats.indexes[Kind.IMAGE].spec
    progress(f"n={n:,}: {full.wall_s:.1f} s; no-change re-ingest")
    result.rerun, summary = timed_ingest(index_dir, root, args)
    check(summary, 0, n, f"re-ingest of {n}")
    if last and args.profile:
        result.profiles["no-change re-ingest"] = profiled_ingest(index_dir, root, args)
    if last and extra:
        new = len(extra) * SHARD
        for shard in extra:
            (root / shard.name).symlink_to(shard, target_is_directory=True)
        progress(f"n={n:,}: incremental ingest of {new:,} new images")
        result.incremental, summary = timed_ingest(index_dir, root, args)
        check(summary, new, n, f"incremental ingest of {new} into {n}")
        result.incremental_new = new
        result.incremental_rerun, summary = timed_ingest(index_dir, root, args)
        check(summary, 0, n + new, f"re-ingest of {n + new}")
    shutil.rmtree(index_dir)
    return result


def warmup_batch(engine: Engine, folder: Path, batch_size: int) -> Any:
    """One preprocessed batch of the set's own images, to warm the model before timing."""
    import torch
    from PIL import Image

    paths = sorted(folder.iterdir())[:batch_size]
    tensors = []
    for path in paths:
        with Image.open(path) as img:
            tensors.append(engine.load_model().preprocess(img.convert("RGB")))
    return torch.stack(tensors)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- report ------------------------------------------------------------------------------------


def per_item_rows(results: list[SizeResult], again: SizeResult | None) -> list[dict[str, Any]]:
    """One row per size; the smallest size's per-item time, the baseline, is the mean of its
    run before the others and its run `again` after them (when there is one)."""
    smallest = [results[0], *([again] if again else [])]
    base = float(np.mean([r.full.wall_s / r.n for r in smallest]))
    cpu_base = float(np.mean([r.full.cpu_s / r.n for r in smallest]))
    rows = []
    for r in [*results, *([again] if again else [])]:
        per = r.full.wall_s / r.n
        row = {
            "n": r.n,
            "run": "again, after the others" if r is again else "",
            "index_spec": r.index_spec,
            "full_s": r.full.wall_s,
            "full_ms_per_item": per * 1e3,
            "full_per_item_vs_smallest": per / base,
            "full_summary_elapsed_s": r.full.summary["elapsed_s"],
            "full_cpu_s": r.full.cpu_s,
            "full_cpu_ms_per_item": r.full.cpu_s / r.n * 1e3,
            "full_cpu_per_item_vs_smallest": r.full.cpu_s / r.n / cpu_base,
            "rerun_s": r.rerun.wall_s,
            "rerun_ms_per_item": r.rerun.wall_s / r.n * 1e3,
            "rerun_vs_full": r.rerun.wall_s / r.full.wall_s,
            "store_bytes": r.store_bytes,
            "db_bytes": r.db_bytes,
            "wal_bytes": r.wal_bytes,
            "shm_bytes": r.shm_bytes,
            "store_bytes_per_item": r.store_bytes / r.n,
            "index_bytes": r.index_bytes,
            "index_bytes_per_item": r.index_bytes / r.n,
        }
        if r.incremental is not None:
            expected = r.full.wall_s * r.incremental_new / r.n + r.rerun.wall_s
            row |= {
                "incremental_new": r.incremental_new,
                "incremental_s": r.incremental.wall_s,
                "incremental_vs_full": r.incremental.wall_s / r.full.wall_s,
                "incremental_expected_s": expected,
                "incremental_vs_expected": r.incremental.wall_s / expected,
                "incremental_rerun_s": r.incremental_rerun.wall_s if r.incremental_rerun else 0,
            }
        rows.append(row)
    return rows


def size_name(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n >= 1000 else str(n)


def plot(rows: list[dict[str, Any]], again: dict[str, Any] | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    ax = axes[0]
    ax.plot(n, [r["full_ms_per_item"] for r in rows], "o-", label="full ingest")
    ax.plot(n, [r["rerun_ms_per_item"] for r in rows], "s-", label="no-change re-ingest")
    if again is not None:
        ax.plot([again["n"]], [again["full_ms_per_item"]], "x", color="C0", label="again, last")
    if "incremental_s" in rows[-1]:
        last = rows[-1]
        ax.plot(
            [last["n"]],
            [last["incremental_s"] / last["incremental_new"] * 1e3],
            "^",
            label=f"incremental (+{last['incremental_new']:,}), per new item",
        )
    ax.set(xscale="log", yscale="log", xlabel="items", ylabel="ms per item", title="wall time")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(n, [r["store_bytes_per_item"] for r in rows], "o-", label="store (db + wal + shm)")
    ax.plot(n, [r["index_bytes_per_item"] for r in rows], "s-", label="FAISS index files")
    for r in rows:
        ax.annotate(r["index_spec"], (r["n"], r["index_bytes_per_item"]), fontsize=7)
    ax.set(xscale="log", xlabel="items", ylabel="bytes per item", title="size on disk")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(n, [r["full_per_item_vs_smallest"] for r in rows], "o-", label="full ingest, wall")
    ax.plot(
        n,
        [r["full_cpu_per_item_vs_smallest"] for r in rows],
        "d--",
        label="full ingest, CPU time",
    )
    if again is not None:
        ax.plot(
            [again["n"]],
            [again["full_per_item_vs_smallest"]],
            "x",
            color="C0",
            label=f"{size_name(again['n'])} again, after the others",
        )
    ax.axhline(FLATNESS_TARGET, color="red", linestyle="--", label=f"target {FLATNESS_TARGET}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set(
        xscale="log",
        xlabel="items",
        ylabel=f"per-item time / per-item time at {size_name(rows[0]['n'])}",
        title="flatness",
    )
    ax.set_ylim(0, max(1.5, max(r["full_per_item_vs_smallest"] for r in rows) * 1.1))
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1k,10k,100k", help="comma-separated image counts")
    parser.add_argument(
        "--incremental",
        type=float,
        default=0.01,
        help="fraction of new images added at the largest size (0 to skip)",
    )
    parser.add_argument("--image-size", default="128x96", help="WxH of the generated JPEGs")
    parser.add_argument(
        "--model-config",
        type=Path,
        default=None,
        help="custom architecture JSON [default: the tests' tiny config, random init]",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="decode worker processes"
    )
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--no-profile",
        dest="profile",
        action="store_false",
        help="skip the cProfile of a no-change re-ingest at the largest size",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1k, 2k and 3k images (results to bench/results/tmp/ unless --output)",
    )
    parser.add_argument("--output", type=Path, default=None, help="where results go")
    args = parser.parse_args()
    if args.quick:
        args.sizes = "1k,2k,3k"
    args.sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s.strip())
    if any(n % SHARD or n < SHARD for n in args.sizes):
        parser.error(f"sizes must be multiples of {SHARD}")
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    args.image_size = (w, h)
    if args.output is None:
        args.output = harness.RESULTS_DIR / "tmp" if args.quick else harness.RESULTS_DIR
    return args


def main() -> None:
    args = parse_args()
    args.device = resolve_device(args.device)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    total_started = time.perf_counter()
    largest = args.sizes[-1]
    extra_shards = max(1, round(largest * args.incremental / SHARD)) if args.incremental else 0
    folders, generate_s = image_cache(largest // SHARD + extra_shards, args.image_size)
    shards, extra = folders[: largest // SHARD], folders[largest // SHARD :]
    scratch_parent = harness.RESULTS_DIR / "tmp"
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="scaling-", dir=scratch_parent) as scratch:
        config_path = args.model_config
        if config_path is None:
            config_path = Path(scratch) / "searchmm-tiny.json"
            config_path.write_text(json.dumps(TINY_CONFIG), encoding="utf-8")
        spec = ModelSpec.from_options(model_config=config_path)
        progress(f"{spec.describe()} on {args.device}; sizes {args.sizes}")
        for n in args.sizes:
            last = n == largest
            results.append(measure_size(n, shards, extra, spec, args, Path(scratch), last=last))
        again = None
        if len(args.sizes) > 1:  # the baseline again: drift over the run shows, and averages
            again = measure_size(
                args.sizes[0], shards, [], spec, args, Path(scratch), last=False, tag="-again"
            )
    total_s = time.perf_counter() - total_started

    rows = per_item_rows(results, again)
    again_row = rows.pop() if again else None
    args.output.mkdir(parents=True, exist_ok=True)
    plot_path = args.output / "scaling.png"
    title = (
        f"searchmm ingest scaling, {spec.name} (random init), {args.image_size[0]}x"
        f"{args.image_size[1]} JPEGs, batch {args.batch_size}, {args.workers} worker(s), "
        f"{os.cpu_count()} cores"
    )
    plot(rows, again_row, plot_path, title)
    profiles = {k: v for r in results for k, v in r.profiles.items()}
    profile_path = args.output / "scaling_profile.txt"
    if profiles:
        profile_path.write_text(
            "\n".join(f"## {k} at {size_name(largest)}\n\n{v}" for k, v in profiles.items()),
            encoding="utf-8",
        )

    table_rows: list[tuple[str, str]] = []
    for r in rows:
        s = size_name(r["n"])
        table_rows += [
            (f"{s}: index", r["index_spec"]),
            (f"{s}: full ingest s (ms/item)", f"{r['full_s']:.1f} ({r['full_ms_per_item']:.3f})"),
            (
                f"{s}: per item vs {size_name(rows[0]['n'])}",
                f"{r['full_per_item_vs_smallest']:.3f}",
            ),
            (
                f"{s}: CPU s per item (ms) and vs {size_name(rows[0]['n'])}",
                f"{r['full_cpu_ms_per_item']:.3f} ({r['full_cpu_per_item_vs_smallest']:.3f})",
            ),
            (
                f"{s}: no-change re-ingest s (ms/item)",
                f"{r['rerun_s']:.2f} ({r['rerun_ms_per_item']:.3f})",
            ),
            (f"{s}: store bytes/item (db + wal + shm)", f"{r['store_bytes_per_item']:,.0f}"),
            (f"{s}: index bytes/item", f"{r['index_bytes_per_item']:,.0f}"),
        ]
    if again_row is not None:
        table_rows.append(
            (
                f"{size_name(again_row['n'])} again, after the others: full ingest s (ms/item)",
                f"{again_row['full_s']:.1f} ({again_row['full_ms_per_item']:.3f})",
            )
        )
    last = rows[-1]
    headlines = [
        {
            "metric": f"full ingest per-item time at {size_name(r['n'])} / at "
            f"{size_name(rows[0]['n'])}",
            "ratio": r["full_per_item_vs_smallest"],
            "target": f"<= {FLATNESS_TARGET}",
            "met": r["full_per_item_vs_smallest"] <= FLATNESS_TARGET,
        }
        for r in rows[1:]
    ]
    headlines += [
        {
            "metric": f"full ingest CPU time per item at {size_name(r['n'])} / at "
            f"{size_name(rows[0]['n'])} (less load-sensitive)",
            "ratio": r["full_cpu_per_item_vs_smallest"],
            "target": f"<= {FLATNESS_TARGET}",
            "met": r["full_cpu_per_item_vs_smallest"] <= FLATNESS_TARGET,
        }
        for r in rows[1:]
    ]
    if "incremental_s" in last:
        table_rows += [
            (
                f"{size_name(last['n'])} + {last['incremental_new']:,} new: ingest s",
                f"{last['incremental_s']:.2f}",
            ),
            (
                "  expected: full x fraction + no-change re-ingest, s",
                f"{last['incremental_expected_s']:.2f}",
            ),
            ("  incremental / full ingest", f"{last['incremental_vs_full']:.4f}"),
        ]
        headlines.append(
            {
                "metric": f"incremental ingest (+{last['incremental_new']:,} at "
                f"{size_name(last['n'])}) / (full x {args.incremental:g} + no-change re-ingest)",
                "ratio": last["incremental_vs_expected"],
                "target": f"<= {INCREMENTAL_TARGET}",
                "met": last["incremental_vs_expected"] <= INCREMENTAL_TARGET,
            }
        )
    table_rows += [
        ("image generation s (0 when cached)", f"{generate_s:.0f}"),
        ("total run time, s", f"{total_s:.0f}"),
    ]
    harness.record(
        name="scaling",
        title="searchmm ingest scaling (per item: time, store, index)",
        output=args.output,
        config={
            "model": spec.name,
            "pretrained": spec.pretrained,
            "model_config": str(args.model_config) if args.model_config else "TINY_CONFIG",
            "sizes": args.sizes,
            "images": f"{args.image_size[0]}x{args.image_size[1]} JPEGs from scikit-image photos "
            f"(generator v{GENERATOR_VERSION}, seeded per shard)",
            "incremental_fraction": args.incremental,
            "batch_size": args.batch_size,
            "workers": args.workers,
            "device": args.device,
            "load_average_at_start": load_at_start,
        },
        rows=table_rows,
        measurements={
            "total_s": total_s,
            "generate_s": generate_s,
            "per_size": rows,
            "runs": [
                {
                    "n": r.n,
                    "full": asdict(r.full),
                    "rerun": asdict(r.rerun),
                    "incremental": asdict(r.incremental) if r.incremental else None,
                    "incremental_rerun": asdict(r.incremental_rerun)
                    if r.incremental_rerun
                    else None,
                }
                for r in [*results, *([again] if again else [])]
            ],
            "again": again_row,
        },
        headlines=headlines,
        timed=[
            "full ingest: one Engine(index_dir, model=tiny).ingest([set folder]) call into a "
            "fresh index dir, the model already loaded and warmed by one batch (of the same "
            "images): write lock, store creation, model record, scan (through the set's "
            "symbolic links), content digests, DataLoader decode + preprocess in --workers "
            "processes, encode, a SQLite commit per batch, FAISS index build and save.",
            "no-change re-ingest: a fresh Engine on the same dir (no model loaded; none is "
            "needed) and the same ingest call: scan, diff by size and mtime against the store, "
            "index load and check, nothing encoded.",
            "incremental: 1% new images (new 1,000-image folders linked into the set), fresh "
            "Engine, same call; 'expected' is the full ingest time x the fraction plus the "
            "no-change re-ingest time.",
            "store bytes: searchmm.db + searchmm.db-wal + searchmm.db-shm right after the full "
            "ingest (the WAL is not forced to checkpoint); index bytes: the saved *.faiss files "
            "(Engine.stats()).",
            "image generation (first run only) is outside every timing.",
        ],
    )
    md = args.output / "scaling.md"
    lines = [
        "",
        "## Per size",
        "",
        "| items | index | full s | ms/item | vs smallest | CPU ms/item | vs smallest | "
        "no-change re-ingest s | ms/item | store B/item | index B/item |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['n']:,}{' (again)' if r['run'] else ''} | `{r['index_spec']}` | "
            f"{r['full_s']:.1f} | "
            f"{r['full_ms_per_item']:.3f} | {r['full_per_item_vs_smallest']:.3f} | "
            f"{r['full_cpu_ms_per_item']:.3f} | {r['full_cpu_per_item_vs_smallest']:.3f} | "
            f"{r['rerun_s']:.2f} | {r['rerun_ms_per_item']:.4f} | "
            f"{r['store_bytes_per_item']:,.0f} | {r['index_bytes_per_item']:,.0f} |"
            for r in [*rows, *([again_row] if again_row else [])]
        ),
        "",
        f"The baseline per-item time is the mean of the {size_name(rows[0]['n'])} runs before "
        "and after the others (the last row), so that load drift over the run shows.",
        "",
        f"![scaling]({plot_path.name})",
        "",
    ]
    if profiles:
        lines += [
            f"cProfile of the no-change re-ingest: [{profile_path.name}]({profile_path.name})",
            "",
        ]
    with md.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {plot_path}; total run time {total_s:.0f} s")


if __name__ == "__main__":
    main()
