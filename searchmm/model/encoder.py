"""The encoder seam: what ingest and search need from a model, whatever runs it.

`TorchEncoder` (open_clip on torch) and `OnnxEncoder` (onnxruntime on a verified export, in
`onnx_encoder`, without importing torch) both serve ingest and queries. Pixels cross the seam
as numpy arrays, so decode workers never need torch.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from searchmm.model.pixels import PixelRecipe, matching_recipe
from searchmm.model.spec import ModelSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

# The tokenizer truncates to its context (77 tokens); a token is rarely over 64 characters, so
# cutting longer texts first keeps a 1 MB line from costing seconds in ftfy and the BPE regex.
CHARS_PER_TOKEN_BOUND = 64


class QueryEncoder(Protocol):
    """What a query needs: L2-normalised float32 vectors for texts and for decoded images."""

    spec: ModelSpec
    dim: int
    image_size: int
    device: str
    runtime: str  # what computes the vectors: "torch" or "onnxruntime"

    @property
    def english_only(self) -> bool:
        """Whether its tokenizer is CLIP's English BPE (other scripts become bytes)."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded RGB images, preprocessed as the model's own transform does, then encoded."""
        ...

    def software(self) -> dict[str, str]:
        """Versions of what computes the vectors, recorded with the store's model."""
        ...


class Encoder(QueryEncoder, Protocol):
    """What ingest needs besides: a preprocess that decode workers run, and batches of pixels."""

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """A decoded RGB image -> (3, H, W) float32, as the model's transform makes it."""
        ...

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed pixels (n, 3, H, W) -> L2-normalised float32 (n, dim)."""
        ...

    def pixel_transform(self) -> Callable[[Image.Image], np.ndarray]:
        """`preprocess` as an object that can be sent to other machines (no model inside)."""
        ...

    def pixel_recipe(self) -> PixelRecipe | None:
        """`preprocess` as numbers, where they reproduce it: then workers can send the cropped
        bytes and leave the normalising to the encoder. None for any other transform."""
        ...


class TransformPixels:
    """open_clip's transform, giving numpy pixels: picklable without the model it came with."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.transform(image).numpy(), dtype=np.float32)


class TorchEncoder:
    """An open_clip model on torch with its preprocess and tokenizer, in inference mode."""

    runtime = "torch"

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        device: str,
    ) -> None:
        self.spec = spec
        self.model = model
        self.transform = transform  # open_clip's own eval transform
        self.pixels = TransformPixels(transform)
        self.tokenizer = tokenizer
        self.device = device
        self.context_length = int(getattr(tokenizer, "context_length", 77) or 77)
        self.english_only = type(tokenizer).__name__ == "SimpleTokenizer"
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        output_dim = getattr(model.visual, "output_dim", None)
        self.dim = int(output_dim) if output_dim else int(self.encode_texts(["probe"]).shape[1])

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.pixels(image)

    def pixel_transform(self) -> TransformPixels:
        return self.pixels

    def pixel_recipe(self) -> PixelRecipe | None:
        return self._recipe

    @functools.cached_property
    def _recipe(self) -> PixelRecipe | None:
        return matching_recipe(self.transform, self.preprocess)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.encode_images(np.stack([self.preprocess(image) for image in images]))

    def software(self) -> dict[str, str]:
        import open_clip
        import torch

        return {"open_clip": str(open_clip.__version__), "torch": str(torch.__version__)}

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        batch = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        return self.encode_tensor(batch)

    def encode_tensor(self, pixels: torch.Tensor) -> np.ndarray:
        """`encode_images` of pixels already in a tensor (on the model's device: no copy)."""
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
