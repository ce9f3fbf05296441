"""Exporting a store's model to ONNX, once, and checking it before any query relies on it.

The text and image towers are exported with torch's ONNX exporter into a temporary folder beside
the store, then checked against torch on probe inputs: token ids of the torch-free tokenizer
equal open_clip's, the torch-free pixels equal the model's transform (max abs diff <= 1e-5), and
both towers' outputs agree with torch's (cosine >= 0.99999 after normalisation). Only then is
the manifest written and the folder renamed into place. An export that fails or disagrees
leaves a `.rejected` note saying why (said once on stderr); queries then keep using torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchmm.model.clip_tokenizer import TABLES_FILENAME, VOCAB_FILENAME, ClipTokenizer
from searchmm.model.encoder import CHARS_PER_TOKEN_BOUND, TorchEncoder
from searchmm.model.hf_text_tokenizer import HF_TOKENIZER_FILE, save_hf_tokenizer
from searchmm.model.onnx_encoder import OnnxEncoder, normalised
from searchmm.model.onnx_files import (
    CLIP_BPE,
    HF_TOKENIZERS,
    IMAGE_FILE,
    MANIFEST,
    TEXT_FILE,
    OnnxManifest,
    adopt_export,
    export_dir,
    externalise_weights,
    find_export,
    locate_export,
    rejected_path,
    share_export,
    temp_dir,
)
from searchmm.model.pixels import PixelRecipe

log = logging.getLogger("searchmm")

MIN_COSINE = 0.99999
MAX_PIXEL_DIFF = 1e-5
OPSET = 18
PROBE_TEXTS = (
    "a cat on a couch",
    "A photo of TWO dogs, running on the beach!",
    "一只猫坐在沙发上",
    "emoji 😀🐈‍⬛ and &amp; entities",
    "control\x00\x1b[31m characters\x7f",
    "<start_of_text> literal <END_OF_TEXT> tokens",
    "word " * 200,
)
PROBE_SIZES = ((640, 480), (333, 500), (224, 224), (1000, 120))


class ExportRejected(Exception):
    """The export cannot be made or does not agree with torch; the message says why."""


def ensure_export(encoder: TorchEncoder, index_dir: Path) -> OnnxEncoder | None:
    """The store's verified export: the machine's one of this model if there is one, else made
    now unless it was rejected before; then offered to the machine's other stores."""
    spec = encoder.spec
    adopt_export(index_dir, spec)
    found = locate_export(index_dir, spec)
    if found is None and not rejected_path(index_dir, spec).exists():
        try:
            export(encoder, index_dir)
        except ExportRejected as exc:
            _reject(index_dir, encoder, str(exc))
        except Exception as exc:  # the exporter's many failures: the torch path stays
            _reject(index_dir, encoder, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        found = find_export(index_dir, spec)
    if found is not None:
        share_export(index_dir, spec)
    return OnnxEncoder(spec, *found) if found else None


def _reject(index_dir: Path, encoder: TorchEncoder, reason: str) -> None:
    log.warning("the model is not exported to ONNX (%s): queries keep using torch", reason)
    with contextlib.suppress(OSError):
        note = {"identity": encoder.spec.identity(), "reason": reason}
        rejected_path(index_dir, encoder.spec).write_text(json.dumps(note) + "\n")


def export(encoder: TorchEncoder, index_dir: Path) -> OnnxManifest:
    """Export, check and move into place; raises `ExportRejected` with the reason."""
    started = time.perf_counter()
    recipe = pixel_recipe(encoder.transform)
    target, tmp = export_dir(index_dir, encoder.spec), temp_dir(index_dir, encoder.spec)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        vocab, tokenizer = _save_tokenizer(encoder, tmp)
        _export_towers(encoder, tmp, recipe.size)
        manifest = OnnxManifest(
            identity=encoder.spec.identity(),
            dim=encoder.dim,
            context_length=encoder.context_length,
            char_limit=encoder.context_length * CHARS_PER_TOKEN_BOUND,
            vocab=vocab,
            pixels=recipe,
            export_s=0.0,
            bytes=0,
            software=encoder.software(),
            **tokenizer,
        )
        checks = check_export(encoder, OnnxEncoder(encoder.spec, tmp, manifest))
        final = dataclasses.replace(
            manifest,
            checks=checks,
            bytes=sum(p.stat().st_size for p in tmp.iterdir()),
            export_s=round(time.perf_counter() - started, 2),
        )
        (tmp / MANIFEST).write_text(json.dumps(final.to_json(), indent=1) + "\n")
        if target.exists() and find_export(index_dir, encoder.spec) is None:
            shutil.rmtree(target)  # incomplete, damaged or not this model's: a cache, replaced
        try:
            tmp.rename(target)
        except OSError:
            if find_export(index_dir, encoder.spec) is None:
                raise  # not another process's export, done first: a real failure
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "exported the model to ONNX for torch-free queries: %.1f s, %.0f MB",
        final.export_s,
        final.bytes / 1e6,
    )
    return final


