"""Contrastive fine-tuning of an open_clip model on image-caption pairs, to a checkpoint that
`--pretrained` loads everywhere.

    from searchmm import ModelSpec
    from searchmm.training import FinetuneOptions, finetune, read_pairs
    pairs = read_pairs("photos", "captions.jsonl")
    run = finetune(pairs, ModelSpec(), "tuned.safetensors", FinetuneOptions(epochs=5))
    print(run.report.to_markdown())

Names are resolved on first use: the CLI imports this package's modules only when it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import Finetuned, finetune
    from .options import FinetuneOptions
    from .pairs import PairSet, read_pairs, split_by_image
    from .report import EpochRecord, FinetuneReport

_WHERE = {
    "finetune": "loop",
    "Finetuned": "loop",
    "FinetuneOptions": "options",
    "PairSet": "pairs",
    "read_pairs": "pairs",
    "split_by_image": "pairs",
    "EpochRecord": "report",
    "FinetuneReport": "report",
}

__all__ = [
    "EpochRecord",
    "FinetuneOptions",
    "FinetuneReport",
    "Finetuned",
    "PairSet",
    "finetune",
    "read_pairs",
    "split_by_image",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
