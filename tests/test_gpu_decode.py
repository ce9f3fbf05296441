"""JPEGs decoded and resized by torch for an encoder on a GPU: the same files, reasons, sizes and
(nearly) the same vectors as the CPU workers give. The way is device-generic, so it runs here on
the CPU with torchvision's CPU decoder; on CUDA the engine chooses it, tested where there is one."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers.files import COCO_SAMPLE, make_image
from helpers.store import stored_items, stored_vectors
from searchmm import Engine, ModelSpec
from searchmm.ingest.encoding import EncodedBatch, _gpu_then_local, _local_batches
from searchmm.ingest.gpu_decoding import _upright, gpu_decode_applies, gpu_jpeg_batches
from searchmm.ingest.run import IngestRun
from searchmm.ingest.summary import IngestOptions
from searchmm.model.encoder import TorchEncoder
from searchmm.model.loading import load_encoder
from searchmm.sources.images import draft_for
from searchmm.sources.scan import FileEntry
from searchmm.store.store import Store

ORIENTATION = 0x0112


def exif_jpeg(target: Path | io.BytesIO, image: Image.Image, orientation: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(target, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientations_turn_the_pixels_as_pil_does() -> None:
    import torch

    stored = np.random.default_rng(0).integers(0, 256, (5, 8, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        buffer = io.BytesIO()
        exif_jpeg(buffer, Image.fromarray(stored), orientation)  # not square: turns show
        with Image.open(buffer) as opened:
            decoded = np.asarray(opened.convert("RGB"))
            expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        turned = _upright(torch.from_numpy(decoded.copy()).permute(2, 0, 1), orientation)
        assert np.array_equal(turned.permute(1, 2, 0).numpy(), expected), orientation


@pytest.fixture
def jpeg_folder(tmp_path: Path, real_photos: Path) -> Path:
    """Photos as JPEGs (one turned by EXIF, one grey), a PNG, and JPEGs the GPU way leaves
    to the CPU: CMYK, truncated, not a JPEG at all, with bytes after its end."""
    folder = tmp_path / "photos"
    folder.mkdir()
    source = COCO_SAMPLE / "images" if COCO_SAMPLE.is_dir() else real_photos
    photos = sorted(source.glob("*.jpg"))[:12]
    for photo in photos:
        shutil.copy(photo, folder / photo.name)
    first = Image.open(photos[0]).convert("RGB")
    exif_jpeg(folder / "turned.jpg", first, 6)
    first.convert("L").save(folder / "grey.jpeg")
    first.convert("CMYK").save(folder / "cmyk.jpg")
    make_image(folder / "drawing.png", seed=1)
    whole = photos[1].read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "trailing.jpg").write_bytes(whole + b"appended by an editor")
    (folder / "not-a-jpeg.jpg").write_text("plain text")
    return folder


def batches_of(way: str, folder: Path, encoder: TorchEncoder, tmp: Path) -> list[EncodedBatch]:
    entries = [
        FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())
    ]
    store = Store(tmp / way, create=True)
    try:
        run = IngestRun(store, lambda _: encoder, IngestOptions(batch_size=5, workers=1))
        made = _gpu_then_local if way == "gpu" else _local_batches
        return list(made(run, encoder, entries, draft_for(encoder.image_size)))
    finally:
        store.close()


def left_to_the_cpu(folder: Path, encoder: TorchEncoder, tmp: Path) -> set[str]:
    paths = sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".jpeg"))
    entries = [FileEntry(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    store = Store(tmp / "left", create=True)
    try:
        run = IngestRun(store, lambda _: encoder, IngestOptions(batch_size=5))
        return {paths[i].name for _, left in gpu_jpeg_batches(run, encoder, entries) for i in left}
    finally:
        store.close()


def merged(batches: list[EncodedBatch]) -> tuple[dict[int, tuple[np.ndarray, tuple]], dict]:
    good: dict[int, tuple[np.ndarray, tuple[int, int]]] = {}
    bad: dict[int, str] = {}
    for batch in batches:
        for row, index in enumerate(batch.indices):
            assert index not in good and batch.vectors is not None
            good[index] = (batch.vectors[row], batch.sizes[row])
        for index, why in batch.failures:
            assert index not in bad
            bad[index] = why
    return good, bad


def test_the_gpu_way_gives_the_cpu_ways_files_reasons_and_vectors(
    jpeg_folder: Path, tiny_config: Path, tmp_path: Path
) -> None:
    encoder = load_encoder(ModelSpec.from_options(model_config=tiny_config), "cpu")
    assert isinstance(encoder, TorchEncoder)
    left = left_to_the_cpu(jpeg_folder, encoder, tmp_path)
    assert left == {"cmyk.jpg", "truncated.jpg", "trailing.jpg", "not-a-jpeg.jpg"}
    gpu_good, gpu_bad = merged(batches_of("gpu", jpeg_folder, encoder, tmp_path))
    cpu_good, cpu_bad = merged(batches_of("cpu", jpeg_folder, encoder, tmp_path))
    names = sorted(p.name for p in jpeg_folder.iterdir())
    assert {names[i] for i in cpu_bad} == {"truncated.jpg", "not-a-jpeg.jpg"}
    assert gpu_bad == cpu_bad  # the CPU way decoded them, so they fail for the same reasons
    assert gpu_good.keys() == cpu_good.keys()
    for index, (vector, size) in gpu_good.items():
        assert size == cpu_good[index][1], names[index]
        assert float(vector @ cpu_good[index][0]) >= 0.99999, names[index]


def test_the_gpu_way_is_chosen_only_for_torch_on_cuda(tiny_config: Path) -> None:
    encoder = load_encoder(ModelSpec.from_options(model_config=tiny_config), "cpu")
    assert not gpu_decode_applies(encoder, exact_decode=False)


@pytest.mark.skipif(
    not os.path.exists("/dev/nvidia0"), reason="no CUDA GPU: the GPU way runs on the CPU above"
)
def test_an_ingest_on_cuda_decodes_jpegs_there_and_matches_the_cpu(
    jpeg_folder: Path, tiny_config: Path, tmp_path: Path
) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    spec = ModelSpec.from_options(model_config=tiny_config)
    encoder = load_encoder(spec, "cuda")
    assert gpu_decode_applies(encoder, exact_decode=False)
    vectors = {}
    for device in ("cuda", "cpu"):
        with Engine(tmp_path / device, model=spec, device=device) as engine:
            summary = engine.ingest([jpeg_folder], workers=1)
        assert {Path(f.path).name for f in summary.failed} == {"truncated.jpg", "not-a-jpeg.jpg"}
        ids, by_id = (
            stored_items(tmp_path / device, "image"),
            stored_vectors(tmp_path / device, "image"),
        )
        vectors[device] = {path: by_id[item] for path, item in ids.items()}
    assert vectors["cuda"].keys() == vectors["cpu"].keys()
    for path, vector in vectors["cuda"].items():
        assert float(vector @ vectors["cpu"][path]) >= 0.99, path  # nvJPEG, bf16 autocast
