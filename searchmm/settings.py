"""Settings resolved from arguments, environment and defaults, in that order."""

from __future__ import annotations

import os
from pathlib import Path

from searchmm import defaults
from searchmm.errors import SearchmmError


def resolve_index_dir(index_dir: str | os.PathLike[str] | None = None) -> Path:
    """`--index-dir`, else `$SEARCHMM_INDEX_DIR`, else `./indexes`, as an absolute path."""
    chosen = index_dir or os.environ.get(defaults.INDEX_DIR_ENV) or defaults.INDEX_DIR
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
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise SearchmmError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return device
