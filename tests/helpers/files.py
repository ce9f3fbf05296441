"""Input files for tests: the tiny open_clip architecture, real photos, synthetic images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COCO_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco-val2017-sample"

# A real open_clip architecture, small enough to run many times in a test (3.6M parameters).
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SKIMAGE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "retina")


def save_real_photos(folder: Path) -> Path:
    """Real photos shipped with scikit-image, saved as JPEG and PNG."""
    from skimage import data

    for i, name in enumerate(SKIMAGE_PHOTOS):
        pixels = getattr(data, name)()
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}{suffix}")
    return folder


def make_image(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A distinct synthetic image: smooth colour gradients plus shapes, seeded."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [
        np.sin(xx / rng.uniform(3, 20) + rng.uniform(0, 6)) + np.cos(yy / rng.uniform(3, 20))
        for _ in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    pixels = ((pixels - pixels.min()) / (np.ptp(pixels) + 1e-9) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def slow_pngs(folder: Path, count: int, side: int = 4500) -> list[Path]:
    """`count` distinct files that each take ~0.2 s to decode: one large PNG saved once, then
    told apart by a text chunk (so each has its own digest and is decoded, not copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    gray = Image.linear_gradient("L").resize((side, side))
    template = folder / "template.tmp"
    Image.merge("RGB", (gray, gray.rotate(90), gray.rotate(180))).save(
        template, "PNG", compress_level=1
    )
    raw = template.read_bytes()
    template.unlink()
    after_ihdr = 8 + 25  # signature, then the IHDR chunk
    paths = []
    for i in range(count):
        body = b"Comment\x00copy %d" % i
        chunk = len(body).to_bytes(4, "big") + b"tEXt" + body
        chunk += zlib.crc32(b"tEXt" + body).to_bytes(4, "big")
        paths.append(folder / f"slow-{i:03d}.png")
        paths[-1].write_bytes(raw[:after_ihdr] + chunk + raw[after_ihdr:])
    return paths


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def bomb_png(path: Path, side: int) -> Path:
    """A real, complete 1-bit PNG of side x side white pixels: tens of KB on disk, but decoding
    it would write side**2 bytes (white, so the pages are really touched; more as RGB)."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)  # filter byte, then white pixels, 8 a byte
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )
    return path


def huge_jpeg(path: Path, side: int = 8000) -> Path:
    """A real photo-sized JPEG within PIL's pixel limit (64M pixels, 192 MB decoded)."""
    gray = Image.linear_gradient("L").resize((side, side))
    Image.merge(
        "RGB", (gray, gray.rotate(90), gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    ).save(path, quality=60)
    return path
