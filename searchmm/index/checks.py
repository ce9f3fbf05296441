"""What an index accepts: int64 ids, float32 rows of its dimension, unique and normalised."""

from __future__ import annotations

import numpy as np

NORM_TOLERANCE = 1e-2  # float16 round trips through the store stay well inside this


def as_ids(ids: np.ndarray) -> np.ndarray:
    """A contiguous int64 copy (or view) of a 1-D integer array; anything else is a ValueError."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """Contiguous float32 rows of width `dim`; one 1-D query is taken as a single row."""
    arr = np.asarray(vectors)
    if arr.ndim == 1 and what == "queries":
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_batch(ids: np.ndarray, vectors: np.ndarray) -> None:
    """One id per vector, ids >= 0 and unique, vectors L2-normalised (scores are cosines)."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
    if not len(ids):
        return
    if ids.min() < 0:
        raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique within one add")
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
        raise ValueError("vectors must be L2-normalised (scores are inner products)")
