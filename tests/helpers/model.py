"""Reference vectors computed with open_clip alone, to check searchmm's against."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def bare_open_clip_text_vector(config: Path, text: str) -> np.ndarray:
    """The query vector computed with open_clip alone, seeded as searchmm documents (seed 0)."""
    import open_clip
    import torch

    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(config.stem, pretrained=None)
    tokens = open_clip.get_tokenizer(config.stem)([text])
    with torch.inference_mode():
        vector = model.eval().encode_text(tokens)
    result: np.ndarray = torch.nn.functional.normalize(vector, dim=-1)[0].numpy()
    return result
