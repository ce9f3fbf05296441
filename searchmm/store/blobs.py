"""How an embedding is kept in its blob: float32 (exact) or float16 (half the bytes).

A store chooses when it is created (meta `embedding_dtype`; stores made before the choice
existed are float32). A blob says its own type by its length (2 or 4 bytes a dimension), so
reading needs no setting and a store whose blobs were written both ways still reads. float16
keeps a unit vector's cosine to itself above 0.99999; its decoded rows are normalised again,
so that every vector handed out is unit length, as the invariants say.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from searchmm.errors import SearchmmError, StoreError

EMBEDDING_DTYPES = ("float32", "float16")
DEFAULT_DTYPE = "float32"
DTYPE_KEY = "embedding_dtype"


def check_dtype(dtype: str) -> str:
    if dtype not in EMBEDDING_DTYPES:
        choices = " or ".join(EMBEDDING_DTYPES)
        raise SearchmmError(f"embedding dtype must be {choices}, got {dtype!r}")
    return dtype


def to_blob(vector: np.ndarray, dtype: str) -> bytes:
    return np.asarray(vector, dtype=np.float32).astype(dtype, copy=False).tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """(len(blobs), dim) float32 rows; a blob of neither length is a damaged store."""
    if not blobs:
        return np.empty((0, dim), dtype=np.float32)
    sizes = {len(b) for b in blobs}
    if len(sizes) > 1:
        return np.vstack([_decode(blob, 1, dim) for blob in blobs])
    return _decode(b"".join(blobs), len(blobs), dim)


def _decode(data: bytes, rows: int, dim: int) -> np.ndarray:
    width = len(data) // max(rows, 1)
    if width == 4 * dim:
        return np.frombuffer(data, dtype=np.float32).reshape(rows, dim)
    if width == 2 * dim:
        vectors = np.frombuffer(data, dtype=np.float16).reshape(rows, dim).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
    raise StoreError(
        f"an embedding of {width} bytes cannot be a {dim}-dimensional vector: the store is "
        "damaged; restore it from a backup, or ingest again into a new index directory"
    )
