"""The eval preprocessing of CLIP models without torchvision: the tensor open_clip's transform
gives, as a numpy array.

open_clip's eval transform for a square input is: resize the short side to the input size
(bicubic or bilinear, as PIL does it) and crop the centre, or resize both sides to it (squash,
as SigLIP's), then scale bytes to [0, 1] and normalise per channel. `PixelRecipe` holds those
numbers; it is read off the model's own transform when an export is made, and checked against
it there on probe images. Pillow is imported when an image is resized, not before: a text
query never needs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

INTERPOLATIONS = ("bicubic", "bilinear")  # names of PIL's resampling filters


@dataclass(frozen=True)
class PixelRecipe:
    size: int
    interpolation: str  # one of INTERPOLATIONS
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    squash: bool = False  # both sides to `size` (SigLIP), instead of short side + centre crop

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixelRecipe:
        return cls(
            int(data["size"]),
            str(data["interpolation"]),
            (float(data["mean"][0]), float(data["mean"][1]), float(data["mean"][2])),
            (float(data["std"][0]), float(data["std"][1]), float(data["std"][2])),
            squash=bool(data.get("squash", False)),
        )

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> (3, size, size) float32, as the model's transform makes it."""
        image = self._resized(image.convert("RGB"))
        width, height = image.size
        top = round((height - self.size) / 2.0)  # where torchvision's CenterCrop cuts
        left = round((width - self.size) / 2.0)
        image = image.crop((left, top, left + self.size, top + self.size))
        scaled = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(2, 0, 1))

    def _resized(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        resample = Image.Resampling[self.interpolation.upper()]
        if self.squash:
            return image.resize((self.size, self.size), resample)
        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        new_size = (self.size, new_long) if width <= height else (new_long, self.size)
        return image.resize(new_size, resample)

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([self(image) for image in images])
