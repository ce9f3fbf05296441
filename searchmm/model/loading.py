"""Loading open_clip models: a tag, a checkpoint, a custom config or random init.

Every failure to get weights becomes one `ModelLoadError` line that says which model, why and how
to fix it. Random initialisation is seeded, so two processes (ingest, then query) build the same
weights and produce the same vectors. Weights that a checkpoint is about to overwrite are never
initialised (two thirds of the build time of a ViT-B-32).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from searchmm.errors import Hint, ModelLoadError
from searchmm.model.encoder import TorchEncoder
from searchmm.model.spec import ModelSpec, is_checkpoint_path, unknown_architecture
from searchmm.settings import resolve_device


def load_encoder(spec: ModelSpec, device: str | None = None) -> TorchEncoder:
    """Create the model, its transform and tokenizer, or raise one clear `ModelLoadError`."""
    import open_clip
    import torch

    device = resolve_device(device)
    if spec.config_json is not None:
        _register_config(spec.name, spec.config_json)
    pretrained = None if spec.is_random or spec.is_hub_model else spec.pretrained
    if pretrained and is_checkpoint_path(pretrained) and not Path(pretrained).is_file():
        raise ModelLoadError(
            f"checkpoint {pretrained} for {spec.name} is missing: restore it",
            hint=Hint.PASS_PRETRAINED_COPY,
        )
    if pretrained and not is_checkpoint_path(pretrained):
        _check_weights_reachable(spec)
    try:
        # Random init draws from torch's global RNG: fork it so the seed stays local.
        # open_clip and huggingface_hub log every retry and failure: our error says it once.
        # A checkpoint load is strict (every parameter overwritten); a big_vision .npz is not.
        overwritten = pretrained and not pretrained.endswith((".npz", ".npy"))
        skip_init = _no_init() if overwritten else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[]), _quiet_logging(), skip_init:
            torch.manual_seed(spec.seed)
            model, _, transform = open_clip.create_model_and_transforms(
                spec.name, pretrained=pretrained, device="cpu", weights_only=True
            )
        tokenizer = open_clip.get_tokenizer(spec.name)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise explain_load_failure(spec, exc) from exc
    model = model.to(device).eval()
    return TorchEncoder(spec, model, transform, tokenizer, device)


# torch.nn.init's in-place initialisers, which every torch module and open_clip's towers call.
_INITIALISERS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
)


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Build modules without initialising their parameters: only for a checkpoint load, which
    open_clip does strictly (every parameter overwritten, or it fails)."""
    import torch

    saved = {name: getattr(torch.nn.init, name) for name in _INITIALISERS}
    for name in _INITIALISERS:
        setattr(torch.nn.init, name, _leave_as_is)
    try:
        yield
    finally:
        for name, initialiser in saved.items():
            setattr(torch.nn.init, name, initialiser)


def _leave_as_is(tensor: Any, *_args: Any, **_kwargs: Any) -> Any:
    return tensor


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
            "cache them",
            hint=Hint.PASS_PRETRAINED_FILE,
        ) from exc


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


def explain_load_failure(spec: ModelSpec, exc: BaseException) -> ModelLoadError:
    """Turn open_clip's and torch's many exceptions into one line that says what to do."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    what = f"cannot load {spec.describe()}"
    if "not found in built-ins" in message or "Unknown model" in message:
        return unknown_architecture(spec.name)
    if "is not a known tag or valid file path" in message:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(spec.name)
        known = ", ".join(tags[:6]) + (f", ... {len(tags)} in all" if len(tags) > 6 else "")
        known = known or "none published"
        return ModelLoadError(
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
        return ModelLoadError(
            f"{what}: {why}; run once with network access to cache them (~/.cache/huggingface)",
            hint=Hint.PASS_PRETRAINED_FILE,
        )
    if (
        "weights_only" in message
        or "Unsupported global" in message
        or "UnpicklingError" in type(exc).__name__
    ):
        return ModelLoadError(
            f"{what}: the checkpoint needs arbitrary code to unpickle and was refused; "
            "convert it to .safetensors or a plain state_dict"
        )
    if isinstance(exc, OSError):
        return ModelLoadError(f"{what}: {exc.strerror or message}")
    if "state_dict" in message or "size mismatch" in message or "Missing key" in message:
        return ModelLoadError(f"{what}: the checkpoint does not match the {spec.name} architecture")
    return ModelLoadError(f"{what}: {message}")
