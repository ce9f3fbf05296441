"""Exporting a store's model to ONNX, once, and checking it before any query relies on it.

The text and image towers are exported with torch's ONNX exporter into a temporary folder beside
the store, then checked against torch on probe inputs: token ids of the torch-free tokenizer
equal open_clip's, the torch-free pixels equal the model's transform (max abs diff <= 1e-5), and
both towers' outputs agree with torch's (cosine >= 0.99999 after normalisation). Only then is
the manifest written and the folder renamed into place. An export that fails or disagrees
leaves a `.rejected` note saying why (said once on stderr); queries then keep using torch.

A CLIP text tower (causal attention, pooled at the end-of-text token) is exported for any
number of tokens: padding after the end token cannot change its output, so a query of six
tokens runs six positions, not 77 (a tenth of the work).
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

from searchmm.model.clip_tokenizer import (
    TABLES_FILENAME,
    VOCAB_FILENAME,
    ClipTokenizer,
    up_to_end,
)
from searchmm.model.encoder import CHARS_PER_TOKEN_BOUND, TorchEncoder
from searchmm.model.hf_text_tokenizer import HF_TOKENIZER_FILE, save_hf_tokenizer
from searchmm.model.onnx_encoder import OnnxEncoder, normalised
from searchmm.model.onnx_files import (
    CLIP_BPE,
    HF_TOKENIZERS,
    IMAGE_FILE,
    MANIFEST,
    TEXT_FILE,
    WEIGHTS_SUFFIX,
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
from searchmm.model.pixels import (
    MAX_PIXEL_DIFF,
    PixelRecipe,
    UnknownTransform,
    probe_images,
    read_recipe,
    recipe_difference,
)

log = logging.getLogger("searchmm")

MIN_COSINE = 0.99999
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
        trims = _export_towers(encoder, tmp, recipe.size, _text_trims(encoder.model))
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
            text_trim=trims,
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
    try:
        return read_recipe(preprocess)
    except UnknownTransform as exc:
        raise ExportRejected(str(exc)) from exc


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


def _text_trims(model: Any) -> bool:
    """Whether the text tower is open_clip's CLIP one with causal attention and end-token
    pooling: then its output does not depend on the padding, and any length can be exported."""
    from open_clip.model import CLIP

    return (
        isinstance(model, CLIP)
        and model.text_pool_type == "argmax"
        and getattr(model, "attn_mask", None) is not None
    )


def _tower(model: Any, text: bool, trims: bool) -> Any:
    """One tower as a module of its own, so that the exporter sees a plain forward. A trimmed
    text tower is CLIP's `encode_text` on the first n positions (embeddings and causal mask
    cut to n); the export's check holds it to torch's full-length output."""
    import torch
    from open_clip.transformer import text_global_pool

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not text:
                image: torch.Tensor = self.model.encode_image(x)
                return image
            if not trims:
                full: torch.Tensor = self.model.encode_text(x)
                return full
            m, n = self.model, x.shape[1]
            cast = m.transformer.get_cast_dtype()
            h = m.token_embedding(x).to(cast) + m.positional_embedding[:n].to(cast)
            h = m.ln_final(m.transformer(h, attn_mask=m.attn_mask[:n, :n]))
            pooled: torch.Tensor = text_global_pool(h, x, m.text_pool_type)
            projection = m.text_projection
            if projection is None:
                return pooled
            out: torch.Tensor = (
                projection(pooled)
                if isinstance(projection, torch.nn.Linear)
                else pooled @ projection
            )
            return out

    return Tower().eval()


def _export_towers(encoder: TorchEncoder, folder: Path, size: int, trims: bool) -> bool:
    """Both towers into `folder`; whether the text tower takes any length (`trims`, when its
    export with a dynamic length succeeds; else it takes the full context, as torch's does)."""
    import torch

    model = encoder.model.to("cpu")
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel does not export
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if trims:
                try:
                    _export_any_length(_tower(model, True, True), encoder, folder / TEXT_FILE)
                except Exception as exc:  # the exporter's many failures: full length then
                    log.info("text tower exported at full length (%s)", type(exc).__name__)
                    trims = False
            tokens = encoder.tokenizer(["a probe", "another probe"])
            pixels = torch.zeros(2, 3, size, size)
            towers = [(IMAGE_FILE, _tower(model, False, False), pixels)]
            if not trims:
                towers.append((TEXT_FILE, _tower(model, True, False), tokens))
            for name, tower, probe in towers:
                _export_traced(tower, probe, folder / name)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        encoder.model.to(encoder.device)
    return trims


def _export_traced(tower: Any, probe: Any, out: Path) -> None:
    """torch's tracing exporter (fast, and sound for a fixed size per sample), weights beside."""
    import torch

    embedded = out.with_name(out.name + ".embedded")
    torch.onnx.export(
        tower,
        (probe,),
        str(embedded),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    externalise_weights(embedded, out)
    embedded.unlink()


def _export_any_length(tower: Any, encoder: TorchEncoder, out: Path) -> None:
    """The trimmed text tower with batch and length dynamic: torch.export's exporter (the
    tracing one fixes the attention's reshapes to the probe's length)."""
    import torch

    tokens = up_to_end(encoder.tokenizer(["a probe", "another probe"]))
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    length = torch.export.Dim("tokens", min=2, max=encoder.context_length)
    made = out.with_name(out.name + ".made")
    torch.onnx.export(
        tower,
        (tokens,),
        str(made),
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=({0: batch, 1: length},),
        opset_version=OPSET,
        dynamo=True,
        external_data=True,
        verbose=False,
    )
    externalise_weights(made, out, _gemms_as_matmuls)
    for path in (made, made.with_name(made.name + WEIGHTS_SUFFIX)):
        path.unlink(missing_ok=True)


def _gemms_as_matmuls(model: Any) -> None:
    """Gemm(x, W, b) with W transposed -> MatMul(x, W') + b, W' the transposed weights: the
    same arithmetic, but onnxruntime runs a Gemm of a few rows three times slower without
    prepacked weights, as a one-shot query runs (64 ms against 21 for seven tokens, ViT-B-32)."""
    import onnx
    from onnx import numpy_helper

    plain = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes, turned = [], set()
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Gemm" or node.input[1] not in weights or {**plain, **attrs} != plain:
            nodes.append(node)
            continue
        name = f"{node.input[1]}.transposed"
        if node.input[1] not in turned:
            turned.add(node.input[1])
            matrix = np.ascontiguousarray(numpy_helper.to_array(weights[node.input[1]]).T)
            model.graph.initializer.append(numpy_helper.from_array(matrix, name))
        if len(node.input) < 3 or not node.input[2]:
            nodes.append(onnx.helper.make_node("MatMul", [node.input[0], name], [*node.output]))
            continue
        product = f"{node.output[0]}.product"
        nodes.append(onnx.helper.make_node("MatMul", [node.input[0], name], [product]))
        nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], [*node.output]))
    used = {name for node in nodes for name in node.input}
    kept = [t for t in model.graph.initializer if t.name not in turned or t.name in used]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def check_export(encoder: TorchEncoder, onnx: OnnxEncoder) -> dict[str, float]:
    """Compare the export with torch on probe inputs; `ExportRejected` on any disagreement."""
    texts = list(PROBE_TEXTS)
    tokens = onnx.tokenizer()([t[: onnx.manifest.char_limit] for t in texts])
    expected = encoder.tokenizer([t[: onnx.manifest.char_limit] for t in texts]).numpy()
    if not np.array_equal(tokens, expected):
        raise ExportRejected("the torch-free tokenizer disagrees with open_clip's")
    images = probe_images()
    pixels = onnx.manifest.pixels.batch(images)
    pixel_diff = recipe_difference(onnx.manifest.pixels, encoder.preprocess)
    if pixel_diff > MAX_PIXEL_DIFF:
        raise ExportRejected(f"the torch-free preprocessing differs by {pixel_diff:.2g}")
    alone = np.concatenate([onnx.encode_texts([text]) for text in texts])  # each trimmed
    reference = encoder.encode_texts(texts)
    text_cos = min(_min_cosine(reference, onnx.encode_texts(texts)), _min_cosine(reference, alone))
    image_cos = _min_cosine(encoder.encode_images(pixels), onnx.encode_pil(images))
    if min(text_cos, image_cos) < MIN_COSINE:
        raise ExportRejected(f"its outputs disagree with torch (cosine {min(text_cos, image_cos)})")
    return {"text_cosine": text_cos, "image_cosine": image_cos, "pixel_max_diff": pixel_diff}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((normalised(a) * normalised(b)).sum(axis=1).min())
