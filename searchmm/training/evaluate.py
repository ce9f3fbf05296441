"""Held-out retrieval after each epoch, computed as `searchmm bench` computes it: the images
decoded as a bench decodes them (in full, as CLIP_benchmark does) by ingest's decode pipeline,
encoded by the same `TorchEncoder` with the model's eval transform, texts in ingest's batches,
and scored by the same `retrieval_metrics`; so an epoch's figures are a bench run's figures."""

from __future__ import annotations

from contextlib import closing

import numpy as np

from searchmm import defaults
from searchmm.evaluation.metrics import DEFAULT_KS, retrieval_metrics
from searchmm.model.encoder import TorchEncoder
from searchmm.sources.loader import image_batches
from searchmm.training.pairs import PairSet

DIRECTIONS = ("image_retrieval", "text_retrieval")  # text -> image, image -> text


def mean_recall(metrics: dict[str, float]) -> float:
    """The mean of Recall@1/5/10 in both directions: what the best epoch is chosen by."""
    values = [metrics[f"{d}_recall@{k}"] for d in DIRECTIONS for k in DEFAULT_KS]
    return float(np.mean(values))


def evaluate(
    encoder: TorchEncoder, val: PairSet, *, batch_size: int, workers: int
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Both directions' Recall@K, MRR and ranks over the val pairs, and the images that could
    not be decoded (left out with their captions)."""
    vectors: list[np.ndarray] = []
    rows: list[int] = []
    failures: list[tuple[str, str]] = []
    batches = image_batches(
        val.image_paths,
        encoder.preprocess,
        batch_size=batch_size,
        workers=workers,
        exact=True,
    )
    with closing(batches):
        for batch in batches:
            failures += [(val.image_paths[i], reason) for i, reason in batch.failures]
            if batch.pixels is not None:
                vectors.append(encoder.encode_images(batch.pixels))
                rows += batch.indices
    if not rows:
        return {}, failures
    kept = val.subset(np.asarray(rows))
    texts, owners = kept.flat_captions()
    step = defaults.TEXT_BATCH_SIZE
    text_vectors = [encoder.encode_texts(texts[i : i + step]) for i in range(0, len(texts), step)]
    metrics = retrieval_metrics(np.concatenate(vectors), np.concatenate(text_vectors), owners)
    return metrics, failures
