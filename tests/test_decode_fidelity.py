"""Decoding for benchmarks and for ingest. A bench feeds the model exactly the pixels the
reference pipelines (CLIP_benchmark, open_clip's evaluation) feed it; an ingest decodes a photo
reduced only when that still leaves twice the model's input on its short side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from helpers.files import COCO_SAMPLE
from searchmm import Engine, ModelSpec
from searchmm.evaluation.datasets import load_coco
from searchmm.evaluation.runner import EXACT_DECODE_MARK, evaluate
from searchmm.model.loading import load_encoder
from searchmm.sources.images import draft_for, load_image
from searchmm.sources.loader import ImageDecoder

CAPTIONS = COCO_SAMPLE / "captions_val2017_sample.json"


def coco_photos() -> list[Path]:
    if not CAPTIONS.exists():
        pytest.skip(f"{COCO_SAMPLE} is not here")
    return sorted((COCO_SAMPLE / "images").glob("*.jpg"))


def reference_pixels(transform: object, path: Path) -> np.ndarray:
    """What CLIP_benchmark's COCO loader hands open_clip's transform."""
    return np.asarray(transform(Image.open(path).convert("RGB")).numpy())  # type: ignore[operator]


def test_the_bench_decode_gives_the_reference_tensors_on_every_coco_photo() -> None:
    paths = coco_photos()
    encoder = load_encoder(ModelSpec("ViT-B-32", "none"), "cpu")
    decoder = ImageDecoder(  # as the ingest of a bench sets it up
        [str(p) for p in paths],
        encoder.preprocess,
        draft_size=draft_for(encoder.image_size),
        exact=True,
    )
    worst = 0.0
    for i, path in enumerate(paths):
        item = decoder[i]
        assert item["error"] is None and item["pixels"] is not None, path
        diff = float(np.abs(item["pixels"] - reference_pixels(encoder.transform, path)).max())
        worst = max(worst, diff)
    assert worst <= 1e-6


def test_a_coco_bench_stores_the_vectors_of_the_reference_pixels(
    tmp_path: Path, tiny_config: Path
) -> None:
    paths = coco_photos()
    spec = ModelSpec.from_options(model_config=tiny_config)
    encoder = load_encoder(spec, "cpu")
    dataset = load_coco(COCO_SAMPLE / "images", CAPTIONS)
    with Engine(tmp_path / "bench", model=spec, backend="torch") as engine:
        report = evaluate(dataset, engine, batch_size=16)
        ids, vectors = engine.embeddings("images")
        by_path = {item.id: Path(item.path) for item in engine.items("images")}
    stored = dict(zip([by_path[i] for i in ids.tolist()], vectors, strict=True))
    expected = encoder.encode_images(
        np.stack([reference_pixels(encoder.transform, p) for p in paths])
    )
    for path, want in zip(paths, expected, strict=True):
        assert np.abs(stored[path] - want).max() <= 1e-5, path
    assert report.counts["images"] == len(paths)

    # A bench store from before exact decoding (no mark) has its images encoded again, once.
    (tmp_path / "bench" / EXACT_DECODE_MARK).unlink()
    with Engine(tmp_path / "bench", backend="torch") as engine:
        again = evaluate(dataset, engine, batch_size=16)
        third = evaluate(dataset, engine, batch_size=16)
    assert again.timings["images_encoded"] == len(paths)
    assert third.timings["images_encoded"] == 0 and third.timings["cached"]
    assert again.metrics == report.metrics


def _photo(tmp_path: Path, size: tuple[int, int], suffix: str = ".jpg") -> str:
    path = tmp_path / f"photo-{size[0]}x{size[1]}{suffix}"
    Image.fromarray(skdata.chelsea()).resize(size, Image.Resampling.BICUBIC).save(path)
    return str(path)


@pytest.mark.parametrize(
    ("size", "decoded"),
    [
        ((640, 480), (640, 480)),  # a COCO photo: in full
        ((900, 675), (900, 675)),  # under twice 448 on the short side: in full
        ((1800, 1350), (900, 675)),  # JPEG draft 1/2
        ((4032, 3024), (1008, 756)),  # a 12 MP phone photo: draft 1/4
    ],
)
def test_ingest_decodes_reduced_only_what_keeps_twice_the_input(
    tmp_path: Path, size: tuple[int, int], decoded: tuple[int, int]
) -> None:
    floor = draft_for(224)
    image, original = load_image(_photo(tmp_path, size), draft_size=floor)
    assert original == size and image.size == decoded and min(image.size) >= floor
    exact, _ = load_image(_photo(tmp_path, size), draft_size=floor, exact=True)
    assert exact.size == size


def test_exact_decoding_is_the_reference_decode_even_for_turned_and_transparent_images(
    tmp_path: Path,
) -> None:
    turned = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown upright by viewers
    Image.fromarray(skdata.chelsea()).save(turned, exif=exif)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (40, 30), (200, 10, 10, 0)).save(clear)
    for path in (turned, clear):
        exact, size = load_image(str(path), exact=True)
        reference = Image.open(path).convert("RGB")
        assert np.array_equal(np.asarray(exact), np.asarray(reference))
    upright, size = load_image(str(turned))
    assert upright.size == size == (300, 451)  # the default decode turns it upright
    assert load_image(str(clear))[0].getpixel((0, 0)) == (255, 255, 255)  # and puts it on white
