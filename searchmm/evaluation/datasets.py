"""Benchmark datasets as images + captions: COCO (official captions, Karpathy split), Flickr.

Every loader returns a `RetrievalDataset`; files on disk are only checked for existence here
(images listed but absent go to `missing`, and the caller decides whether that is an error).
Malformed annotation files raise `SearchmmError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from searchmm.errors import Hint, SearchmmError

ALL = "all"  # the split label when no split file narrows the images down
KARPATHY = "karpathy"


@dataclass(frozen=True)
class RetrievalDataset:
    """Images and captions of one split; `caption_image[i]` is the image row of caption i.

    `image_paths` lists every image of the split, including the `missing` ones (not on disk);
    `split_source` says where the split came from (`karpathy`, `flickr8k`, or `all`).
    """

    name: str
    split: str
    image_paths: list[Path]
    captions: list[str]
    caption_image: np.ndarray
    image_ids: list[Any]
    missing: list[Path] = field(default_factory=list)
    split_source: str = ALL

    def __post_init__(self) -> None:
        owner = np.asarray(self.caption_image, dtype=np.int64)
        object.__setattr__(self, "caption_image", owner)
        if len(self.image_ids) != len(self.image_paths) or owner.shape != (len(self.captions),):
            raise ValueError("image_ids/image_paths and captions/caption_image must pair up")
        if owner.size and (owner.min() < 0 or owner.max() >= len(self.image_paths)):
            raise ValueError("caption_image points outside image_paths")

    @property
    def label(self) -> str:
        """`coco-test`: names report files and the default bench index directory."""
        return f"{self.name}-{self.split}"

    def drop_images(self, rows: Iterable[int]) -> RetrievalDataset:
        """The dataset without the given image rows and their captions (rows renumbered)."""
        drop = np.zeros(len(self.image_paths), dtype=bool)
        drop[np.fromiter(rows, dtype=np.int64)] = True
        kept = np.flatnonzero(~drop)
        new_row = np.full(len(self.image_paths), -1, dtype=np.int64)
        new_row[kept] = np.arange(kept.size)
        keep_caption = ~drop[self.caption_image]
        dropped_paths = {self.image_paths[i] for i in np.flatnonzero(drop)}
        return replace(
            self,
            image_paths=[self.image_paths[i] for i in kept],
            image_ids=[self.image_ids[i] for i in kept],
            captions=[c for c, keep in zip(self.captions, keep_caption, strict=True) if keep],
            caption_image=new_row[self.caption_image[keep_caption]],
            missing=[p for p in self.missing if p not in dropped_paths],
        )

    def without_missing(self) -> RetrievalDataset:
        """Only the images found on disk, with their captions."""
        missing = set(self.missing)
        return self.drop_images(i for i, p in enumerate(self.image_paths) if p in missing)


def _read_json(path: Path, expected: str) -> Any:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except OSError as exc:
        raise SearchmmError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SearchmmError(f"{path} is not UTF-8 text; expected {expected}") from None
    except json.JSONDecodeError as exc:
        raise SearchmmError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}); expected {expected}"
        ) from None


def _list_field(doc: Any, key: str, path: Path, expected: str) -> list[Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise SearchmmError(f"{path}: no {key!r} list; expected {expected}")
    found: list[Any] = doc[key]
    return found


def _caption_text(value: Any, path: Path, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SearchmmError(f"{path}: {where} has an empty or non-string caption")
    return value.strip()


def _check_dir(images_dir: Path) -> Path:
    if not images_dir.is_dir():
        raise SearchmmError(f"images folder {images_dir} does not exist or is not a folder")
    return images_dir


def _assemble(
    name: str,
    split: str,
    split_source: str,
    images: list[tuple[Any, list[Path], list[str]]],
) -> RetrievalDataset:
    """(id, candidate paths, captions) per image -> dataset; the first existing path wins."""
    paths: list[Path] = []
    missing: list[Path] = []
    captions: list[str] = []
    owners: list[int] = []
    for row, (_, candidates, texts) in enumerate(images):
        found = next((p for p in candidates if p.is_file()), None)
        paths.append(found or candidates[0])
        if found is None:
            missing.append(candidates[0])
        captions.extend(texts)
        owners.extend([row] * len(texts))
    return RetrievalDataset(
        name=name,
        split=split,
        image_paths=paths,
        captions=captions,
        caption_image=np.asarray(owners, dtype=np.int64),
        image_ids=[image_id for image_id, _, _ in images],
        missing=missing,
        split_source=split_source,
    )


# -- COCO ---------------------------------------------------------------------------------

COCO_EXPECTED = (
    "COCO captions JSON (captions_val2014.json format): 'images' [{id, file_name}] and "
    "'annotations' [{image_id, caption}]"
)
KARPATHY_EXPECTED = (
    "a Karpathy split file (dataset_coco.json format): 'images' [{filename, split, "
    "sentences [{raw}]}]"
)


def read_coco_captions(path: Path) -> tuple[dict[Any, str], dict[Any, list[str]]]:
    """(image id -> file_name, image id -> captions in file order), ids in the file's order."""
    doc = _read_json(path, COCO_EXPECTED)
    file_names: dict[Any, str] = {}
    for position, image in enumerate(_list_field(doc, "images", path, COCO_EXPECTED)):
        image_id = image.get("id") if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if not isinstance(image_id, (int, str)) or not isinstance(file_name, str):
            raise SearchmmError(f"{path}: images[{position}] needs an 'id' and a 'file_name'")
        if image_id in file_names:
            raise SearchmmError(f"{path}: image id {image_id!r} is listed twice")
        file_names[image_id] = file_name
    captions: dict[Any, list[str]] = {image_id: [] for image_id in file_names}
    for position, ann in enumerate(_list_field(doc, "annotations", path, COCO_EXPECTED)):
        where = f"annotations[{position}]"
        image_id = ann.get("image_id") if isinstance(ann, dict) else None
        if image_id not in captions:
            raise SearchmmError(
                f"{path}: {where} refers to image_id {image_id!r}, which is not in 'images'"
            )
        captions[image_id].append(_caption_text(ann.get("caption"), path, where))
    return file_names, captions


