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


def cache_dir() -> Path:
    """`$SEARCHMM_CACHE_DIR`, else `$XDG_CACHE_HOME/searchmm`, else `~/.cache/searchmm`."""
    chosen = os.environ.get(defaults.CACHE_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().absolute() / "searchmm"


def may_use_gpu(device: str | None) -> bool:
    """Whether `device` could mean a GPU, decided without importing torch: an explicit GPU
    device, or `auto` on a machine with an NVIDIA driver and visible devices."""
    if device not in (None, "", "auto"):
        return device != "cpu"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()


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
