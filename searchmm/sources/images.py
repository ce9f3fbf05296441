"""Safe image decoding: EXIF orientation, every PIL mode to RGB, size limits, reasons for failures.

One unreadable file among a million must be reported, never stop the ingest, so every failure
here becomes an `ImageDecodeError` with a reason a user can act on. No torch here: the server
and the query path decode with PIL alone.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from searchmm.sources.files import os_reason

_ORIENTATION_TAG = 0x0112
# Orientations 5-8 turn the image a quarter: the displayed width is the stored height.
SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Modes PIL's `Image.reduce` handles directly.
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


# A photo is decoded reduced only if the result keeps twice the model's input on its short
# side: a 12 MP phone photo, never a 640 px one (bench/decode_fidelity.py measures the cost).
REDUCED_DECODE_FLOOR = 2


def draft_for(input_size: int) -> int:
    """The `draft_size` that ingest and image queries decode with, for a model's input size."""
    return REDUCED_DECODE_FLOOR * input_size


class ImageDecodeError(Exception):
    """A single image could not be decoded; the message is a human reason."""


def _too_large(limit: int | None, size: tuple[int, int] | None, detail: str = "") -> str:
    if size is not None:
        what = f"{size[0]}x{size[1]} pixels"
    else:
        found = re.search(r"\((\d+) pixels\)", detail)
        what = f"{found.group(1)} pixels" if found else "the pixel count"
    return f"image is too large: {what} exceeds the limit of {limit} (decompression bomb?)"


def exif_orientation(img: Image.Image) -> int:
    """EXIF orientation, or 1 when absent or unreadable (a corrupt EXIF block is not fatal)."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:
        return 1


def _reduce_for(img: Image.Image, draft_size: int | None) -> Image.Image:
    """Shrink huge images by an integer factor that keeps the short side >= draft_size, to bound
    memory and resize time (JPEGs were already shrunk by `draft` while decoding, but only up to
    8x, so may still qualify)."""
    if not draft_size or img.mode not in _REDUCIBLE_MODES:
        return img
    factor = min(img.size) // draft_size
    return img.reduce(factor) if factor >= 2 else img


def _on_white(img: Image.Image) -> Image.Image:
    """Composite onto white: transparent regions of logos and icons read as paper, not ink."""
    rgba = img.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit and float images: stretch by their actual maximum instead of clipping to 255."""
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    arr = np.clip(arr, 0.0, None)
    peak = float(arr.max()) if arr.size else 0.0
    if peak > 0:
        arr = arr * (255.0 / peak)
    gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB, as the CLIP preprocess expects."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        return _on_white(img)
    if mode in _HIGH_DEPTH_MODES:
        return _scale_to_8bit(img)
    return img.convert("RGB")


def _open_and_decode(
    path: str | BinaryIO, draft_size: int | None, exact: bool
) -> tuple[Image.Image, tuple[int, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # PIL's UserWarnings (corrupt EXIF, palette transparency) are noise in a bulk ingest.
        warnings.simplefilter("ignore", UserWarning)
        with Image.open(path) as img:
            size = img.size
            limit = Image.MAX_IMAGE_PIXELS
            # Belt and braces: the warnings filter is process-global and not thread-safe.
            if limit is not None and size[0] * size[1] > limit:
                raise ImageDecodeError(_too_large(limit, size))
            if draft_size and not exact and img.format == "JPEG":
                img.draft("RGB", (draft_size, draft_size))  # short side stays >= draft_size
            img.load()  # inside the caller's try: a truncated file fails here
            orientation = exif_orientation(img)
            turned = orientation in SWAPPING_ORIENTATIONS
            if exact:  # what the reference pipelines see: the stored pixels, made RGB
                return img.convert("RGB"), (size[1], size[0]) if turned else size
            out: Image.Image = _reduce_for(img, draft_size)
            try:
                out = ImageOps.exif_transpose(out)
            except Exception:
                turned = False  # corrupt EXIF: the pixels are still good, keep them unrotated
            out = to_rgb(out)
            if out is img:
                out = img.copy()  # detach from the file before it is closed
    if turned:
        size = (size[1], size[0])
    return out, size


def load_image(
    path: str, *, draft_size: int | None = None, exact: bool = False
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode `path` to RGB; return it with the original (displayed) size, or raise a reason.

    By default the image is turned upright by its EXIF orientation and transparency composited
    on white; with `draft_size` it may be decoded reduced (JPEG draft, integer reduce) as long
    as its short side stays >= `draft_size`. `exact` decodes as CLIP_benchmark and
    open_clip's evaluation do, `Image.open(path).convert("RGB")`: in full, unturned, alpha
    dropped, so that a benchmark feeds the model the reference pixels.
    """
    try:
        st = os.stat(path)
    except OSError as err:
        raise ImageDecodeError(os_reason(err)) from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("not a regular file")  # never block on a FIFO or a device
    if st.st_size == 0:
        raise ImageDecodeError("file is empty (0 bytes)")
    return _decoded(path, draft_size, exact)


def load_image_bytes(
    data: bytes, *, draft_size: int | None = None, exact: bool = False
) -> tuple[Image.Image, tuple[int, int]]:
    """`load_image` of a file's bytes held in memory (a dataset's image column)."""
    if not data:
        raise ImageDecodeError("empty (0 bytes)")
    return _decoded(io.BytesIO(data), draft_size, exact)


def _decoded(
    source: str | BinaryIO, draft_size: int | None, exact: bool
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode, every failure turned into a reason."""
    try:
        return _open_and_decode(source, draft_size, exact)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(_too_large(Image.MAX_IMAGE_PIXELS, None, str(err))) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (cannot identify image file)") from None
    except (FileNotFoundError, PermissionError) as err:  # PIL's own OSErrors mean bad data
        raise ImageDecodeError(os_reason(err)) from None
    except MemoryError:
        raise ImageDecodeError("out of memory while decoding") from None
    except Exception as err:
        detail = str(err) or type(err).__name__
        raise ImageDecodeError(f"truncated or corrupt image data: {detail}") from None
