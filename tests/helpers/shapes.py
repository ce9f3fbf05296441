"""A task a model can learn in seconds: renders of coloured shapes, captioned "a red circle".

Six colours and four shapes make 24 captions; every render has its own background, size and
place, so a model must learn colour and shape, not pixels. `MICRO_CONFIG` is a real open_clip
ViT small enough to train on it from random weights on a CPU in a few seconds (32-px input, a
16-token context).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from searchmm import ModelSpec

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 40),
    "purple": (150, 40, 180),
    "orange": (250, 140, 20),
}
SHAPES = ("circle", "square", "triangle", "cross")
CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]
RENDER_SIZE = 64

MICRO_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def render(colour: str, shape: str, rng: np.random.Generator) -> Image.Image:
    """One shape, of random size and place, on a random dark background."""
    background = tuple(int(v) for v in rng.integers(0, 60, 3))
    image = Image.new("RGB", (RENDER_SIZE, RENDER_SIZE), background)
    draw = ImageDraw.Draw(image)
    r = float(rng.uniform(18, 28))
    cx, cy = (float(v) for v in rng.uniform(r + 2, RENDER_SIZE - 2 - r, 2))
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:
        w = r / 3
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    return image


def write_renders(folder: Path, per_class: int, seed: int) -> list[tuple[str, str]]:
    """`per_class` renders of each of the 24 classes as PNGs in `folder`: (file name, caption)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for number, (colour, shape) in enumerate(c for c in CLASSES for _ in range(per_class)):
        name = f"{colour}-{shape}-{number:04d}.png"
        render(colour, shape, rng).save(folder / name)
        rows.append((name, caption(colour, shape)))
    return rows


def write_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Rows as a .jsonl collection with the image path in `image` and the caption in `text`."""
    lines = [json.dumps({"image": name, "text": text}) for name, text in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_coco(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Rows as COCO captions JSON: one image per file name, one annotation per row."""
    names = list(dict.fromkeys(name for name, _ in rows))
    doc = {
        "images": [{"id": i, "file_name": name} for i, name in enumerate(names)],
        "annotations": [
            {"id": i, "image_id": names.index(name), "caption": text}
            for i, (name, text) in enumerate(rows)
        ],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def gallery_recall_at_1(spec: ModelSpec) -> float:
    """Text -> image Recall@1 on fresh renders, one per class, none of them trained on."""
    from searchmm.evaluation.metrics import retrieval_metrics
    from searchmm.model.loading import load_encoder

    rng = np.random.default_rng(999)
    images = [render(colour, shape, rng) for colour, shape in CLASSES]
    texts = [caption(colour, shape) for colour, shape in CLASSES]
    encoder = load_encoder(spec, "cpu")
    metrics = retrieval_metrics(
        encoder.encode_pil(images), encoder.encode_texts(texts), np.arange(len(CLASSES))
    )
    return float(metrics["image_retrieval_recall@1"])
