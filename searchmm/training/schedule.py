"""AdamW with a linear warm-up and a cosine decay to zero, the schedule open_clip trains with
(its `cosine_lr`): the warm-up keeps the first steps, whose Adam moments are still noise, from
wrecking trained weights."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from searchmm.training.options import FinetuneOptions
from searchmm.training.towers import parameter_groups

if TYPE_CHECKING:
    import torch


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The factor of the peak rate at `step` (0-based): (step + 1) / warmup, then a half cosine."""
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay_steps) / decay_steps))


def make_optimizer(
    model: Any, options: FinetuneOptions, total_steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (betas and eps as open_clip's ViT defaults) and its
    per-step schedule."""
    import torch

    optimizer = torch.optim.AdamW(
        parameter_groups(model, options.weight_decay), lr=options.lr, betas=(0.9, 0.98), eps=1e-6
    )
    warmup = options.warmup_for(total_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup, total_steps)
    )
    return optimizer, schedule
