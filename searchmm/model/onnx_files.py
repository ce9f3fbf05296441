"""A store's ONNX export on disk: where it lives, what its manifest says, whether to use it.

    <index dir>/onnx-<key>/manifest.json, text.onnx, image.onnx, bpe_simple_vocab_16e6.txt.gz,
                          text.onnx.data, image.onnx.data (the weights, beside the graphs),
                          bpe_tables.marshal (the vocabulary's tables, for a fast start)
    <index dir>/onnx-<key>.rejected     why an export was not made or did not pass its checks
    <cache dir>/onnx/onnx-<key>/        the machine's copy (hard links), for other stores

The key is a hash of the model's identity, so a store whose model changes never reads another
model's export. A new store of a model that another store exported uses the machine's copy, so
neither its ingest nor its queries need torch. Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchmm.model.clip_tokenizer import TABLES_FILENAME, ClipTokenizer
from searchmm.model.pixels import PixelRecipe
from searchmm.model.spec import ModelSpec
from searchmm.processes import alive
from searchmm.settings import cache_dir

# Format 2 keeps each tower's weights in a file of their own beside its graph, which
# onnxruntime memory-maps: a session starts in a third of the time (format 1 embedded them).
FORMAT = 2
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
TEXT_FILE, IMAGE_FILE = "text.onnx", "image.onnx"
WEIGHTS_SUFFIX = ".data"
CLIP_BPE, HF_TOKENIZERS = "clip-bpe", "hf-tokenizers"  # what tokenizes a text


def tower_files(manifest_format: int) -> tuple[str, ...]:
    """The files of both towers in an export of this format."""
    towers = (TEXT_FILE, IMAGE_FILE)
    if manifest_format == 1:
        return towers
    return (*towers, *(name + WEIGHTS_SUFFIX for name in towers))


def export_key(spec: ModelSpec) -> str:
    identity = json.dumps(spec.identity(), sort_keys=True).encode("utf-8")
    return hashlib.blake2b(identity, digest_size=8).hexdigest()


def export_dir(index_dir: Path, spec: ModelSpec) -> Path:
    return index_dir / f"onnx-{export_key(spec)}"


def rejected_path(index_dir: Path, spec: ModelSpec) -> Path:
    return index_dir / f"onnx-{export_key(spec)}.rejected"


@dataclass(frozen=True)
class OnnxManifest:
    """What an export holds and how it was checked against the torch model it came from."""

    identity: dict[str, Any]
    dim: int
    context_length: int
    char_limit: int  # texts are cut to this many characters before tokenizing, as torch's are
    vocab: str  # the tokenizer's file beside the manifest: CLIP's BPE vocabulary, or HF's
    pixels: PixelRecipe
    export_s: float
    bytes: int
    checks: dict[str, float] = field(default_factory=dict)
    software: dict[str, str] = field(default_factory=dict)
    tokenizer: str = CLIP_BPE  # or HF_TOKENIZERS: which of the two `vocab` is
    clean: str = "lower"  # open_clip's text cleaning before an HF tokenizer
    sep_id: int | None = None  # the separator id an HF tokenizer's output has zeroed
    text_trim: bool = False  # the text tower takes any number of tokens: send no padding
    format: int = FORMAT

    @property
    def english_only(self) -> bool:
        return self.tokenizer == CLIP_BPE

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "identity": self.identity,
            "dim": self.dim,
            "context_length": self.context_length,
            "char_limit": self.char_limit,
            "vocab": self.vocab,
            "pixels": self.pixels.to_json(),
            "export_s": self.export_s,
            "bytes": self.bytes,
            "checks": self.checks,
            "software": self.software,
            "tokenizer": self.tokenizer,
            "clean": self.clean,
            "sep_id": self.sep_id,
            "text_trim": self.text_trim,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OnnxManifest:
        return cls(
            identity=dict(data["identity"]),
            dim=int(data["dim"]),
            context_length=int(data["context_length"]),
            char_limit=int(data["char_limit"]),
            vocab=str(data["vocab"]),
            pixels=PixelRecipe.from_json(data["pixels"]),
            export_s=float(data["export_s"]),
            bytes=int(data["bytes"]),
            checks={str(k): float(v) for k, v in data.get("checks", {}).items()},
            software={str(k): str(v) for k, v in data.get("software", {}).items()},
            tokenizer=str(data.get("tokenizer", CLIP_BPE)),
            clean=str(data.get("clean", "lower")),
            sep_id=None if data.get("sep_id") is None else int(data["sep_id"]),
            text_trim=bool(data.get("text_trim", False)),
            format=int(data["format"]),
        )


def temp_dir(index_dir: Path, spec: ModelSpec) -> Path:
    """Where this process builds an export before renaming it into place."""
    return index_dir / f"onnx-{export_key(spec)}.tmp-{os.getpid()}"


def remove_dead_temps(index_dir: Path) -> None:
    """Remove the half-made exports of processes that died making them (a live one's stay)."""
    for folder in index_dir.glob("onnx-*.tmp-*"):
        pid = folder.name.rpartition("-")[2]
        if pid.isdigit() and not alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def find_export(index_dir: Path, spec: ModelSpec) -> tuple[Path, OnnxManifest] | None:
    """The store's verified export for this model, or None (missing, unreadable, another model).
    Only a complete export has a manifest: it is written last, then the folder renamed."""
    folder = export_dir(index_dir, spec)
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        manifest = OnnxManifest.from_json(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.format not in READABLE_FORMATS or manifest.identity != spec.identity():
        return None
    if not all((folder / n).is_file() for n in (*tower_files(manifest.format), manifest.vocab)):
        return None
    return folder, manifest


def shared_root() -> Path:
    """Where the machine keeps one export per model, for every store of that model."""
    return cache_dir() / "onnx"


def locate_export(index_dir: Path, spec: ModelSpec) -> tuple[Path, OnnxManifest] | None:
    """The store's own verified export, else the machine's one of the same model."""
    return find_export(index_dir, spec) or find_export(shared_root(), spec)


def share_export(index_dir: Path, spec: ModelSpec) -> None:
    """Offer the store's export to other stores: hard links, so it costs no disk."""
    if find_export(index_dir, spec) is not None and find_export(shared_root(), spec) is None:
        remove_dead_temps(shared_root())
        _link_into(shared_root(), export_dir(index_dir, spec), spec)


def adopt_export(index_dir: Path, spec: ModelSpec) -> None:
    """Give a store without an export of its own the machine's one (hard links)."""
    found = find_export(shared_root(), spec)
    if found is not None and find_export(index_dir, spec) is None:
        _link_into(index_dir, found[0], spec)


def _link_into(root: Path, source: Path, spec: ModelSpec) -> None:
    """Link `source`'s files into `root`'s export folder, made whole or not at all. Best effort:
    on another file system (no hard links) the store reads the machine's export instead."""
    tmp = temp_dir(root, spec)
    with contextlib.suppress(OSError):
        tmp.mkdir(parents=True)
        try:
            for path in source.iterdir():
                os.link(path, tmp / path.name)
            tmp.rename(export_dir(root, spec))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def externalise_weights(graph: Path, out: Path, edit: Callable[[Any], None] | None = None) -> None:
    """Write `graph` to `out` with its weights in `out` + WEIGHTS_SUFFIX beside it (after
    `edit` has changed the loaded model in place, if given)."""
    import onnx

    model = onnx.load(str(graph))
    if edit is not None:
        edit(model)
    onnx.save_model(
        model,
        str(out),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=out.name + WEIGHTS_SUFFIX,
        size_threshold=1024,
    )


def upgrade_export(index_dir: Path, spec: ModelSpec) -> None:
    """Rewrite the store's format-1 export in the current format (no torch needed): its
    sessions then start three times faster. Best effort: on failure the old one stays."""
    found = find_export(index_dir, spec)
    if found is None or found[1].format == FORMAT:
        return
    folder, manifest = found
    tmp, old = temp_dir(index_dir, spec), index_dir / f"{folder.name}.tmp-old-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        for name in (TEXT_FILE, IMAGE_FILE):
            externalise_weights(folder / name, tmp / name)
        shutil.copyfile(folder / manifest.vocab, tmp / manifest.vocab)
        if manifest.english_only:
            ClipTokenizer(tmp / manifest.vocab).save_tables(tmp / TABLES_FILENAME)
        size = sum(p.stat().st_size for p in tmp.iterdir())
        upgraded = OnnxManifest.from_json({**manifest.to_json(), "format": FORMAT, "bytes": size})
        (tmp / MANIFEST).write_text(json.dumps(upgraded.to_json(), indent=1) + "\n")
        folder.rename(old)
        tmp.rename(folder)
    except OSError:
        if old.exists() and not folder.exists():
            old.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
