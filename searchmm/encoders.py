"""open_clip encoders: load a model from a tag, a checkpoint, a custom config or random init.

Every failure to get weights becomes one `ModelLoadError` line that says which model, why and how
to fix it. Random initialisation is seeded, so two processes (ingest, then query) build the same
weights and produce the same vectors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from .config import DEFAULT_MODEL, DEFAULT_PRETRAINED, resolve_device
from .errors import ModelLoadError

if TYPE_CHECKING:
    import torch

RANDOM_INIT = "none"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
# The tokenizer truncates to its context (77 tokens); a token is rarely over 64 characters, so
# cutting longer texts first keeps a 1 MB line from costing seconds in ftfy and the BPE regex.
CHARS_PER_TOKEN_BOUND = 64


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an encoder: two stores with equal specs hold comparable vectors."""

    name: str = DEFAULT_MODEL
    pretrained: str = DEFAULT_PRETRAINED  # a tag, a checkpoint path, or "none" (random init)
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
                    f"--model {model} and --model-config {model_config} disagree: a custom "
                    f"architecture is named after its file ({config_name!r}); leave out --model"
                )
            model = config_name
            pretrained = pretrained or RANDOM_INIT
        name = model or DEFAULT_MODEL
        if pretrained is None:
            pretrained = _default_tag(name)
        digest = None
        if is_checkpoint_path(pretrained):
            path = Path(pretrained).expanduser()
            digest = _checkpoint_digest(path)
            pretrained = str(path.absolute())
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
    if name == DEFAULT_MODEL or name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        return DEFAULT_PRETRAINED if name == DEFAULT_MODEL else ""
    import open_clip

    if name not in open_clip.list_models():
        raise ModelLoadError(_unknown_architecture(name))
    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        raise ModelLoadError(
            f"model {name!r} has no published weights: pass --pretrained TAG|PATH|none"
        )
    return tags[0]


def _checkpoint_digest(path: Path) -> str:
    from .sources import file_digest

    if not path.is_file():
        raise ModelLoadError(f"checkpoint {path} does not exist or is not a file")
    try:
        return file_digest(str(path))
    except OSError as exc:
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc.strerror}") from exc


class Encoder:
    """A loaded open_clip model with its preprocess and tokenizer, in inference mode."""

    def __init__(
        self, spec: ModelSpec, model: Any, preprocess: Callable, tokenizer: Any, device: str
    ):
        self.spec = spec
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.context_length = int(getattr(tokenizer, "context_length", 77) or 77)
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        output_dim = getattr(model.visual, "output_dim", None)
        self.dim = int(output_dim) if output_dim else int(self.encode_texts(["probe"]).shape[1])

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Preprocessed pixels (n, 3, H, W) -> L2-normalised float32 (n, dim)."""
        import torch

        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return _normalised(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> L2-normalised float32 (n, dim); long texts are truncated by the tokenizer."""
        import torch

        limit = self.context_length * CHARS_PER_TOKEN_BOUND
        tokens = self.tokenizer([t[:limit] for t in texts])
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_text(tokens.to(self.device, non_blocking=True))
        return _normalised(features)


def _normalised(features: torch.Tensor) -> np.ndarray:
    import torch

    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return np.ascontiguousarray(features.cpu().numpy(), dtype=np.float32)


