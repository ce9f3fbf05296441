"""The models we recommend: how well each retrieves, and what it costs to run.

Recall is open_clip's published table (`evaluation.published`, made with CLIP_benchmark). The
cost (parameters, embedding sizes, CPU milliseconds per image and per query, peak memory) is
measured by bench/models.py and kept in `measured_cpu.json` beside this file: with random
weights, which cost the same compute as trained ones, on the machine that file names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchmm.evaluation.published import COCO_5K, FLICKR30K_1K, published_metrics

MEASURED_FILE = Path(__file__).with_name("measured_cpu.json")


@dataclass(frozen=True)
class Recommended:
    name: str
    pretrained: str
    why: str  # what it is the choice for
    multilingual: bool = False


RECOMMENDED = (
    Recommended("ViT-B-32", "laion2b_s34b_b79k", "the default: fast on a CPU, good recall"),
    Recommended("ViT-B-32-256", "datacomp_s34b_b86k", "rclip's default: as fast, similar recall"),
    Recommended("ViT-B-16", "laion2b_s34b_b88k", "a little more recall, 2.4-4x slower"),
    Recommended("ViT-B-16-SigLIP", "webli", "the best recall for its cost on a CPU"),
    Recommended("ViT-B-16-SigLIP-512", "webli", "SigLIP at 512 px: small details, 5x slower"),
    Recommended("ViT-L-14", "laion2b_s32b_b82k", "a large CLIP: for a GPU"),
    Recommended("ViT-SO400M-14-SigLIP-384", "webli", "the best in the table: for a GPU"),
    Recommended(
        "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "multilingual, ViT-B-32 images", True
    ),
    Recommended("ViT-B-16-SigLIP-i18n-256", "webli", "multilingual SigLIP", True),
    Recommended("ViT-B-16-SigLIP2", "webli", "multilingual SigLIP 2 (not in the table)", True),
)


def measured() -> dict[str, Any]:
    """What bench/models.py recorded: {"machine": ..., "models": {"name/tag": {...}}}."""
    try:
        data: dict[str, Any] = json.loads(MEASURED_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"machine": None, "models": {}}
    return data


def model_table(recorded: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per recommended model: published recall (empty where the table has none) and
    the measured cost (empty where it was not measured, with the reason), from `recorded`
    (default: `measured()`)."""
    costs = (recorded or measured())["models"]
    rows = []
    for model in RECOMMENDED:
        rows.append(
            {
                "model": model.name,
                "pretrained": model.pretrained,
                "why": model.why,
                "multilingual": model.multilingual,
                "coco_5k": published_metrics(model.name, model.pretrained, COCO_5K),
                "flickr30k_1k": published_metrics(model.name, model.pretrained, FLICKR30K_1K),
                "cost": costs.get(f"{model.name}/{model.pretrained}", {}),
            }
        )
    return rows
