"""Searching an index whose scores are approximate (PQ codes): its best candidates, several
times k of them, are scored again with the store's own vectors, so that every score a user
sees is an exact cosine and the order is exact among the candidates."""

from __future__ import annotations

import numpy as np

from searchmm.index.vector_index import VectorIndex
from searchmm.store.reads import StoreReads


def search_exact(
    store: StoreReads,
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`index.search`, re-ranked with the stored vectors when `index.reranks`."""
    if not index.reranks:
        return index.search(queries, k, allowed=allowed)
    pool = index.params.rerank_pool(k, index.ntotal)
    _, candidates = index.search(queries, pool, allowed=allowed)
    stored_ids, vectors = store.vectors(np.unique(candidates[candidates >= 0]).tolist(), index.dim)
    order = np.argsort(stored_ids)
    stored_ids, vectors = stored_ids[order], vectors[order]
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for row, (query, ids) in enumerate(zip(queries, candidates, strict=True)):
        at = np.searchsorted(stored_ids, ids)
        known = (ids >= 0) & (at < len(stored_ids))
        at, ids = at[known], ids[known]
        present = stored_ids[at] == ids  # a candidate removed since the index was read
        at, ids = at[present], ids[present]
        exact = vectors[at] @ query
        best = np.lexsort((ids, -exact))[:k]
        scores[row, : len(best)], found[row, : len(best)] = exact[best], ids[best]
    return scores, found
