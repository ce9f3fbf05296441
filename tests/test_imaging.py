"""Tests for searchmm.imaging: real files decoded by real PIL, good and bad."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from helpers.processes import wait_for_exit
from searchmm.errors import SearchmmError
from searchmm.model.pixels import PixelRecipe
from searchmm.sources.images import ImageDecodeError, load_image
from searchmm.sources.loader import (
    DecodedBatch,
    ImageDecoder,
    collate_decoded,
    image_batches,
    ramp_up_batches,
)

ORIENTATION = 0x0112


def save(img: Image.Image, path: Path, **kwargs: object) -> str:
    img.save(path, **kwargs)
    return str(path)


def chelsea_jpeg(path: Path) -> str:
    return save(Image.fromarray(skdata.chelsea()), path, quality=90)


def decode_error(path: str | Path) -> str:
    with pytest.raises(ImageDecodeError) as info:
        load_image(str(path))
    return str(info.value)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims `width`x`height`; enough for PIL to identify, nothing to decode."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


# --- failures -----------------------------------------------------------------------------


def test_bad_files_have_clear_reasons(tmp_path: Path) -> None:
    good = chelsea_jpeg(tmp_path / "good.jpg")
    raw = Path(good).read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("this is not a picture\n")
    (tmp_path / "noise.png").write_bytes(np.random.default_rng(0).bytes(4096))
    png = Path(save(Image.new("RGB", (64, 64), "red"), tmp_path / "ok.png")).read_bytes()
    idat = png.index(b"IDAT") + 4  # keep the chunk headers, spoil the compressed pixels
    (tmp_path / "corrupt.png").write_bytes(png[:idat] + b"\xff" * 16 + png[idat + 16 :])

    assert decode_error(tmp_path / "trunc.jpg").startswith("truncated or corrupt image data: ")
    assert decode_error(tmp_path / "empty.jpg") == "file is empty (0 bytes)"
    assert decode_error(tmp_path / "text.jpg") == "not an image (cannot identify image file)"
    assert decode_error(tmp_path / "noise.png") == "not an image (cannot identify image file)"
    assert decode_error(tmp_path / "corrupt.png").startswith("truncated or corrupt image data: ")
    assert decode_error(tmp_path / "missing.jpg") == "file vanished"
    assert decode_error(tmp_path) == "not a regular file"


def test_decompression_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A header claiming 100000x100000 pixels, under PIL's default limit.
    huge = png_header_only(tmp_path / "huge.png", 100_000, 100_000)
    reason = decode_error(huge)
    assert reason.startswith("image is too large: ")
    assert f"exceeds the limit of {Image.MAX_IMAGE_PIXELS} (decompression bomb?)" in reason

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    # Between the limit and twice it PIL only warns; that must be refused too.
    warn = save(Image.new("RGB", (40, 40)), tmp_path / "warn.png")
    assert decode_error(warn) == (
        "image is too large: 1600 pixels exceeds the limit of 1000 (decompression bomb?)"
    )
    big = save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    assert decode_error(big).startswith(
        "image is too large: 10000 pixels exceeds the limit of 1000"
    )
    small = save(Image.new("RGB", (30, 30)), tmp_path / "small.png")
    assert load_image(small)[1] == (30, 30)


# --- successes ----------------------------------------------------------------------------


def test_one_pixel(tmp_path: Path) -> None:
    img, size = load_image(save(Image.new("RGB", (1, 1), (10, 20, 30)), tmp_path / "one.png"))
    assert size == (1, 1) and img.mode == "RGB" and img.getpixel((0, 0)) == (10, 20, 30)


def test_real_jpeg_and_draft(tmp_path: Path) -> None:
    path = save(Image.fromarray(skdata.astronaut()), tmp_path / "astro.jpg", quality=92)
    full, size = load_image(path)
    assert size == (512, 512) and full.size == (512, 512) and full.mode == "RGB"
    small, size = load_image(path, draft_size=128)
    assert size == (512, 512)  # the original size, not the draft's
    assert small.size == (128, 128)  # DCT scale 1/4: no side below the requested size
    assert small.mode == "RGB"
    ref = np.asarray(full.resize((128, 128), Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(np.asarray(small, dtype=np.float64) - ref).mean() < 8


def test_huge_non_jpeg_reduced(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (1200, 1000), (0, 128, 255)), tmp_path / "wide.png")
    img, size = load_image(path, draft_size=100)
    assert size == (1200, 1000)
    assert img.size == (120, 100) and img.getpixel((5, 5)) == (0, 128, 255)
    assert load_image(path, draft_size=300)[0].size == (400, 334)  # short side kept >= 300
    assert load_image(path, draft_size=501)[0].size == (1200, 1000)  # not 2x: untouched


def test_transparency_goes_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (4, 2), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    img, _ = load_image(save(rgba, tmp_path / "rgba.png"))
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    assert img.getpixel((1, 0)) in {(127, 127, 127), (128, 128, 128)}
    assert img.getpixel((2, 0)) == (255, 0, 0)

    la = Image.new("LA", (2, 1), (0, 255))
    la.putpixel((0, 0), (0, 0))
    img, _ = load_image(save(la, tmp_path / "la.png"))
    assert [img.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 0)]

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    path = save(pal, tmp_path / "pal.png", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info
    img, _ = load_image(path)
    assert [img.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 255)]

    gif_path = save(pal, tmp_path / "pal.gif", transparency=0)
    img, _ = load_image(gif_path)
    assert [img.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 255)]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    src = Image.fromarray(skdata.chelsea())
    path = save(src.convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    img, size = load_image(path)
    assert img.mode == "RGB" and size == src.size
    diff = np.abs(np.asarray(img, dtype=np.float64) - np.asarray(src, dtype=np.float64))
    assert diff.mean() < 6


def test_sixteen_bit_png_scaled_by_max(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 4000, 64).astype(np.uint16), (8, 1))
    path = save(Image.fromarray(ramp), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    img, size = load_image(path)
    arr = np.asarray(img)
    assert size == (64, 8) and img.mode == "RGB"
    assert arr[0, 0].tolist() == [0, 0, 0] and arr[0, -1].tolist() == [255, 255, 255]
    assert (np.diff(arr[0, :, 0].astype(int)) >= 0).all()  # a ramp, not clipped to white
    assert 120 < arr[0, 32, 0] < 135


def test_float_and_bilevel_and_gray(tmp_path: Path) -> None:
    f = Image.fromarray(np.array([[0.0, 0.5, 2.0]], dtype=np.float32))
    img, _ = load_image(save(f, tmp_path / "f.tiff"))
    assert [img.getpixel((x, 0))[0] for x in range(3)] == [0, 64, 255]
    bw, _ = load_image(save(Image.new("1", (3, 3), 1), tmp_path / "bw.png"))
    assert bw.mode == "RGB" and bw.getpixel((1, 1)) == (255, 255, 255)
    gray, _ = load_image(save(Image.new("L", (3, 3), 77), tmp_path / "g.jpg"))
    assert gray.mode == "RGB" and abs(gray.getpixel((1, 1))[0] - 77) <= 1


def test_animated_gif_and_multipage_tiff_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(gif) as check:
        assert check.n_frames == 3
    img, _ = load_image(gif)
    assert img.getpixel((4, 4)) == (255, 0, 0)
    tif = save(frames[1], tmp_path / "pages.tiff", save_all=True, append_images=frames[2:])
    img, _ = load_image(tif)
    assert img.getpixel((4, 4)) == (0, 255, 0)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    arr = skdata.astronaut()[100:140, 200:260]  # 60 wide, 40 high: not square
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90 CW to display"
    path = save(Image.fromarray(arr), tmp_path / "turned.png", exif=exif)
    with Image.open(path) as check:
        assert check.getexif()[ORIENTATION] == 6
    img, size = load_image(path)
    expected = np.rot90(arr, k=-1)  # clockwise quarter turn
    assert size == (40, 60) and img.size == (40, 60)
    assert np.array_equal(np.asarray(img), expected)
    plain, plain_size = load_image(save(Image.fromarray(arr), tmp_path / "plain.png"))
    assert plain_size == (60, 40) and np.array_equal(np.asarray(plain), arr)


def test_corrupt_exif_still_decodes(tmp_path: Path) -> None:
    path = chelsea_jpeg(tmp_path / "c.jpg")
    raw = Path(path).read_bytes()
    junk = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + b"\xde\xad" * 20
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    (tmp_path / "badexif.jpg").write_bytes(raw[:2] + app1 + raw[2:])
    img, size = load_image(str(tmp_path / "badexif.jpg"))
    assert size == (451, 300) and img.size == (451, 300) and img.mode == "RGB"


# --- dataset and loader -------------------------------------------------------------------


def tiny_transform() -> PixelRecipe:
    return PixelRecipe(32, "bicubic", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def mixed_files(tmp_path: Path) -> list[str]:
    good_jpg = chelsea_jpeg(tmp_path / "cat.jpg")
    raw = Path(good_jpg).read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(raw[:1000])
    (tmp_path / "empty.png").write_bytes(b"")
    rgba = save(Image.new("RGBA", (50, 20), (0, 0, 0, 0)), tmp_path / "clear.png")
    return [good_jpg, str(tmp_path / "trunc.jpg"), str(tmp_path / "empty.png"), rgba]


def check_batches(batches: list[DecodedBatch]) -> None:
    assert [b.indices for b in batches] == [[0], [3]]
    assert [b.failures for b in batches] == [
        [(1, batches[0].failures[0][1])],
        [(2, "file is empty (0 bytes)")],
    ]
    assert batches[0].failures[0][1].startswith("truncated or corrupt image data")
    assert batches[0].sizes == [(451, 300)] and batches[1].sizes == [(50, 20)]
    for b in batches:
        assert b.pixels is not None and b.pixels.shape == (1, 3, 32, 32)
        assert b.pixels.dtype == np.float32
    assert np.array_equal(batches[1].pixels, np.ones((1, 3, 32, 32)))  # white, not black


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_good_and_bad(tmp_path: Path, workers: int) -> None:
    paths = mixed_files(tmp_path)
    # batch_size 8 starts with a quarter-size batch of 2: batches [0, 1] and [2, 3]
    loader = image_batches(paths, tiny_transform(), batch_size=8, workers=workers, draft_size=64)
    check_batches(list(loader))


def test_a_decode_worker_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """A worker killed mid-batch (the OOM killer, a crash in a codec) breaks the pool: the
    ingest gets a clear error instead of waiting for a batch that never comes."""
    import os
    import signal

    paths = mixed_files(tmp_path)

    def die(image: Image.Image) -> np.ndarray:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")

    with pytest.raises(SearchmmError, match="a decode worker died"):
        list(image_batches(paths, die, batch_size=8, workers=1))


def test_closing_the_batches_early_stops_the_workers(tmp_path: Path) -> None:
    import multiprocessing

    paths = mixed_files(tmp_path) * 20
    earlier = {p.pid for p in multiprocessing.active_children()}
    batches = image_batches(paths, tiny_transform(), batch_size=4, workers=2)
    first = next(batches)
    assert first.indices == [0]
    workers = [p for p in multiprocessing.active_children() if p.pid not in earlier]
    assert len(workers) == 2
    batches.close()
    wait_for_exit([worker.pid for worker in workers if worker.pid], "workers of closed batches")


def test_first_batch_is_small_so_the_model_starts_early() -> None:
    assert [len(b) for b in ramp_up_batches(100, 32)] == [8, 32, 32, 28]
    assert [i for b in ramp_up_batches(100, 32) for i in b] == list(range(100))
    assert ramp_up_batches(0, 32) == [] and ramp_up_batches(3, 32) == [[0, 1, 2]]
    assert ramp_up_batches(3, 1) == [[0], [1], [2]]


def test_dataset_never_raises(tmp_path: Path) -> None:
    path = save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")

    def broken(_img: Image.Image) -> np.ndarray:
        raise RuntimeError("boom")

    item = ImageDecoder([path], broken)[0]
    assert item == {
        "index": 0,
        "pixels": None,
        "size": None,
        "error": "preprocessing failed: RuntimeError: boom",
    }
    batch = collate_decoded([item])
    assert batch.pixels is None and batch.indices == [] and batch.failures == [(0, item["error"])]
