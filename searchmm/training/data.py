"""Training batches: the images in a seeded order, decoded as ingest decodes them, through the
model's train transform (open_clip's augmentation), each paired with one of its captions.

One caption per image and epoch, picked at random: two captions of one image in a batch would
each count the other's image as a negative. Every epoch's order, captions and augmentation
follow from (seed, epoch) and the number of decode workers (each draws its own augmentation),
so a resumed run trains as the uninterrupted one would have.
Bad images come back as failures beside the good ones (ingest's `DecodedBatch`), never raised.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from searchmm.sources.loader import DecodedBatch, ImageDecoder, collate_decoded
from searchmm.training.pairs import PairSet

if TYPE_CHECKING:
    import torch
    from PIL import Image


def epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class NumpyTransform:
    """A torch transform whose output crosses the decode seam as numpy, as ingest's does."""

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.transform(image).numpy(), dtype=np.float32)


def _ignore_ctrl_c(_worker: int) -> None:
    """Ctrl-C reaches the whole process group: a worker dying of it would fail the next batch
    before the main process could stop between steps."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def steps_per_epoch(images: int, batch_size: int) -> int:
    """Full batches only (a short last batch has too few negatives), one when all fit in one."""
    return max(1, images // batch_size)


def captions_for_epoch(pairs: PairSet, seed: int, epoch: int) -> list[str]:
    """One caption per image, drawn for this epoch."""
    rng = np.random.default_rng([seed, epoch, 1])
    return [texts[int(rng.integers(len(texts)))] for texts in pairs.captions]


def train_batches(
    pairs: PairSet,
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    seed: int,
    epoch: int,
    batch_size: int,
    workers: int,
    draft_size: int,
) -> Iterable[DecodedBatch]:
    """This epoch's batches of pixels (bad images dropped and listed in `failures`)."""
    import torch

    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    torch.manual_seed(epoch_seed(seed, epoch))  # augmentation in this process (workers: 0)
    decoder = ImageDecoder(pairs.image_paths, NumpyTransform(transform), draft_size)
    extra: dict[str, Any] = {}
    if workers:  # forked as ingest's decode workers are; only the main process stops a run
        extra = {"multiprocessing_context": "fork", "worker_init_fn": _ignore_ctrl_c}
    loader: Iterable[DecodedBatch] = torch.utils.data.DataLoader(
        decoder,  # type: ignore[arg-type]
        batch_size=min(batch_size, len(pairs)),
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        collate_fn=collate_decoded,
        generator=generator,
        **extra,
    )
    return loader