def pixel_recipe(preprocess: Any) -> PixelRecipe:
    """The numbers of open_clip's eval transform, or `ExportRejected` for any other transform."""
    size = interpolation = mean = std = None
    squash = False
    for step in getattr(preprocess, "transforms", [preprocess]):
        kind = type(step).__name__
        if kind == "Resize":
            sizes = [step.size] if isinstance(step.size, int) else list(step.size)
            if len(sizes) == 2 and sizes[0] == sizes[1]:
                squash = True  # both sides to the input size, as SigLIP's transform does
            elif len(sizes) != 1:
                raise ExportRejected(f"its image transform resizes images to {sizes}")
            size, interpolation = int(sizes[0]), str(step.interpolation.value)
        elif kind == "CenterCrop" and tuple(step.size) == (size, size):
            continue
        elif kind == "Normalize":
            mean, std = tuple(map(float, step.mean)), tuple(map(float, step.std))
        elif kind not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
            raise ExportRejected(f"its image transform has a {kind} step")
    if size is None or interpolation not in ("bicubic", "bilinear") or mean is None:
        raise ExportRejected(f"its image transform is not resize, crop, normalise: {preprocess}")
    if std is None or len(mean) != 3 or len(std) != 3:
        raise ExportRejected("its image transform does not normalise three channels")
    return PixelRecipe(
        int(size),
        str(interpolation),
        (mean[0], mean[1], mean[2]),
        (std[0], std[1], std[2]),
        squash=squash,
    )


def _save_tokenizer(encoder: TorchEncoder, folder: Path) -> tuple[str, dict[str, Any]]:
    """The tokenizer's file (CLIP's vocabulary and its tables, or a plain HF tokenizer.json),
    and its manifest fields: what the export's check then tokenizes with."""
    kind = type(encoder.tokenizer).__name__
    if kind == "HFTokenizer":
        out = folder / HF_TOKENIZER_FILE
        try:
            clean, sep_id = save_hf_tokenizer(encoder.tokenizer, encoder.context_length, out)
        except ValueError as exc:
            raise ExportRejected(str(exc)) from exc
        return out.name, {"tokenizer": HF_TOKENIZERS, "clean": clean, "sep_id": sep_id}
    if kind != "SimpleTokenizer":
        raise ExportRejected(f"its tokenizer ({kind}) needs torch")
    from open_clip.tokenizer import default_bpe

    shutil.copyfile(default_bpe(), folder / VOCAB_FILENAME)
    ClipTokenizer(folder / VOCAB_FILENAME).save_tables(folder / TABLES_FILENAME)
    return VOCAB_FILENAME, {"tokenizer": CLIP_BPE}


def _tower(model: Any, text: bool) -> Any:
    """One tower as a module of its own, so that the exporter sees a plain forward."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.model.encode_text(x) if text else self.model.encode_image(x)
            return out

    return Tower().eval()


def _export_towers(encoder: TorchEncoder, folder: Path, size: int) -> None:
    import torch

    model = encoder.model.to("cpu")
    tokens = encoder.tokenizer(["a probe", "another probe"])
    pixels = torch.zeros(2, 3, size, size)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not export
    try:
        for name, text, probe in ((TEXT_FILE, True, tokens), (IMAGE_FILE, False, pixels)):
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _tower(model, text),
                    (probe,),
                    str(folder / name),
                    input_names=["input"],
                    output_names=["output"],
                    dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
            embedded = folder / f"{name}.embedded"
            (folder / name).rename(embedded)
            externalise_weights(embedded, folder / name)
            embedded.unlink()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        encoder.model.to(encoder.device)


def probe_images() -> list[Image.Image]:
    """Smooth colour fields of several shapes (seeded): resizing them exercises interpolation."""
    rng = np.random.default_rng(7)
    images = []
    for width, height in PROBE_SIZES:
        small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
        images.append(image)
    return images


def check_export(encoder: TorchEncoder, onnx: OnnxEncoder) -> dict[str, float]:
    """Compare the export with torch on probe inputs; `ExportRejected` on any disagreement."""
    texts = list(PROBE_TEXTS)
    tokens = onnx.tokenizer()([t[: onnx.manifest.char_limit] for t in texts])
    expected = encoder.tokenizer([t[: onnx.manifest.char_limit] for t in texts]).numpy()
    if not np.array_equal(tokens, expected):
        raise ExportRejected("the torch-free tokenizer disagrees with open_clip's")
    images = probe_images()
    pixels = onnx.manifest.pixels.batch(images)
    reference = np.stack([encoder.preprocess(image) for image in images])
    pixel_diff = float(np.abs(pixels - reference).max())
    if pixel_diff > MAX_PIXEL_DIFF:
        raise ExportRejected(f"the torch-free preprocessing differs by {pixel_diff:.2g}")
    text_cos = _min_cosine(encoder.encode_texts(texts), onnx.encode_texts(texts))
    image_cos = _min_cosine(encoder.encode_images(pixels), onnx.encode_pil(images))
    if min(text_cos, image_cos) < MIN_COSINE:
        raise ExportRejected(f"its outputs disagree with torch (cosine {min(text_cos, image_cos)})")
    return {"text_cosine": text_cos, "image_cosine": image_cos, "pixel_max_diff": pixel_diff}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((normalised(a) * normalised(b)).sum(axis=1).min())
