"""Ranking: search an index (or the stored vectors of the allowed items) for a query vector,
and join the best ids with their stored items."""

from __future__ import annotations

import numpy as np

from searchmm import defaults
from searchmm.errors import SearchmmError
from searchmm.index.vector_index import VectorIndex
from searchmm.search.hits import Hit
from searchmm.search.options import SearchOptions
from searchmm.search.rerank import search_exact
from searchmm.store.reads import StoreReads


def rank(
    store: StoreReads,
    index: VectorIndex,
    vector: np.ndarray,
    page: SearchOptions,
    *,
    allowed: np.ndarray | None = None,
    exact_filter_limit: int = defaults.EXACT_FILTER_LIMIT,
) -> list[Hit]:
    """Ranked hits for a normalised query vector, joined with their metadata in one lookup.

    `allowed` (ids that pass the filters) is ranked exactly when there are at most
    `exact_filter_limit` of them, through the index's id selector otherwise, and exactly again
    if an approximate filtered search comes up short.
    """
    query = np.ascontiguousarray(np.asarray(vector, dtype=np.float32).reshape(1, -1))
    if query.shape[1] != index.dim:
        raise SearchmmError(f"query vector has {query.shape[1]} dimensions, the index {index.dim}")
    wanted = page.wanted
    if allowed is None:
        pairs = _top(*search_exact(store, index, query, wanted))
    elif len(allowed) <= exact_filter_limit or not index.supports_filter:
        pairs = _exact(store, index.dim, query[0], allowed, wanted, exact_filter_limit)
    else:
        pairs = _top(*search_exact(store, index, query, wanted, allowed=allowed))
        if len(pairs) < min(wanted, len(allowed)):
            pairs = _exact(store, index.dim, query[0], allowed, wanted, exact_filter_limit)
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
    store: StoreReads, dim: int, query: np.ndarray, allowed: np.ndarray, wanted: int, chunk: int
) -> list[tuple[float, int]]:
    """Exact ranking of the allowed ids from their stored vectors, in chunks to bound memory."""
    best: list[tuple[float, int]] = []
    for start in range(0, len(allowed), chunk):
        ids, vectors = store.vectors(allowed[start : start + chunk].tolist(), dim)
        scores = vectors @ query
        top = np.argsort(-scores, kind="stable")[:wanted]
        best = sorted(
            best + [(float(scores[j]), int(ids[j])) for j in top], key=lambda p: (-p[0], p[1])
        )[:wanted]
    return best
