"""Which weights train, with which weight decay, under which loss: open_clip's own pieces.

A few hundred pairs cannot retrain a whole tower without forgetting what it knew: freezing one
tower, or locking most of the image tower (LiT-style, with open_clip's `lock_image_tower`), keeps
the rest of the model as it was trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from searchmm.errors import SearchmmError
from searchmm.training.options import FinetuneOptions

if TYPE_CHECKING:
    import torch

# The logit scale and bias are neither tower: they train unless the whole model is frozen.
SHARED_PARAMETERS = ("logit_scale", "logit_bias")


def choose_trainable(model: Any, options: FinetuneOptions) -> None:
    """Set `requires_grad` as the options say: everything, less a frozen tower or locked layers."""
    model.requires_grad_(True)
    if options.freeze_image:
        model.visual.requires_grad_(False)
    elif options.lock_image_layers:
        layers = image_layers(model)
        if options.lock_image_layers > layers:
            raise SearchmmError(
                f"cannot lock {options.lock_image_layers} image layers: the image tower has "
                f"{layers}"
            )
        # open_clip's groups: the stem, each block (the last with the final norm), the projection
        model.lock_image_tower(unlocked_groups=layers + 1 - options.lock_image_layers)
    if options.freeze_text:
        for name, parameter in model.named_parameters():
            if not name.startswith("visual.") and name not in SHARED_PARAMETERS:
                parameter.requires_grad_(False)


def image_layers(model: Any) -> int:
    """The transformer blocks of an open_clip ViT image tower; other towers have no such list."""
    blocks = getattr(getattr(model.visual, "transformer", None), "resblocks", None)
    if blocks is None:
        raise SearchmmError(
            f"locking image layers needs an open_clip ViT image tower, not "
            f"{type(model.visual).__name__}: freeze the whole tower instead"
        )
    return len(blocks)


def train_mode(model: Any, options: FinetuneOptions) -> None:
    """Training mode, except a frozen image tower: its BatchNorm statistics (ResNet towers)
    would drift although no weight trains."""
    model.train()
    if options.freeze_image:
        model.visual.eval()


def parameter_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two AdamW groups, by open_clip's own rule: no weight decay for
    gains, biases, norms and the logit scale, decay for the rest."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if exempt or "logit_scale" in name else decay).append(parameter)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def trainable_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def contrastive_loss(model: Any) -> torch.nn.Module:
    """SigLIP's sigmoid loss for a model with a logit bias (a SigLIP model), else CLIP's."""
    from open_clip.loss import ClipLoss, SigLipLoss

    module: torch.nn.Module
    module = SigLipLoss() if getattr(model, "logit_bias", None) is not None else ClipLoss()
    return module


def train_transform(model: Any) -> Any:
    """The model's own train transform: open_clip's augmentation for the model's preprocess, as
    `create_model_and_transforms` makes it."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=True)
