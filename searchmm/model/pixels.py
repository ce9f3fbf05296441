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

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

INTERPOLATIONS = ("bicubic", "bilinear")  # names of PIL's resampling filters
MAX_PIXEL_DIFF = 1e-5  # a recipe stands in for the transform only if it agrees this closely
PROBE_SIZES = ((640, 480), (333, 500), (224, 224), (1000, 120))
Preprocess = Callable[["Image.Image"], np.ndarray]


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
        pixels: np.ndarray = self.normalise(self.crop(image)[None])[0]
        return pixels

    def crop(self, image: Image.Image) -> np.ndarray:
        """The geometric half: an image -> (size, size, 3) uint8, resized and cropped (a
        quarter of the normalised pixels' bytes, for moving between machines)."""
        image = self._resized(image.convert("RGB"))
        width, height = image.size
        top = round((height - self.size) / 2.0)  # where torchvision's CenterCrop cuts
        left = round((width - self.size) / 2.0)
        image = image.crop((left, top, left + self.size, top + self.size))
        return np.asarray(image, dtype=np.uint8)

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """The arithmetic half: (n, size, size, 3) uint8 -> (n, 3, size, size) float32."""
        scaled = crops.astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((scaled - mean) / std).transpose(0, 3, 1, 2))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) before the crop: both sides the input size when squashing, else
        the short side, the long one scaled as torchvision's Resize rounds it."""
        if self.squash:
            return self.size, self.size
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.size * long / short)
        return (self.size, new_long) if width <= height else (new_long, self.size)

    def _resized(self, image: Image.Image) -> Image.Image:
        from PIL import Image

        resample = Image.Resampling[self.interpolation.upper()]
        return image.resize(self.resized_size(*image.size), resample)

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        return np.stack([self(image) for image in images])


class UnknownTransform(ValueError):
    """A transform that is not open_clip's resize, crop, normalise; the message says why."""


def read_recipe(preprocess: Any) -> PixelRecipe:
    """The numbers of open_clip's eval transform, or `UnknownTransform` for any other."""
    size = interpolation = mean = std = None
    squash = False
    for step in getattr(preprocess, "transforms", [preprocess]):
        kind = type(step).__name__
        if kind == "Resize":
            sizes = [step.size] if isinstance(step.size, int) else list(step.size)
            if len(sizes) == 2 and sizes[0] == sizes[1]:
                squash = True  # both sides to the input size, as SigLIP's transform does
            elif len(sizes) != 1:
                raise UnknownTransform(f"its image transform resizes images to {sizes}")
            size, interpolation = int(sizes[0]), str(step.interpolation.value)
        elif kind == "CenterCrop" and tuple(step.size) == (size, size):
            continue
        elif kind == "Normalize":
            mean, std = tuple(map(float, step.mean)), tuple(map(float, step.std))
        elif kind not in ("MaybeConvertMode", "MaybeToTensor", "ToTensor", "function"):
            raise UnknownTransform(f"its image transform has a {kind} step")
    if size is None or interpolation not in INTERPOLATIONS or mean is None:
        raise UnknownTransform(f"its image transform is not resize, crop, normalise: {preprocess}")
    if std is None or len(mean) != 3 or len(std) != 3:
        raise UnknownTransform("its image transform does not normalise three channels")
    return PixelRecipe(
        int(size),
        str(interpolation),
        (mean[0], mean[1], mean[2]),
        (std[0], std[1], std[2]),
        squash=squash,
    )


def probe_images() -> list[Image.Image]:
    """Smooth colour fields of several shapes (seeded): resizing them exercises interpolation."""
    from PIL import Image

    rng = np.random.default_rng(7)
    images = []
    for width, height in PROBE_SIZES:
        small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)
        images.append(image)
    return images


def recipe_difference(recipe: PixelRecipe, preprocess: Preprocess) -> float:
    """The largest difference between the recipe's pixels and `preprocess`'s on probe images."""
    images = probe_images()
    reference = np.stack([preprocess(image) for image in images])
    return float(np.abs(recipe.batch(images) - reference).max())


def matching_recipe(transform: Any, preprocess: Preprocess) -> PixelRecipe | None:
    """The recipe of `transform` if it reproduces `preprocess` (its numpy form), else None."""
    try:
        recipe = read_recipe(transform)
    except UnknownTransform:
        return None
    return recipe if recipe_difference(recipe, preprocess) <= MAX_PIXEL_DIFF else None