def _karpathy_entries(path: Path, split: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The split file and its entries whose `split` is `split` (an unknown split is an error)."""
    doc = _read_json(path, KARPATHY_EXPECTED)
    entries = _list_field(doc, "images", path, KARPATHY_EXPECTED)
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise SearchmmError(f"{path}: images[{position}] has no 'filename'")
        if not isinstance(entry.get("split"), str):
            raise SearchmmError(f"{path}: images[{position}] has no 'split'")
    chosen = [e for e in entries if e["split"] == split]
    if not chosen:
        present = ", ".join(sorted({e["split"] for e in entries})) or "none"
        raise SearchmmError(f"{path}: unknown split {split!r}; the file has: {present}")
    return doc, chosen


def load_coco(
    images_dir: str | os.PathLike[str],
    captions_file: str | os.PathLike[str],
    *,
    karpathy_split: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> RetrievalDataset:
    """COCO images with every official caption; narrowed to a Karpathy split when given.

    With `karpathy_split` (dataset_coco.json), the images whose split is `split` (default
    `test`: 5,000 images) are matched to the official captions by `cocoid`, and ALL their
    official captions are used (25,010 for test), not Karpathy's sentences: that is how
    CLIP_benchmark and open_clip's published table count. Without it, every image of the
    captions file is used (split `all`). On disk an image is looked up by its official
    `file_name`, then its Karpathy `filename`, then `<filepath>/<filename>`, then the
    2017-style `<12-digit id>.jpg`.
    """
    images_dir = _check_dir(Path(images_dir))
    captions_path = Path(captions_file)
    file_names, captions = read_coco_captions(captions_path)
    if karpathy_split is None:
        if split is not None:
            raise SearchmmError(
                "a split needs a Karpathy split file (it names the splits)",
                hint=Hint.PASS_SPLIT_FILE,
            )
        images = [
            (image_id, [images_dir / file_names[image_id]], captions[image_id])
            for image_id in file_names
        ]
        return _assemble("coco", ALL, ALL, images)
    split = split or "test"
    split_path = Path(karpathy_split)
    _, entries = _karpathy_entries(split_path, split)
    chosen: list[tuple[Any, list[Path], list[str]]] = []
    absent: list[Any] = []
    for position, entry in enumerate(entries):
        cocoid = entry.get("cocoid")
        if not isinstance(cocoid, (int, str)):
            raise SearchmmError(f"{split_path}: the {split} entry #{position} has no 'cocoid'")
        if cocoid not in file_names:
            absent.append(cocoid)
            continue
        candidates = [images_dir / file_names[cocoid], images_dir / entry["filename"]]
        if isinstance(entry.get("filepath"), str):
            candidates.append(images_dir / entry["filepath"] / entry["filename"])
        if isinstance(cocoid, int):
            candidates.append(images_dir / f"{cocoid:012d}.jpg")
        chosen.append((cocoid, candidates, captions[cocoid]))
    if absent:
        raise SearchmmError(
            f"{len(absent)} of the {len(entries)} {split!r} images of {split_path.name} are not "
            f"in {captions_path.name} (e.g. cocoid {', '.join(map(str, absent[:3]))}): the "
            "Karpathy test and val images come from val2014, so use captions_val2014.json"
        )
    return _assemble("coco", split, KARPATHY, chosen)


# -- Flickr ---------------------------------------------------------------------------------


def _karpathy_name(doc: dict[str, Any], path: Path) -> str:
    """`flickr30k`, `flickr8k` or `coco`: the file's `dataset` field, else its name."""
    named = doc.get("dataset")
    if isinstance(named, str) and named:
        return named.lower()
    match = re.search(r"(flickr30k|flickr8k|coco)", path.name.lower())
    return match.group(1) if match else "flickr"


def load_karpathy(
    split_file: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    split: str = "test",
) -> RetrievalDataset:
    """A Karpathy split file with its own sentences (dataset_flickr30k.json, dataset_flickr8k.json).

    The test split of Flickr30k is 1,000 images with 5 captions each. Images are looked up as
    `<images_dir>/<filename>`, or `<images_dir>/<filepath>/<filename>` when that exists.
    """
    images_dir = _check_dir(Path(images_dir))
    path = Path(split_file)
    doc, entries = _karpathy_entries(path, split)
    images: list[tuple[Any, list[Path], list[str]]] = []
    for position, entry in enumerate(entries):
        sentences = entry.get("sentences")
        if not isinstance(sentences, list):
            raise SearchmmError(f"{path}: {entry['filename']} (#{position}) has no 'sentences'")
        texts = [
            _caption_text(s.get("raw") if isinstance(s, dict) else None, path, entry["filename"])
            for s in sentences
        ]
        candidates = [images_dir / entry["filename"]]
        if isinstance(entry.get("filepath"), str):
            candidates.insert(0, images_dir / entry["filepath"] / entry["filename"])
        images.append((entry.get("imgid", entry["filename"]), candidates, texts))
    return _assemble(_karpathy_name(doc, path), split, KARPATHY, images)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise SearchmmError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SearchmmError(f"{path} is not UTF-8 text") from None


def load_flickr8k_tokens(
    token_file: str | os.PathLike[str],
    images_dir: str | os.PathLike[str],
    *,
    test_images: str | os.PathLike[str] | None = None,
) -> RetrievalDataset:
    """Flickr8k's `Flickr8k.token.txt` (`<image>#<n>\\t<caption>`) and an image list.

    With `test_images` (`Flickr_8k.testImages.txt`, one file name a line) the split is `test`
    and holds those images in that order; captions of other images are ignored. Without it,
    every image of the token file (split `all`).
    """
    images_dir = _check_dir(Path(images_dir))
    token_path = Path(token_file)
    captions: dict[str, list[str]] = {}
    for number, line in enumerate(_read_lines(token_path), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        name, hash_sign, _ = key.strip().rpartition("#")
        if not tab or not hash_sign or not name:
            raise SearchmmError(
                f"{token_path}: line {number} is not '<image>#<n><TAB><caption>': {line[:60]!r}"
            )
        captions.setdefault(name, []).append(_caption_text(caption, token_path, f"line {number}"))
    if not captions:
        raise SearchmmError(f"{token_path}: no captions ('<image>#<n><TAB><caption>' lines)")
    if test_images is None:
        names, split = list(captions), ALL
    else:
        names = [n.strip() for n in _read_lines(Path(test_images)) if n.strip()]
        if not names:
            raise SearchmmError(f"{test_images}: no image names")
        if len(set(names)) != len(names):
            raise SearchmmError(f"{test_images}: an image is listed twice")
        split = "test"
    images = [(name, [images_dir / name], captions.get(name, [])) for name in names]
    return _assemble("flickr8k", split, "flickr8k" if test_images else ALL, images)
