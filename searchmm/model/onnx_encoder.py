"""Encoding by onnxruntime from a verified export, for queries and ingest: no torch, no
torchvision.

Each tower's session is created the first time it is needed, so a text query never reads the
image tower (and the other way round).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchmm.model.clip_tokenizer import ClipTokenizer, up_to_end
from searchmm.model.onnx_files import IMAGE_FILE, TEXT_FILE, OnnxManifest
from searchmm.model.pixels import PixelRecipe
from searchmm.model.spec import ModelSpec

if TYPE_CHECKING:
    from PIL import Image


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)


class OnnxEncoder:
    """An `Encoder` over one export folder."""

    device = "cpu"
    runtime = "onnxruntime"

    def __init__(
        self, spec: ModelSpec, folder: Path, manifest: OnnxManifest, *, quick_start: bool = False
    ) -> None:
        self.spec = spec
        self.quick_start = quick_start
        self.folder = folder
        self.manifest = manifest
        self.dim = manifest.dim
        self.image_size = manifest.pixels.size
        self._sessions: dict[str, Any] = {}
        self._tokenizer: Callable[[Sequence[str]], np.ndarray] | None = None
        self._lock = threading.Lock()

    def _session(self, name: str) -> Any:
        with self._lock:
            if name not in self._sessions:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3  # errors only: its warnings are not the user's
                if self.quick_start:  # prepacking copies every weight: 0.15 s of a 0.25 s start
                    options.add_session_config_entry("session.disable_prepacking", "1")
                self._sessions[name] = onnxruntime.InferenceSession(
                    str(self.folder / name), options, providers=["CPUExecutionProvider"]
                )
            return self._sessions[name]

    @property
    def english_only(self) -> bool:
        return self.manifest.english_only

    def tokenizer(self) -> Callable[[Sequence[str]], np.ndarray]:
        """CLIP's BPE, or the model's Hugging Face tokenizer (without transformers)."""
        with self._lock:
            if self._tokenizer is None:
                vocab, manifest = self.folder / self.manifest.vocab, self.manifest
                if manifest.english_only:
                    self._tokenizer = ClipTokenizer(vocab, manifest.context_length)
                else:
                    from searchmm.model.hf_text_tokenizer import HfTextTokenizer

                    self._tokenizer = HfTextTokenizer(vocab, manifest.clean, manifest.sep_id)
            return self._tokenizer

    def text_tokens(self, texts: Sequence[str]) -> np.ndarray:
        """What the text tower is given: the token ids, up to the last end token (CLIP's highest
        id) when the tower takes any length, else padded to the context."""
        limit = self.manifest.char_limit
        tokens = self.tokenizer()([text[:limit] for text in texts])
        return up_to_end(tokens) if self.manifest.text_trim else tokens

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        (features,) = self._session(TEXT_FILE).run(None, {"input": self.text_tokens(texts)})
        return normalised(features)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.manifest.pixels(image)

    def pixel_transform(self) -> PixelRecipe:
        return self.manifest.pixels

    def pixel_recipe(self) -> PixelRecipe:
        return self.manifest.pixels

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(self.manifest.pixels.batch(list(images)))

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        (features,) = self._session(IMAGE_FILE).run(None, {"input": batch})
        return normalised(features)

    def software(self) -> dict[str, str]:
        """onnxruntime, and what made the export (open_clip, torch)."""
        import onnxruntime

        return {**self.manifest.software, "onnxruntime": str(onnxruntime.__version__)}
