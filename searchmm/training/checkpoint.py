"""What a run leaves on disk: the best weights as an open_clip state_dict in `.safetensors`,
which `--pretrained FILE` loads like any checkpoint, and the state to resume from.

Every file is written atomically: a run killed while saving leaves the previous version whole.
The resume state (`<name>.resume.pt`: the last completed epoch's weights, optimizer and
schedule, history) exists only while a run is unfinished; it is loaded with torch's
`weights_only`, so it can hold nothing but tensors and plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchmm.atomicfile import atomic_write
from searchmm.errors import SearchmmError

SUFFIX = ".safetensors"


@dataclass(frozen=True)
class RunFiles:
    """The checkpoint and the files written beside it."""

    checkpoint: Path

    @classmethod
    def beside(cls, output: str | Path) -> RunFiles:
        path = Path(output).expanduser().absolute()
        if path.suffix != SUFFIX:
            raise SearchmmError(f"the output {path.name} must end with {SUFFIX}")
        if path.is_dir():
            raise SearchmmError(f"the output {path} is a folder: name a {SUFFIX} file")
        if not path.parent.is_dir():
            raise SearchmmError(f"the output's folder {path.parent} does not exist")
        return cls(path)

    def _named(self, suffix: str) -> Path:
        return self.checkpoint.with_name(self.checkpoint.name[: -len(SUFFIX)] + suffix)

    @property
    def resume(self) -> Path:
        return self._named(".resume.pt")

    @property
    def report_json(self) -> Path:
        return self._named(".report.json")

    @property
    def report_md(self) -> Path:
        return self._named(".report.md")

    @property
    def plot(self) -> Path:
        return self._named(".report.png")


def save_weights(model: Any, path: Path, metadata: dict[str, str]) -> None:
    """The model's state_dict as safetensors. Each tensor is copied to storage of its own:
    safetensors refuses tensors that share memory (tied weights), and open_clip loads strictly,
    so every key must stay."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": "pt", **metadata})
    with atomic_write(path) as f:
        f.write(data)


def save_state(path: Path, state: dict[str, Any]) -> None:
    import torch

    with atomic_write(path) as f:
        torch.save(state, f)


def load_state(path: Path) -> dict[str, Any]:
    import torch

    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SearchmmError(f"no interrupted run to resume: {path} does not exist") from None
    except Exception as exc:
        raise SearchmmError(f"cannot read the resume state {path}: {exc}") from exc
    return state


def differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The keys whose values differ (of two runs' settings)."""
    return sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k))
