"""Retrieval evaluation: dataset loaders (COCO, Flickr), metrics, and a runner over the engine.

    from searchmm.evaluation import retrieval_metrics
    metrics = retrieval_metrics(image_emb, text_emb, text_to_image, ks=(1, 5, 10))

Names are resolved on first use, so that `searchmm bench --help` stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .datasets import (
        RetrievalDataset,
        load_coco,
        load_flickr8k_tokens,
        load_karpathy,
    )
    from .metrics import recall_from_hits, retrieval_metrics, retrieval_ranks
    from .report import EvaluationReport
    from .runner import default_bench_dir, evaluate

_WHERE = {
    "RetrievalDataset": "datasets",
    "load_coco": "datasets",
    "load_karpathy": "datasets",
    "load_flickr8k_tokens": "datasets",
    "retrieval_metrics": "metrics",
    "retrieval_ranks": "metrics",
    "recall_from_hits": "metrics",
    "EvaluationReport": "report",
    "evaluate": "runner",
    "default_bench_dir": "runner",
}

__all__ = [
    "EvaluationReport",
    "RetrievalDataset",
    "default_bench_dir",
    "evaluate",
    "load_coco",
    "load_flickr8k_tokens",
    "load_karpathy",
    "recall_from_hits",
    "retrieval_metrics",
    "retrieval_ranks",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
