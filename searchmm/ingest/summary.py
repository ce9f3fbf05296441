"""What an ingest is asked to do (`IngestOptions`) and what it did (`IngestSummary`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from searchmm import defaults
from searchmm.errors import Hint, SearchmmError

if TYPE_CHECKING:
    from searchmm.ingest.ray_encoding import RayOptions


@dataclass
class Failure:
    path: str
    reason: str
    locator: str = ""


@dataclass
class StageTimes:
    """What encoding images took, stage by stage, so the stage that bounds an ingest shows.
    Decoding runs in parallel workers: its seconds are summed over them, its rate per worker."""

    images: int = 0
    decode_s: float = 0.0
    encode_s: float = 0.0
    commit_s: float = 0.0

    def record(self, decode_s: float, encode_s: float, commit_s: float, images: int) -> None:
        self.images += images
        self.decode_s += decode_s
        self.encode_s += encode_s
        self.commit_s += commit_s

    def rates(self) -> dict[str, float]:
        """Images per second of each stage (decode: per worker); empty before any image."""
        seconds = {"decode": self.decode_s, "encode": self.encode_s, "commit": self.commit_s}
        if not self.images:
            return {}
        return {stage: round(self.images / s, 1) for stage, s in seconds.items() if s > 0}


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
    stages: StageTimes = field(default_factory=StageTimes)

    @property
    def items_per_s(self) -> float:
        encoded = self.encoded_images + self.encoded_texts
        return encoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**summary_dict(self, self.stages), "items_per_s": round(self.items_per_s, 2)}


def summary_dict(summary: Any, stages: StageTimes) -> dict[str, Any]:
    """A summary dataclass as JSON: its fields, the stages as rates, seconds rounded."""
    out = asdict(summary)
    del out["stages"]
    out["images_per_s_by_stage"] = stages.rates()
    out["elapsed_s"] = round(out["elapsed_s"], 3)
    return out


class IngestKwargs(TypedDict, total=False):
    """`IngestOptions` as keyword arguments (`Engine.ingest`)."""

    batch_size: int
    text_batch_size: int
    workers: int
    include_hidden: bool
    texts_in_folders: bool
    text_field: str
    progress: bool
    exact_decode: bool
    ray: RayOptions | None
    gpu_decode: bool


@dataclass
class IngestOptions:
    batch_size: int = defaults.BATCH_SIZE
    text_batch_size: int = defaults.TEXT_BATCH_SIZE
    workers: int = 0
    include_hidden: bool = False
    texts_in_folders: bool = False
    text_field: str = "text"
    progress: bool = True
    # decode as the reference pipelines do (`load_image`), for benchmarks: applies to the
    # images encoded now, not to those already stored
    exact_decode: bool = False
    ray: RayOptions | None = None  # decode and encode images on a Ray cluster
    gpu_decode: bool = True  # JPEGs decoded on the GPU when the model runs on one

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.workers < 0:
            raise SearchmmError("need batch_size >= 1 and workers >= 0", hint=Hint.BATCH_OPTIONS)
