"""Image-caption pairs to fine-tune on: a COCO captions JSON, or a .jsonl/.csv collection with
an image path field, read as ingest reads text collections; and the split into train and val.

The validation images are held out whole, with all their captions: a held-out caption of an
image that is trained on would measure memory, not what the model learnt. Images named but not
on disk are counted (`missing`), records without a caption or an image path are `problems`, as
ingest reports them; neither stops a run while some pairs remain.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.sources.files import display_path, file_extension
from searchmm.sources.texts import read_text_collection

COCO_IMAGE_FIELD = "file_name"  # what the text reader puts beside each COCO caption


@dataclass(frozen=True)
class PairSet:
    """Images on disk with their captions; `captions[i]` are the captions of `image_paths[i]`."""

    image_paths: list[str]
    captions: list[list[str]]
    missing: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (locator, reason)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def caption_count(self) -> int:
        return sum(len(texts) for texts in self.captions)

    def subset(self, rows: np.ndarray) -> PairSet:
        return PairSet([self.image_paths[i] for i in rows], [self.captions[i] for i in rows])

    def flat_captions(self) -> tuple[list[str], np.ndarray]:
        """Every caption and the image row it belongs to, as retrieval metrics take them."""
        texts = [text for captions in self.captions for text in captions]
        owners = np.repeat(np.arange(len(self)), [len(c) for c in self.captions])
        return texts, owners.astype(np.int64)

    def digest(self) -> str:
        """What the pairs are, so a resumed run can tell that they changed."""
        data = json.dumps([self.image_paths, self.captions], ensure_ascii=False)
        return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def read_pairs(
    images_dir: str | os.PathLike[str],
    captions_file: str | os.PathLike[str],
    *,
    text_field: str = "text",
    image_field: str | None = None,
) -> PairSet:
    """The pairs that `captions_file` names, images looked up under `images_dir` (or absolute).

    COCO captions JSON pairs each caption with its image's `file_name`; `.jsonl` and `.csv`
    records name the image in `image_field` (default `image`) beside the caption in
    `text_field`. Raises `SearchmmError` when no pair is left.
    """
    folder = Path(images_dir).expanduser().absolute()
    if not folder.is_dir():
        raise SearchmmError(f"images folder {folder} does not exist or is not a folder")
    path = os.fspath(captions_file)
    ext = file_extension(path)
    if ext == ".txt":
        raise SearchmmError(
            f"{display_path(path)}: a .txt collection names no images; use COCO captions JSON, "
            "or .jsonl/.csv with an image path field"
        )
    coco = ext == ".json"
    key = COCO_IMAGE_FIELD if coco else image_field or "image"
    collection = read_text_collection(path, text_field=text_field)
    problems = list(collection.problems)
    by_image: dict[str, list[str]] = {}
    for record in collection.records:
        named = record.metadata.get(key)
        if not isinstance(named, str) or not named.strip():
            what = "its image has no 'file_name'" if coco else f"no {key!r} field"
            problems.append((record.locator, what))
            continue
        image = os.path.normpath(folder / named.strip())  # an absolute path stays as it is
        by_image.setdefault(image, []).append(record.text)
    if not by_image:
        raise SearchmmError(f"{display_path(path)}: no image-caption pairs in it")
    present = [image for image in by_image if os.path.isfile(image)]
    missing = [image for image in by_image if not os.path.isfile(image)]
    if not present:
        raise SearchmmError(
            f"none of the {len(by_image)} images that {display_path(path)} names is in "
            f"{display_path(os.fspath(folder))} (first: {display_path(missing[0])})"
        )
    return PairSet(present, [by_image[image] for image in present], missing, problems)


def split_by_image(pairs: PairSet, val_fraction: float, seed: int) -> tuple[PairSet, PairSet]:
    """(train, val): a seeded `val_fraction` of the images, at least one when it is above 0,
    held out with all their captions. Contrastive training needs two images to train on."""
    if not 0 <= val_fraction < 1:
        raise SearchmmError(f"the val split must be at least 0 and below 1, got {val_fraction}")
    n = len(pairs)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    if n - n_val < 2:
        raise SearchmmError(
            f"a val split of {val_fraction:g} holds out {n_val} of {n} images, leaving "
            f"{n - n_val} to train on: contrastive training needs at least 2"
        )
    order = np.random.default_rng(seed).permutation(n)
    return pairs.subset(np.sort(order[n_val:])), pairs.subset(np.sort(order[:n_val]))
