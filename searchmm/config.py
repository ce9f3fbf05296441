"""Settings resolved from arguments, environment and defaults, in that order."""

from __future__ import annotations

import os
from pathlib import Path

INDEX_DIR_ENV = "SEARCHMM_INDEX_DIR"
DEFAULT_INDEX_DIR = "indexes"

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

DEFAULT_BATCH_SIZE = 32
DEFAULT_K = 10
# Below this many vectors an exact IndexFlatIP is used; above it an ANN index.
DEFAULT_EXACT_THRESHOLD = 100_000


def resolve_index_dir(index_dir: str | os.PathLike[str] | None = None) -> Path:
    """`--index-dir`, else `$SEARCHMM_INDEX_DIR`, else `./indexes`, as an absolute path."""
    chosen = index_dir or os.environ.get(INDEX_DIR_ENV) or DEFAULT_INDEX_DIR
    return Path(chosen).expanduser().absolute()


def default_workers() -> int:
    """Decode workers: leave the cores to the model on small machines."""
    cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


def resolve_device(device: str | None = None) -> str:
    """`auto` (or None) picks cuda when a GPU is visible, else cpu."""
    if device in (None, "", "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:") and device != "mps":
        from .errors import SearchmmError

        raise SearchmmError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device
