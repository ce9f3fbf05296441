"""Near-duplicate images: groups of items whose vectors are closer than a threshold.

A range search on an exact inner-product index over the stored vectors finds every pair above
the threshold (HNSW and IVF cannot range-search exactly); pairs are joined into groups with a
union-find, so A~B and B~C make one group even when A and C are a little further apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from searchmm.index.faisslib import load_faiss

_CHUNK = 4096  # queries per range search: bounds the result buffers


@dataclass
class DuplicateGroup:
    """Item ids of one group, the first being the one the others are closest to on average."""

    ids: list[int]
    scores: list[float]  # similarity of each member to the first (1.0 for the first itself)


def duplicate_groups(
    ids: np.ndarray, vectors: np.ndarray, threshold: float
) -> list[DuplicateGroup]:
    """Groups (largest first) of items with pairwise similarity >= threshold, chained."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    n = len(ids)
    if n < 2:
        return []
    faiss = load_faiss()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # FAISS keeps results strictly above the radius for inner product: nudge it to include ties.
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))
    for start in range(0, n, _CHUNK):
        block = np.ascontiguousarray(vectors[start : start + _CHUNK], dtype=np.float32)
        lims, _, neighbours = index.range_search(block, radius)
        for row in range(len(block)):
            i = start + row
            for j in neighbours[lims[row] : lims[row + 1]]:
                if j != i:
                    a, b = root(i), root(int(j))
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(root(i), []).append(i)
    groups = [_group(ids, vectors, rows) for rows in members.values() if len(rows) > 1]
    return sorted(groups, key=lambda g: (-len(g.ids), g.ids[0]))


def _group(ids: np.ndarray, vectors: np.ndarray, rows: list[int]) -> DuplicateGroup:
    sims = vectors[rows] @ vectors[rows].T
    centre = int(np.argmax(sims.mean(axis=1)))
    order = sorted(range(len(rows)), key=lambda r: (r != centre, -sims[centre, r]))
    return DuplicateGroup(
        ids=[int(ids[rows[r]]) for r in order],
        scores=[round(float(sims[centre, r]), 6) for r in order],
    )
