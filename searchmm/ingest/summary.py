"""What an ingest is asked to do (`IngestOptions`) and what it did (`IngestSummary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from searchmm import defaults
from searchmm.errors import Hint, SearchmmError


@dataclass
class Failure:
    path: str
    reason: str
    locator: str = ""


@dataclass
class IngestSummary:
    """What an ingest did, item by item (an image file, or one record of a text file)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    renamed: int = 0
    removed: int = 0
    reused: int = 0  # new or changed items whose vector was copied from identical content
    encoded_images: int = 0
    encoded_texts: int = 0
    failed: list[Failure] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False
    encoded_with: str | None = None  # the runtime that encoded: "onnxruntime" or "torch"

    @property
    def items_per_s(self) -> float:
        encoded = self.encoded_images + self.encoded_texts
        return encoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["items_per_s"] = round(self.items_per_s, 2)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


@dataclass
class IngestOptions:
    batch_size: int = 32
    text_batch_size: int = defaults.TEXT_BATCH_SIZE
    workers: int = 0
    include_hidden: bool = False
    texts_in_folders: bool = False
    text_field: str = "text"
    progress: bool = True
    exact_decode: bool = False  # decode as the reference pipelines do (benchmarks)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise SearchmmError("need batch_size >= 1 and workers >= 0", hint=Hint.BATCH_OPTIONS)
