"""Queries: turn a text or an image into a vector, search an index, join hits with the store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .encoders import Encoder
from .errors import SearchmmError
from .index import VectorIndex
from .store import IMAGE, TEXT, Item, Store, item_json

TARGETS = {"images": IMAGE, "texts": TEXT, IMAGE: IMAGE, TEXT: TEXT}


@dataclass
class Hit:
    """One result: its rank (from 1), cosine score and stored item."""

    rank: int
    score: float
    item: Item

    @property
    def path(self) -> str:
        return self.item.path

    @property
    def text(self) -> str | None:
        return self.item.text

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), **item_json(self.item)}


def target_kind(target: str) -> str:
    try:
        return TARGETS[target]
    except KeyError:
        raise SearchmmError(f"unknown target {target!r}: use images or texts") from None


def text_vector(encoder: Encoder, text: str) -> np.ndarray:
    if not text.strip():
        raise SearchmmError("the query text is empty")
    return encoder.encode_texts([text])[0]


def image_vector(encoder: Encoder, path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a query image exactly as ingest does (same orientation, draft and preprocess)."""
    from .imaging import ImageDecodeError, load_image

    try:
        image, _ = load_image(os.fspath(path), draft_size=encoder.image_size)
    except ImageDecodeError as exc:
        raise SearchmmError(f"cannot read query image {path}: {exc}") from exc
    pixels = encoder.preprocess(image).unsqueeze(0)
    return encoder.encode_images(pixels)[0]


def search_index(store: Store, index: VectorIndex, vector: np.ndarray, k: int) -> list[Hit]:
    """Top-k items for a normalised query vector, joined with their metadata in one lookup."""
    if k < 1:
        raise SearchmmError(f"k must be at least 1, got {k}")
    query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
    if query.shape[1] != index.dim:
        raise SearchmmError(f"query vector has {query.shape[1]} dimensions, the index {index.dim}")
    scores, ids = index.search(query, k)
    pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
    items = store.items_by_id(i for _, i in pairs)
    # An id missing from the store was removed after the index was read: skip it.
    hits = [(score, items[i]) for score, i in pairs if i in items]
    return [Hit(rank, score, item) for rank, (score, item) in enumerate(hits, start=1)]
