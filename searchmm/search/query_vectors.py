"""Query vectors: a text or an image encoded exactly as ingest encodes its items (the image
decoding, and Pillow with it, is imported by an image query only)."""

from __future__ import annotations

import os

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.model.encoder import QueryEncoder


def text_vector(encoder: QueryEncoder, text: str) -> np.ndarray:
    if not text.strip():
        raise SearchmmError("the query text is empty")
    return np.asarray(encoder.encode_texts([text])[0], dtype=np.float32)


def image_vector(encoder: QueryEncoder, path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a query image exactly as ingest does (same orientation, draft and preprocess)."""
    from searchmm.sources.images import ImageDecodeError, draft_for, load_image

    try:
        image, _ = load_image(os.fspath(path), draft_size=draft_for(encoder.image_size))
    except ImageDecodeError as exc:
        raise SearchmmError(f"cannot read query image {path}: {exc}") from exc
    return np.asarray(encoder.encode_pil([image])[0], dtype=np.float32)