def load_encoder(spec: ModelSpec, device: str | None = None) -> Encoder:
    """Create the model, its transform and tokenizer, or raise one clear `ModelLoadError`."""
    import open_clip
    import torch

    device = resolve_device(device)
    if spec.config_json is not None:
        _register_config(spec.name, spec.config_json)
    pretrained = None if spec.is_random or spec.is_hub_model else spec.pretrained
    if pretrained and is_checkpoint_path(pretrained) and not Path(pretrained).is_file():
        raise ModelLoadError(
            f"checkpoint {pretrained} for {spec.name} is missing: restore it or pass "
            "--pretrained PATH to a copy with the same content"
        )
    if pretrained and not is_checkpoint_path(pretrained):
        _check_weights_reachable(spec)
    try:
        # Random init draws from torch's global RNG: fork it so the seed stays local.
        # open_clip and huggingface_hub log every retry and failure: our error says it once.
        with torch.random.fork_rng(devices=[]), _quiet_logging():
            torch.manual_seed(spec.seed)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=pretrained, device="cpu", weights_only=True
            )
        tokenizer = open_clip.get_tokenizer(spec.name)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(explain_load_failure(spec, exc)) from exc
    model = model.to(device).eval()
    return Encoder(spec, model, preprocess, tokenizer, device)


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _check_weights_reachable(spec: ModelSpec) -> None:
    """Fail in seconds, not after 46 s of retries, when weights are neither cached nor reachable."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.name, spec.pretrained)
    hub_path = cfg.get("hf_hub", "") if cfg else ""
    if not hub_path:
        return  # an unknown tag or a URL download: open_clip's own error is already fast
    from huggingface_hub import constants, try_to_load_from_cache

    repo_id, filename = os.path.split(hub_path)  # "org/repo/" names no file: open_clip's defaults
    names = (
        [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    )
    if filename.endswith(".bin"):
        names.insert(0, filename[: -len(".bin")] + ".safetensors")
    for name in names:
        if isinstance(try_to_load_from_cache(repo_id, name), str):
            return
    if constants.HF_HUB_OFFLINE:
        return  # open_clip fails at once offline; explain_load_failure words it
    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load {spec.describe()}: the weights are not in the Hugging Face cache and "
            f"{host} cannot be reached ({exc.strerror or exc}); run once with network access to "
            "cache them, or pass --pretrained /path/to/weights.safetensors"
        ) from exc


def _unknown_architecture(name: str) -> str:
    return (
        f"cannot load {name}: not an open_clip architecture; list them with "
        '`python -c "import open_clip; print(open_clip.list_models())"` or pass --model-config FILE'
    )


def _register_config(name: str, config_json: str) -> None:
    """open_clip finds architectures by file stem: hand it the stored config as `<name>.json`."""
    import open_clip

    if name in open_clip.list_models():
        if open_clip.get_model_config(name) != json.loads(config_json):
            raise ModelLoadError(
                f"model config {name}.json clashes with the open_clip architecture {name!r} "
                "of another shape: rename the file"
            )
        return
    with tempfile.TemporaryDirectory(prefix="searchmm-config-") as tmp:
        path = Path(tmp) / f"{name}.json"
        path.write_text(config_json, encoding="utf-8")
        open_clip.add_model_config(path)  # read at once; the registry keeps it after tmp is gone


def explain_load_failure(spec: ModelSpec, exc: BaseException) -> str:
    """Turn open_clip's and torch's many exceptions into one line that says what to do."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    what = f"cannot load {spec.describe()}"
    if "not found in built-ins" in message or "Unknown model" in message:
        return _unknown_architecture(spec.name)
    if "is not a known tag or valid file path" in message:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        known = ", ".join(tags[:6]) + (f", ... {len(tags)} in all" if len(tags) > 6 else "")
        known = known or "none published"
        return (
            f"{what}: unknown pretrained tag {spec.pretrained!r} "
            f"(known tags: {known}; or a file path, or none)"
        )
    if "Failed to download" in message or "HF Hub" in message or "hf-hub" in message.lower():
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            why = (
                "offline (HF_HUB_OFFLINE is set) and the weights are not in the Hugging Face cache"
            )
        else:
            why = "the download failed (no network, or the hub refused)"
        return (
            f"{what}: {why}; run once with network access to cache them (~/.cache/huggingface), "
            "or pass --pretrained /path/to/weights.safetensors"
        )
    if (
        "weights_only" in message
        or "Unsupported global" in message
        or "UnpicklingError" in type(exc).__name__
    ):
        return (
            f"{what}: the checkpoint needs arbitrary code to unpickle and was refused; "
            "convert it to .safetensors or a plain state_dict"
        )
    if isinstance(exc, OSError):
        return f"{what}: {exc.strerror or message}"
    if "state_dict" in message or "size mismatch" in message or "Missing key" in message:
        return f"{what}: the checkpoint does not match the {spec.name} architecture"
    return f"{what}: {message}"
