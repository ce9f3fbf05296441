"""JPEGs decoded, resized and encoded on the GPU, for a local ingest whose model runs there.

clip-retrieval finds one A100 "bottlenecked by resizing" on the CPU. So when the encoder is
torch on CUDA and the model's preprocess is a plain recipe (resize, crop, normalise), JPEG
files are read by threads here, decoded in batches by nvJPEG (`torchvision.io.decode_jpeg` with
a CUDA device), turned upright by their EXIF orientation, resized with antialiasing, cropped,
normalised and encoded without leaving the GPU. Other formats go to the CPU workers as usual,
and so does any JPEG the GPU way does not take (CMYK, a truncated or odd file, one that changed
while read): the CPU decode then gives it the usual reason if it is bad. The resize rounds
differently from PIL's; bench/gpu_decode.py measures how far the vectors move.
"""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image

from searchmm.ingest.encoding import EncodedBatch
from searchmm.ingest.run import IngestRun
from searchmm.model.encoder import Encoder, TorchEncoder
from searchmm.model.pixels import PixelRecipe
from searchmm.sources.files import file_state
from searchmm.sources.images import SWAPPING_ORIENTATIONS, exif_orientation
from searchmm.sources.scan import FileEntry

if TYPE_CHECKING:
    import torch

JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
READ_THREADS = 4  # reading is waiting on the disk, not the CPU
# Larger photos go the CPU way, which decodes them reduced (a batch of full 100 MP decodes
# would take 30 GB of GPU memory), as do those over PIL's decompression-bomb limit.
GPU_MAX_PIXELS = 40_000_000


@dataclass
class Jpeg:
    """A JPEG file's bytes, read and checked for the GPU way."""

    index: int
    data: bytes
    orientation: int
    size: tuple[int, int]  # as displayed (after the EXIF orientation)


def gpu_decode_applies(encoder: Encoder, exact_decode: bool) -> bool:
    """Whether this ingest's JPEGs take the GPU way (`exact_decode` wants PIL's pixels)."""
    return (
        isinstance(encoder, TorchEncoder)
        and encoder.device.startswith("cuda")
        and not exact_decode
        and encoder.pixel_recipe() is not None
    )


def split_jpegs(entries: Sequence[FileEntry]) -> tuple[list[int], list[int]]:
    """Positions of the files named as JPEGs, and of the others."""
    jpegs = [i for i, e in enumerate(entries) if e.path.lower().endswith(JPEG_SUFFIXES)]
    chosen = set(jpegs)
    return jpegs, [i for i in range(len(entries)) if i not in chosen]


def gpu_jpeg_batches(
    run: IngestRun, encoder: TorchEncoder, entries: Sequence[FileEntry]
) -> Generator[tuple[EncodedBatch, list[int]], None, None]:
    """The JPEGs' vectors, batch by batch, and the positions of those the GPU way left to the
    CPU (which the caller decodes as any other file)."""
    recipe = encoder.pixel_recipe()
    assert recipe is not None, "chosen by gpu_decode_applies"
    size = run.options.batch_size
    chunks = [list(range(s, min(s + size, len(entries)))) for s in range(0, len(entries), size)]
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for chunk, read in zip(chunks, _read_ahead(pool, entries, chunks), strict=True):
            started = time.perf_counter()
            jpegs = [jpeg for jpeg in read if jpeg is not None]
            pixels, decoded = gpu_pixels(jpegs, recipe, encoder.device)
            left = sorted(set(chunk) - {jpeg.index for jpeg in decoded})
            decode_s = _synchronised(encoder.device, started)
            started = time.perf_counter()
            vectors = encoder.encode_tensor(pixels) if decoded else None
            batch = EncodedBatch(
                [jpeg.index for jpeg in decoded],
                vectors,
                [jpeg.size for jpeg in decoded],
                [],
                decode_s,
                time.perf_counter() - started,
            )
            yield batch, left


def _read_ahead(
    pool: ThreadPoolExecutor, entries: Sequence[FileEntry], chunks: list[list[int]]
) -> Iterator[list[Jpeg | None]]:
    """Each chunk's files read by the pool while the GPU works on the chunk before."""
    reads = [pool.map(lambda i: read_jpeg(i, entries[i]), chunk) for chunk in chunks[:1]]
    for chunk in chunks[1:]:
        reads.append(pool.map(lambda i: read_jpeg(i, entries[i]), chunk))
        yield list(reads.pop(0))
    yield from (list(read) for read in reads)


