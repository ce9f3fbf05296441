"""Clustered 512-d vectors with the statistics of real CLIP image embeddings, generated in a
stream (any number of chunks, never all in memory) for bench/scale.py.

Targets, from published measurements of OpenAI ViT-B/32 embeddings:

- random pairs of image embeddings: mean cosine 0.47 (std 0.09), the "cone effect" of Liang
  et al., "Mind the Gap" (NeurIPS 2022; their notebook's 5,000 COCO val images);
- a query's nearest neighbour among 1M LAION images: median cosine about 0.86, and a local
  intrinsic dimensionality about 24 (Euclidean MLE), both derived from the VIBE benchmark's
  published per-query statistics of its `laion-clip-id-512-normalized` set (relative contrast
  RC1 3.7, LID100 11.8 on 1 - cos distances, which is half the Euclidean figure).

The model (as bench/index_bench.py's, with a stronger shared direction): every vector leans
on one direction `mu`; cluster centres are normalise(cone * mu + g / sqrt(d)); cluster sizes
are lognormal; a point is its centre plus a move in the cluster's own 32-d subspace plus small
isotropic noise, normalised. The bench reports the statistics it got beside these targets.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

TARGETS = {"random_pair_cosine": 0.47, "top1_cosine_at_1M": 0.86, "lid_euclidean": 24.0}


@dataclass(frozen=True)
class Clustered:
    dim: int = 512
    clusters: int = 4096
    subspace: int = 32
    spread: float = 0.6
    noise: float = 0.25
    cone: float = 1.46  # centres' cosine to each other: cone^2 / (cone^2 + 1) = 0.68
    seed: int = 0


class ClusteredStream:
    """Draws unit vectors of one fixed distribution, chunk after chunk (float32 rows)."""

    def __init__(self, cfg: Clustered) -> None:
        self.cfg = cfg
        d, r = cfg.dim, cfg.subspace
        rng = np.random.default_rng(cfg.seed)
        mu = rng.standard_normal(d)
        mu /= np.linalg.norm(mu)
        weights = rng.lognormal(0.0, 1.0, cfg.clusters)
        self.weights = weights / weights.sum()
        self.spreads = (cfg.spread * rng.lognormal(0.0, 0.25, cfg.clusters)).astype(np.float32)
        centres = cfg.cone * mu + rng.standard_normal((cfg.clusters, d)) / np.sqrt(d)
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        self.bases = (rng.standard_normal((cfg.clusters, d, r)) / np.sqrt(d)).astype(np.float16)

    def chunk(self, count: int, seed: int) -> np.ndarray:
        """`count` new vectors; each `seed` gives other vectors of the same distribution."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1, seed])
        d, r = cfg.dim, cfg.subspace
        labels = rng.choice(cfg.clusters, size=count, p=self.weights)
        out = np.empty((count, d), dtype=np.float32)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(cfg.clusters + 1))
        for k in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[k] : bounds[k + 1]]
            z = rng.standard_normal((len(rows), r), dtype=np.float32)
            g = rng.standard_normal((len(rows), d), dtype=np.float32)
            move = (self.spreads[k] / np.sqrt(r)) * (z @ self.bases[k].T.astype(np.float32))
            out[rows] = self.centres[k] + move + (cfg.noise / np.sqrt(d)) * g
        out /= np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]  # 25x np.linalg.norm's speed
        return out

    def chunks(self, total: int, size: int, first_seed: int = 0) -> Iterator[np.ndarray]:
        for number, start in enumerate(range(0, total, size)):
            yield self.chunk(min(size, total - start), first_seed + number)


def describe(vectors: np.ndarray, top_scores: np.ndarray, seed: int = 1) -> dict[str, float]:
    """Random-pair cosine, neighbour cosines and the Levina-Bickel LID (Euclidean, k=20) of a
    sample and of the queries' exact top scores (rows sorted, best first)."""
    rng = np.random.default_rng(seed)
    a = vectors[rng.integers(0, len(vectors), 5000)]
    b = vectors[rng.integers(0, len(vectors), 5000)]
    k = min(20, top_scores.shape[1])
    dist = np.sqrt(np.maximum(2.0 - 2.0 * top_scores[:, :k].astype(np.float64), 1e-24))
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    return {
        "random_pair_cosine": float(np.einsum("ij,ij->i", a, b).mean()),
        "top1_cosine_median": float(np.median(top_scores[:, 0])),
        "top10_cosine_median": float(np.median(top_scores[:, min(9, k - 1)])),
        "lid_euclidean_median": float(np.median(lid)),
    }
