"""What a fine-tuning run is asked to do, checked before any weights are loaded."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from searchmm import defaults
from searchmm.errors import SearchmmError
from searchmm.settings import default_workers

# Options that only say where or how fast a run goes: a resumed run may change them.
RUNTIME_ONLY = ("workers", "device")


@dataclass(frozen=True)
class FinetuneOptions:
    """The training recipe: AdamW with warm-up and cosine decay over `epochs`, and which weights
    train (`freeze_*` leave a whole tower as it is, `lock_image_layers` the patch embedding and
    the first N blocks of the image tower)."""

    epochs: int = defaults.FINETUNE_EPOCHS
    batch_size: int = defaults.FINETUNE_BATCH_SIZE
    lr: float = defaults.FINETUNE_LR
    weight_decay: float = defaults.FINETUNE_WEIGHT_DECAY
    warmup_steps: int | None = None  # None: FINETUNE_WARMUP_FRACTION of all steps
    freeze_image: bool = False
    freeze_text: bool = False
    lock_image_layers: int = 0
    val_split: float = defaults.FINETUNE_VAL_SPLIT
    seed: int = 0  # the split, the order of the pairs, the captions picked and augmentation
    workers: int | None = None  # decode worker processes; None: `decode_workers` decides
    device: str | None = None

    def __post_init__(self) -> None:
        """Refuse values no run can use, with one line that names the option."""
        if self.epochs < 1:
            raise SearchmmError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2:
            raise SearchmmError(
                f"batch size must be at least 2 (a pair needs others to be told apart from), "
                f"got {self.batch_size}"
            )
        if not self.lr > 0:
            raise SearchmmError(f"the learning rate must be above 0, got {self.lr}")
        if self.weight_decay < 0:
            raise SearchmmError(f"weight decay must be at least 0, got {self.weight_decay}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise SearchmmError(f"warm-up steps must be at least 0, got {self.warmup_steps}")
        if self.lock_image_layers < 0:
            raise SearchmmError(
                f"image layers to lock must be at least 0, got {self.lock_image_layers}"
            )
        if self.freeze_image and self.freeze_text:
            raise SearchmmError("both towers frozen leaves nothing to train: unfreeze one")
        if self.freeze_image and self.lock_image_layers:
            raise SearchmmError("a frozen image tower has no layers left to lock: give one")
        if self.workers is not None and self.workers < 0:
            raise SearchmmError(f"workers must be at least 0, got {self.workers}")

    def decode_workers(self, device: str) -> int:
        """The given count, else none on the CPU and half the cores on a GPU. On the CPU the
        model bounds a step, and a worker forked from a trainer whose weights change at every
        step makes the kernel copy them page by page (ViT-B-32: 3 to 8 times slower epochs); on
        a GPU the weights live on the device and decoding is what a step waits for."""
        if self.workers is not None:
            return self.workers
        return 0 if device == "cpu" else default_workers()

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return round(total_steps * defaults.FINETUNE_WARMUP_FRACTION)

    def recipe(self) -> dict[str, Any]:
        """The options a resumed run must share with the run it continues."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_ONLY}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
