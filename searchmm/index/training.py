"""Training an index that needs it (IVF, PQ) on a reproducible sample of its first vectors."""

from __future__ import annotations

from typing import Any

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.index.faisslib import faiss_reason, load_faiss
from searchmm.index.specs import IndexParams, chain


def train(index: Any, spec: str, vectors: np.ndarray, params: IndexParams) -> None:
    """Train on a fixed-seed sample: >= 40 vectors per IVF list (FAISS warns below 39)."""
    ivf = load_faiss().try_extract_index_ivf(index)
    nlist, n = (int(ivf.nlist) if ivf is not None else 0), len(vectors)
    if n < nlist:
        suggest = 2 ** int(np.log2(max(1, n // 39)))
        raise SearchmmError(
            f"index spec {spec!r} needs at least {nlist} vectors to train (one per IVF "
            f"list) but got {n}: use a smaller nlist (e.g. IVF{suggest},Flat) or 'Flat'"
        )
    limit = training_rows(index, params)
    if n > limit:
        rows = np.random.default_rng(params.train_seed).choice(n, size=limit, replace=False)
        vectors = vectors[np.sort(rows)]
    for part in chain(index):  # PQ's polysemous codes are never used here: 10x faster
        if hasattr(part, "do_polysemous_training"):
            part.do_polysemous_training = False
    try:
        index.train(vectors)
    except RuntimeError as exc:
        raise SearchmmError(f"cannot train index {spec!r}: {faiss_reason(exc)}") from exc


def training_rows(index: Any, params: IndexParams) -> int:
    """How many vectors training draws: the sample size, and >= 40 per IVF list."""
    ivf = load_faiss().try_extract_index_ivf(index)
    return max(params.train_sample, 40 * (int(ivf.nlist) if ivf is not None else 0))
