"""Many queries at once (evaluation, bulk lookups): exact search over the stored vectors where
that is faster than the index, else the index (re-ranked where its scores are approximate).

An IVF-Flat index answers a batch barely faster than one query at a time: it scans lists per
query, where exact search is one matrix product per block of stored vectors. Measured by
bench/index_bench.py at 1M vectors: IVF1024,Flat 49 queries/s in a batch, exact 136 (0.36x);
at 100k 593 against 3,118 (0.19x). Reading the stored vectors is the fixed cost, repaid
from a few hundred queries on up to a few million vectors; at 10M, 200 exact queries took
74 s of streaming from the store (bench/results/scale_10m.md), more than the index's own.
"""

from __future__ import annotations

import numpy as np

from searchmm.index.specs import family
from searchmm.index.vector_index import VectorIndex
from searchmm.search.rerank import search_exact
from searchmm.store.reads import StoreReads
from searchmm.vocabulary import Kind

EXACT_BATCH_QUERIES = 256  # from this many queries on, an IVF-Flat index is searched exactly
EXACT_BATCH_VECTORS = 2_000_000  # and only up to this many stored vectors
SCORE_CELLS = 25_000_000  # query x vector scores held at once (100 MB)


def search_batch(
    store: StoreReads, index: VectorIndex, kind: Kind, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores (q, k), ids (q, k)) for unit query rows; id -1 pads past the end."""
    exact_pays = len(queries) >= EXACT_BATCH_QUERIES and index.ntotal <= EXACT_BATCH_VECTORS
    if exact_pays and family(index.spec) == "IVF,Flat":
        return exact_batch(store, kind, index.dim, queries, k)
    return search_exact(store, index, queries, k)


def exact_batch(
    store: StoreReads, kind: Kind, dim: int, queries: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over every stored vector of a kind, one snapshot, a batch at a time; ties
    are broken by the lower id, as FAISS's flat index does."""
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    found = np.full((len(queries), k), -1, dtype=np.int64)
    with store.vector_snapshot(kind, dim) as snapshot:
        for ids, vectors in snapshot.batches(max(1_000, SCORE_CELLS // len(queries))):
            merged_scores = np.hstack([scores, queries @ vectors.T])
            merged_ids = np.hstack([found, np.broadcast_to(ids, (len(queries), len(ids)))])
            keep = min(k, merged_scores.shape[1])
            best = np.argpartition(-merged_scores, keep - 1, axis=1)[:, :keep]
            scores = np.take_along_axis(merged_scores, best, axis=1)
            found = np.take_along_axis(merged_ids, best, axis=1)
    order = np.lexsort((np.where(found < 0, np.iinfo(np.int64).max, found), -scores), axis=1)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(found, order, axis=1)
