"""Decoding in parallel for the local executor: a DataLoader whose workers turn bad files into
error records, so one unreadable file among a million never stops an ingest.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import torch
from PIL import Image

from searchmm.sources.files import FILE_CHANGED, file_state
from searchmm.sources.images import ImageDecodeError, load_image
from searchmm.sources.scan import image_extensions


@dataclass
class DecodedBatch:
    """A batch as the encoder wants it: pixels for the good files, reasons for the bad ones."""

    indices: list[int]
    pixels: torch.Tensor | None
    sizes: list[tuple[int, int]]
    failures: list[tuple[int, str]]


class Decoded(TypedDict):
    """One dataset item: the tensor and displayed size of a good file, or why it failed."""

    index: int
    pixels: torch.Tensor | None
    size: tuple[int, int] | None
    error: str | None


class ImageDataset(torch.utils.data.Dataset[Decoded]):
    """Decodes and preprocesses one path per item; a failure is an error item, never a raise.

    `expected` holds each file's (size, mtime_ns) as scanned: a file that no longer matches after
    decoding changed under us, and its pixels may belong to neither version (`FILE_CHANGED`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Callable[[Image.Image], torch.Tensor],
        draft_size: int | None = None,
        expected: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        image_extensions()  # registers optional openers (HEIF) in this process
        self.paths = list(paths)
        self.transform = transform
        self.draft_size = draft_size
        self.expected = list(expected) if expected is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        item: Decoded = {"index": i, "pixels": None, "size": None, "error": None}
        try:
            img, size = load_image(self.paths[i], draft_size=self.draft_size)
            pixels = self.transform(img)
            if self.expected is not None and file_state(self.paths[i]) != self.expected[i]:
                raise ImageDecodeError(FILE_CHANGED)
            item["pixels"], item["size"] = pixels, size
        except ImageDecodeError as err:
            item["error"] = str(err)
        except Exception as err:  # a transform failing on one odd image must not kill the worker
            item["error"] = f"preprocessing failed: {type(err).__name__}: {err}"
        return item


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stack the good items' tensors; keep the bad items' reasons beside them."""
    good = [
        (it["index"], it["pixels"], it["size"])
        for it in items
        if it["error"] is None and it["pixels"] is not None and it["size"] is not None
    ]
    return DecodedBatch(
        indices=[index for index, _, _ in good],
        pixels=torch.stack([pixels for _, pixels, _ in good]) if good else None,
        sizes=[(int(size[0]), int(size[1])) for _, _, size in good],
        failures=[(it["index"], it["error"]) for it in items if it["error"] is not None],
    )


def worker_init(_worker_id: int) -> None:
    """One thread per decode worker, so workers do not steal the model's cores.

    Ctrl-C reaches the whole process group: only the main process decides when to stop (after
    the batch in flight), so a worker must not die of it half way through that batch.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
    image_extensions()  # a spawned worker must register optional openers (HEIF) itself


def ramp_up_batches(n: int, batch_size: int) -> list[list[int]]:
    """Index batches whose first is a quarter size: the model starts after a few decodes, not 32."""
    batches, start, size = [], 0, max(1, batch_size // 4)
    while start < n:
        batches.append(list(range(start, min(n, start + size))))
        start, size = start + size, batch_size
    return batches


def image_loader(
    paths: Sequence[str],
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    batch_size: int,
    workers: int,
    draft_size: int | None = None,
    expected: Sequence[tuple[int, int]] | None = None,
) -> torch.utils.data.DataLoader[Decoded]:
    """Batches of `DecodedBatch`, in path order, decoded by `workers` processes (0: inline)."""
    extra: dict[str, Any] = {"prefetch_factor": 4} if workers > 0 else {}
    return torch.utils.data.DataLoader(
        ImageDataset(paths, transform, draft_size, expected),
        batch_sampler=ramp_up_batches(len(paths), batch_size),
        num_workers=workers,
        collate_fn=collate_decoded,
        worker_init_fn=worker_init,
        persistent_workers=False,
        **extra,
    )
