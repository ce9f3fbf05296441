"""When an IVF index's trained quantiser no longer fits the vectors added since it was trained.

Adds never retrain: a new vector goes to the list of its nearest centroid. That stays good
while the new vectors come from the distribution the centroids were trained on. How far a
vector is from its nearest centroid (its residual, 1 - cosine: every vector and, with inner
product, every centroid is unit length) says how well it is represented. At training, the mean
residual of the first vectors the build adds is recorded; then every incremental add is
measured the same way. When at least `MIN_ADDED` vectors (and 1% of the index) were added and
their mean residual exceeds `RATIO` times the recorded one, the quantiser has drifted and the
index is rebuilt, trained again on a sample of everything stored (`sync`).

Measured in tests/test_scale.py: more vectors from the trained distribution stay within 1.05x;
vectors of new topics (clusters the sample never saw) reach 1.5x and more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from searchmm.index.faisslib import FaissObject, load_faiss

RATIO = 1.25
MIN_ADDED = 1_000
BASELINE_ROWS = 10_000  # vectors measured at training: enough for a mean within 1%


@dataclass
class QuantiserDrift:
    """The trained residual and the running sum over vectors added since (in the index file)."""

    trained: float | None = None
    added_sum: float = 0.0
    added: int = 0

    @property
    def added_mean(self) -> float | None:
        return self.added_sum / self.added if self.added else None

    def fields(self) -> dict[str, Any]:
        """As the index file's header keeps them."""
        return {f"drift_{name}": value for name, value in vars(self).items()}

    def drifted(self, ntotal: int) -> bool:
        mean = self.added_mean
        if self.trained is None or mean is None:
            return False
        enough = self.added >= max(MIN_ADDED, ntotal // 100)
        return enough and mean > RATIO * max(self.trained, 1e-6)

    def record_baseline(self, index: FaissObject, vectors: np.ndarray) -> None:
        found = residuals(index, vectors[:BASELINE_ROWS])
        if found is not None and len(found):
            self.trained, self.added_sum, self.added = float(found.mean()), 0.0, 0

    def record_added(self, index: FaissObject, vectors: np.ndarray) -> None:
        if self.trained is None:
            return
        found = residuals(index, vectors)
        if found is not None:
            self.added_sum += float(found.sum())
            self.added += len(found)


def residuals(index: FaissObject, vectors: np.ndarray) -> np.ndarray | None:
    """1 - cosine to the nearest centroid, per vector; None for a type without an IVF
    quantiser that sees the vectors as given (no pre-transform)."""
    faiss = load_faiss()
    if isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        return None
    top = faiss.try_extract_index_ivf(index)
    if top is None or not top.is_trained or not len(vectors):
        return None
    scores, _ = top.quantizer.search(np.ascontiguousarray(vectors, dtype=np.float32), 1)
    found: np.ndarray = np.maximum(0.0, 1.0 - scores[:, 0].astype(np.float64))
    return found
