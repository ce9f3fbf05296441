"""Thumbnails of image items, made once and cached under `<index dir>/thumbnails/`.

A cached file is named `<item id>-<size>-<file digest>.jpg`: a file changed on disk has another
digest, so it gets a new thumbnail (and the stale one is deleted) without any expiry logic.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from searchmm.atomicfile import write_bytes_atomic
from searchmm.sources.files import file_digest
from searchmm.sources.images import ImageDecodeError, load_image
from searchmm.store.records import Item

THUMBNAIL_DIRNAME = "thumbnails"
JPEG_QUALITY = 85


class ThumbnailError(Exception):
    """The item's file is gone or cannot be decoded; the message says which."""

    def __init__(self, message: str, *, gone: bool) -> None:
        super().__init__(message)
        self.gone = gone


@dataclass
class Thumbnail:
    """A cached file, or the bytes themselves when the cache directory cannot be written."""

    path: Path | None
    data: bytes | None = None


class ThumbnailCache:
    """Makes and finds thumbnails; safe to call from many threads (files are renamed into place)."""

    def __init__(self, index_dir: Path) -> None:
        self.folder = index_dir / THUMBNAIL_DIRNAME

    def get(self, item: Item, size: int) -> Thumbnail:
        """The thumbnail of an image item whose longer side is at most `size` pixels."""
        digest = self._digest(item)
        target = self.folder / f"{item.id}-{size}-{digest}.jpg"
        if target.is_file():
            return Thumbnail(target)
        data = self._render(item, size)
        try:
            self._store(target, data)
        except OSError:
            return Thumbnail(None, data)  # a read-only index directory: serve it uncached
        self._drop_stale(item.id, size, keep=target)
        return Thumbnail(target)

    def _digest(self, item: Item) -> str:
        """The stored digest while size and mtime match what was ingested, else the file's own."""
        try:
            st = os.stat(item.path)
            if (
                item.file_digest
                and st.st_size == item.file_size
                and st.st_mtime_ns == item.file_mtime_ns
            ):
                return item.file_digest
            return file_digest(item.path)
        except OSError as exc:
            raise ThumbnailError(
                f"the file of item {item.id} cannot be read: {exc.strerror}", gone=True
            ) from None

    def _render(self, item: Item, size: int) -> bytes:
        try:
            image, _ = load_image(item.path, draft_size=size)
        except ImageDecodeError as exc:
            raise ThumbnailError(
                f"cannot make a thumbnail of item {item.id}: {exc}", gone=False
            ) from None
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        return out.getvalue()

    def _store(self, target: Path, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(target, data)  # readers see the whole file or none

    def _drop_stale(self, item_id: int, size: int, keep: Path) -> None:
        """Thumbnails of an earlier version of the same file are never asked for again."""
        for old in self.folder.glob(f"{item_id}-{size}-*.jpg"):
            if old != keep:
                with contextlib.suppress(OSError):
                    old.unlink()
