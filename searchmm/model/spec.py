"""What identifies a model: `ModelSpec`, built from CLI-style options and compared by identity.

Two stores whose specs have equal identities hold comparable vectors. Nothing here imports
torch; open_clip is imported only to look up a model's default weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchmm import defaults
from searchmm.errors import Hint, ModelLoadError

if TYPE_CHECKING:
    from searchmm.store.records import StoredModel

RANDOM_INIT = "none"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an encoder: two stores with equal specs hold comparable vectors."""

    name: str = defaults.MODEL
    pretrained: str = defaults.PRETRAINED  # a tag, a checkpoint path, or "none" (random init)
    config_json: str | None = None  # a custom architecture, registered under `name`
    checkpoint_digest: str | None = None  # content hash of a local checkpoint
    seed: int = 0  # only used with random initialisation

    @classmethod
    def from_options(
        cls,
        model: str | None = None,
        pretrained: str | None = None,
        model_config: str | os.PathLike[str] | None = None,
        seed: int = 0,
    ) -> ModelSpec:
        """Build a spec from CLI-style options, filling what the user left out."""
        config_json = None
        if model_config is not None:
            config_json, config_name = _read_model_config(Path(model_config))
            if model not in (None, config_name):
                raise ModelLoadError(
                    f"model {model!r} and the custom architecture {model_config} disagree: a "
                    f"custom architecture is named after its file ({config_name!r})",
                    hint=Hint.DROP_MODEL_NAME,
                )
            model = config_name
            pretrained = pretrained or RANDOM_INIT
        name = model or defaults.MODEL
        if pretrained is None:
            pretrained = _default_tag(name)
        digest = None
        if is_checkpoint_path(pretrained):
            path = Path(pretrained).expanduser().absolute()
            digest = _checkpoint_digest(path)
            pretrained = str(path)
        return cls(name, pretrained, config_json, digest, seed)

    @property
    def is_random(self) -> bool:
        return self.pretrained.lower() == RANDOM_INIT

    @property
    def is_hub_model(self) -> bool:
        return self.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))

    def describe(self) -> str:
        if self.is_hub_model:
            return self.name
        return f"{self.name} ({self.pretrained})"

    def identity(self) -> dict[str, Any]:
        """The fields that must match for vectors to be comparable (a checkpoint by content)."""
        weights = self.checkpoint_digest or self.pretrained.lower()
        config = json.loads(self.config_json) if self.config_json else None
        return {"name": self.name, "weights": weights, "config": config, "seed": self.seed}


def spec_of(record: StoredModel) -> ModelSpec:
    """The spec of the model a store recorded."""
    return ModelSpec(
        name=record.name,
        pretrained=record.pretrained,
        config_json=record.config_json,
        checkpoint_digest=record.checkpoint_digest,
        seed=record.seed,
    )


def stored_model(spec: ModelSpec, dim: int, software: dict[str, Any]) -> StoredModel:
    """The record a new store keeps of `spec` (what `spec_of` reads back)."""
    from searchmm.store.records import StoredModel

    return StoredModel(
        id=1,
        name=spec.name,
        pretrained=spec.pretrained,
        config_json=spec.config_json,
        checkpoint_digest=spec.checkpoint_digest,
        seed=spec.seed,
        dim=dim,
        software=software,
    )


def is_checkpoint_path(pretrained: str) -> bool:
    """A `--pretrained` value naming a file rather than a tag."""
    if pretrained.lower() == RANDOM_INIT:
        return False
    return os.sep in pretrained or pretrained.endswith((".safetensors", ".bin", ".pt", ".pth"))


def _read_model_config(path: Path) -> tuple[str, str]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLoadError(f"cannot read model config {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise ModelLoadError(f"model config {path} is not valid JSON: {exc}") from exc
    cfg = cfg.get("model_cfg", cfg) if isinstance(cfg, dict) else cfg
    missing = [
        k
        for k in ("embed_dim", "vision_cfg", "text_cfg")
        if not isinstance(cfg, dict) or k not in cfg
    ]
    if missing:
        raise ModelLoadError(
            f"model config {path} is not an open_clip architecture: missing {', '.join(missing)}"
        )
    return json.dumps(cfg, sort_keys=True), path.stem


def _default_tag(name: str) -> str:
    """The default weights for a model given without `--pretrained`."""
    if name == defaults.MODEL or name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        return defaults.PRETRAINED if name == defaults.MODEL else ""
    import open_clip

    if name not in open_clip.list_models():
        raise unknown_architecture(name)
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        raise ModelLoadError(f"model {name!r} has no published weights", hint=Hint.PASS_PRETRAINED)
    return str(tags[0])


def _checkpoint_digest(path: Path) -> str:
    from searchmm.model.checkpoint_digest import checkpoint_digest

    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist or is not a file")
    try:
        return checkpoint_digest(path)
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc.strerror}") from exc


def unknown_architecture(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load {name}: not an open_clip architecture; list them with "
        '`python -c "import open_clip; print(open_clip.list_models())"`',
        hint=Hint.PASS_MODEL_CONFIG,
    )