def read_jpeg(index: int, entry: FileEntry) -> Jpeg | None:
    """The file's bytes if the GPU way can take them: a whole regular JPEG file in RGB or grey
    of at most `GPU_MAX_PIXELS`, unchanged since the scan; else None."""
    try:
        if not stat.S_ISREG(os.stat(entry.path).st_mode):
            return None  # never open a FIFO or a device
        with open(entry.path, "rb") as file:
            data = file.read()
        if data[:2] != b"\xff\xd8" or data.rstrip(b"\0")[-2:] != b"\xff\xd9":
            return None  # not a JPEG, or one cut short: PIL says which
        # (no warnings filter: it is process-wide, and this runs in threads)
        with Image.open(io.BytesIO(data)) as image:  # reads the header, not the pixels
            width, height = image.size
            limit = min(Image.MAX_IMAGE_PIXELS or GPU_MAX_PIXELS, GPU_MAX_PIXELS)
            if image.mode not in ("RGB", "L") or width * height > limit:
                return None
            orientation = exif_orientation(image)
    except Exception:  # unreadable, or a header PIL refuses: the CPU way reports why
        return None
    if file_state(entry.path) != (entry.size, entry.mtime_ns):
        return None
    size = (height, width) if orientation in SWAPPING_ORIENTATIONS else (width, height)
    return Jpeg(index, data, orientation, size)


def gpu_pixels(
    jpegs: list[Jpeg], recipe: PixelRecipe, device: str
) -> tuple[torch.Tensor, list[Jpeg]]:
    """The JPEGs decoded on `device` and preprocessed as `recipe` says: (n, 3, S, S) float32
    there, and the JPEGs that made it (one the decoder refuses is left out)."""
    import torch

    images, decoded = _decoded(jpegs, device)
    crops = [
        _cropped(_upright(image, jpeg.orientation), recipe)
        for image, jpeg in zip(images, decoded, strict=True)
    ]
    if not crops:
        return torch.empty((0, 3, recipe.size, recipe.size), device=device), decoded
    mean = torch.tensor(recipe.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(recipe.std, device=device).view(1, 3, 1, 1)
    return (torch.stack(crops).float() / 255 - mean) / std, decoded


def _decoded(jpegs: list[Jpeg], device: str) -> tuple[list[torch.Tensor], list[Jpeg]]:
    """Decode the batch at once; if the decoder refuses it (it gives all or nothing), one by
    one, keeping those it takes."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    def tensors(batch: list[Jpeg]) -> list[torch.Tensor]:
        data = [torch.frombuffer(bytearray(j.data), dtype=torch.uint8) for j in batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notice, once a batch
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))

    if not jpegs:
        return [], []
    try:
        return tensors(jpegs), jpegs
    except RuntimeError:
        images, kept = [], []
        for jpeg in jpegs:
            try:
                images += tensors([jpeg])
                kept.append(jpeg)
            except RuntimeError:
                continue
        return images, kept


def _upright(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(3, H, W) turned as PIL's `exif_transpose` turns the image."""
    import torch

    if orientation in SWAPPING_ORIENTATIONS:  # a quarter turn, after a mirror for 5 and 7
        mirrored = image.flip(-1) if orientation in (5, 7) else image
        turns = 1 if orientation in (5, 8) else 3  # counter-clockwise quarter turns
        return torch.rot90(mirrored, turns, dims=(-2, -1))
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip((-2, -1))
    return image.flip(-2) if orientation == 4 else image


def _cropped(image: torch.Tensor, recipe: PixelRecipe) -> torch.Tensor:
    """Resized and centre-cropped as the recipe's transform does, in uint8."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    new_width, new_height = recipe.resized_size(int(width), int(height))
    mode = InterpolationMode(recipe.interpolation)
    resized = F.resize(image, [new_height, new_width], interpolation=mode, antialias=True)
    cropped: torch.Tensor = F.center_crop(resized, [recipe.size, recipe.size])
    return cropped


def _synchronised(device: str, started: float) -> float:
    """Seconds since `started`, once the GPU has done what was queued (kernels run async)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
    return time.perf_counter() - started
