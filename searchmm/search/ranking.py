"""Queries: turn a text or an image into a vector, search an index, join hits with the store."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.index.vector_index import VectorIndex
from searchmm.model.encoder import Encoder
from searchmm.store.records import Item
from searchmm.store.store import Store
from searchmm.vocabulary import Kind

TARGETS = {"images": Kind.IMAGE, "texts": Kind.TEXT, Kind.IMAGE: Kind.IMAGE, Kind.TEXT: Kind.TEXT}


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
        return {"rank": self.rank, "score": round(self.score, 6), **self.item.to_json()}


def target_kind(target: str) -> Kind:
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
    from searchmm.sources.images import ImageDecodeError, load_image

    try:
        image, _ = load_image(os.fspath(path), draft_size=encoder.image_size)
    except ImageDecodeError as exc:
        raise SearchmmError(f"cannot read query image {path}: {exc}") from exc
    pixels = encoder.preprocess(image).unsqueeze(0)
    return encoder.encode_images(pixels)[0]


# Below this many allowed items, ranking them exactly from their stored vectors is cheaper
# than an index search with a selector, and always exact.
EXACT_FILTER_LIMIT = 20_000


@dataclass(frozen=True)
class Page:
    """Which slice of the ranking to return, and the lowest score worth returning."""

    k: int = 10
    offset: int = 0
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.k < 1 or self.offset < 0:
            raise SearchmmError(
                f"k must be at least 1 and offset at least 0 (k={self.k}, offset={self.offset})"
            )


def search_index(
    store: Store,
    index: VectorIndex,
    vector: np.ndarray,
    page: Page,
    *,
    allowed: np.ndarray | None = None,
) -> list[Hit]:
    """Ranked hits for a normalised query vector, joined with their metadata in one lookup.

    `allowed` (ids that pass the filters) is ranked exactly when small, through the index's
    id selector otherwise, and exactly again if an approximate filtered search comes up short.
    """
    query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
    if query.shape[1] != index.dim:
        raise SearchmmError(f"query vector has {query.shape[1]} dimensions, the index {index.dim}")
    wanted = page.k + page.offset
    if allowed is None:
        pairs = _top(*index.search(query, wanted))
    elif len(allowed) <= EXACT_FILTER_LIMIT or not index.supports_filter:
        pairs = _exact(store, index.dim, query[0], allowed, wanted)
    else:
        pairs = _top(*index.search(query, wanted, allowed=allowed))
        if len(pairs) < min(wanted, len(allowed)):
            pairs = _exact(store, index.dim, query[0], allowed, wanted)
    pairs = pairs[page.offset : wanted]
    if page.threshold is not None:
        pairs = [(score, i) for score, i in pairs if score >= page.threshold]
    items = store.items_by_id(i for _, i in pairs)
    # An id missing from the store was removed after the index was read: skip it.
    hits = [(score, items[i]) for score, i in pairs if i in items]
    return [Hit(rank, score, item) for rank, (score, item) in enumerate(hits, page.offset + 1)]


def _top(scores: np.ndarray, ids: np.ndarray) -> list[tuple[float, int]]:
    return [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]


def _exact(
    store: Store, dim: int, query: np.ndarray, allowed: np.ndarray, wanted: int
) -> list[tuple[float, int]]:
    """Exact ranking of the allowed ids from their stored vectors, in chunks to bound memory."""
    best: list[tuple[float, int]] = []
    for start in range(0, len(allowed), EXACT_FILTER_LIMIT):
        ids, vectors = store.vectors(allowed[start : start + EXACT_FILTER_LIMIT].tolist(), dim)
        scores = vectors @ query
        top = np.argsort(-scores, kind="stable")[:wanted]
        best = sorted(
            best + [(float(scores[j]), int(ids[j])) for j in top], key=lambda p: (-p[0], p[1])
        )[:wanted]
    return best
