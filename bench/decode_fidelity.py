"""What a reduced decode costs and saves: ingest's decode of large photos against a full decode.

An ingest decodes a JPEG reduced (DCT draft, then an integer reduce) only when the short side
keeps at least twice the model's input; a benchmark always decodes in full. This measures, on
real photos at several sizes, the preprocessed tensors of the reduced decode against the full
one (PSNR in [0, 1] pixel units after undoing the normalisation), the embeddings of both through
ViT-B-32 with random initialisation (seeded: the same compute as trained weights, but a trained
model may be more or less sensitive; the cosine is a sanity check, not a quality claim), and the
time to decode and preprocess. The large photos are mosaics of the COCO sample's real photos at
their native resolution (n x n tiles of 640x480), so they carry real photographic detail at
every size, saved as JPEG quality 90.

    .venv/bin/python bench/decode_fidelity.py --tiles 1 2 3 4 6 --photos 8 --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
from PIL import Image

from searchmm import ModelSpec
from searchmm.model.loading import load_encoder
from searchmm.sources.images import REDUCED_DECODE_FLOOR, draft_for, load_image

TILE = (640, 480)


def mosaics(sources: list[str], tiles: int, count: int, folder: Path) -> list[str]:
    """`count` JPEGs of tiles x tiles real photos each, at native resolution."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        canvas = Image.new("RGB", (TILE[0] * tiles, TILE[1] * tiles))
        for t in range(tiles * tiles):
            with Image.open(sources[(i * tiles * tiles + t) % len(sources)]) as photo:
                tile = photo.convert("RGB").resize(TILE, Image.Resampling.BICUBIC)
            canvas.paste(tile, ((t % tiles) * TILE[0], (t // tiles) * TILE[1]))
        path = folder / f"mosaic-{tiles}x{tiles}-{i}.jpg"
        canvas.save(path, quality=90)
        paths.append(str(path))
    return paths


def timed_pixels(encoder: Any, path: str, draft: int | None) -> tuple[np.ndarray, float, tuple]:
    started = time.perf_counter()
    image, _ = load_image(path, draft_size=draft)
    pixels = encoder.preprocess(image)
    return pixels, time.perf_counter() - started, image.size


def psnr(a: np.ndarray, b: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """PSNR in [0, 1] pixel units (the normalisation undone)."""
    error = float(np.mean(((a - b) * std[:, None, None]) ** 2))
    return float("inf") if error == 0 else 10 * np.log10(1.0 / error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    parser.add_argument("--photos", type=int, default=8, help="photos per size")
    parser.add_argument("--rounds", type=int, default=3, help="timed decodes of each; median")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    if not harness.COCO_SAMPLE_IMAGES.is_dir():
        raise SystemExit(f"needs the real photos of {harness.COCO_SAMPLE_IMAGES}")
    sources = sorted(str(p) for p in harness.COCO_SAMPLE_IMAGES.glob("*.jpg"))
    encoder = load_encoder(ModelSpec("ViT-B-32", "none"), "cpu")
    recipe = encoder.transform.transforms[-1]  # open_clip's Normalize step
    mean, std = np.asarray(recipe.mean), np.asarray(recipe.std)
    floor = draft_for(encoder.image_size)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="searchmm-decode-") as scratch:
        for tiles in args.tiles:
            paths = mosaics(sources, tiles, args.photos, Path(scratch) / str(tiles))
            full_s, fast_s, psnrs, cosines, decoded = [], [], [], [], set()
            for path in paths:
                full = fast = None
                times: dict[str, list[float]] = {"full": [], "fast": []}
                for _ in range(args.rounds):  # interleaved
                    full, seconds, _ = timed_pixels(encoder, path, None)
                    times["full"].append(seconds)
                    fast, seconds, size = timed_pixels(encoder, path, floor)
                    times["fast"].append(seconds)
                    decoded.add(size)
                assert full is not None and fast is not None
                full_s.append(harness.median(times["full"]))
                fast_s.append(harness.median(times["fast"]))
                psnrs.append(psnr(full, fast, mean, std))
                vectors = encoder.encode_images(np.stack([full, fast]))
                cosines.append(float(vectors[0] @ vectors[1]))
            size = f"{TILE[0] * tiles}x{TILE[1] * tiles}"
            speedup = harness.median(full_s) / harness.median(fast_s)
            finite = [p for p in psnrs if np.isfinite(p)]
            results[size] = {
                "decoded_as": sorted(decoded),
                "full_s": full_s,
                "reduced_s": fast_s,
                "psnr_db": psnrs,
                "cosine": cosines,
                "speedup": speedup,
            }
            shown_psnr = f"{min(finite):.1f} dB" if finite else "identical"
            shapes = "/".join(f"{w}x{h}" for w, h in sorted(decoded))
            rows.append(
                (
                    f"{size}: decoded as, full / reduced ms, speed-up, min PSNR, min cosine",
                    f"{shapes}, {harness.median(full_s) * 1000:.0f} / "
                    f"{harness.median(fast_s) * 1000:.0f}, {speedup:.2f}x, {shown_psnr}, "
                    f"{min(cosines):.6f}",
                )
            )
    harness.record(
        "decode_fidelity",
        "Reduced decode of large photos against a full decode",
        args.output,
        {
            "model": "ViT-B-32, random init (seed 0), 224 px input",
            "reduced decode": f"short side kept >= {floor} px ({REDUCED_DECODE_FLOOR}x the input)",
            "photos": f"{args.photos} per size, mosaics of {harness.COCO_SAMPLE_IMAGES}",
            "rounds": args.rounds,
        },
        rows,
        results,
        [
            {"metric": f"{size}: full / reduced decode + preprocess time", "ratio": r["speedup"]}
            for size, r in results.items()
        ],
        [
            "full: load_image(path) then the model's open_clip transform; reduced: the same "
            f"with draft_size={floor}, as ingest decodes; each the median of --rounds, "
            "interleaved",
            "PSNR of the two preprocessed tensors in [0, 1] pixel units; cosine of their "
            "embeddings through the random-init model",
        ],
    )


if __name__ == "__main__":
    main()
