"""Where images are decoded and encoded: the seam between the image executor (which commits)
and the machinery that computes vectors, here in this process or on a Ray cluster.

Either way the executor receives `EncodedBatch`es: for some of the files it asked for, their
vectors or why they failed, with the seconds each stage took, so that the summary can say
which stage bounds the ingest.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from searchmm.ingest.run import IngestRun
from searchmm.model.encoder import Encoder
from searchmm.sources.scan import FileEntry


@dataclass
class EncodedBatch:
    """Vectors of the good files (rows in `indices` order) and reasons for the bad ones."""

    indices: list[int]  # positions in the list of files asked for
    vectors: np.ndarray | None
    sizes: list[tuple[int, int]]
    failures: list[tuple[int, str]]
    decode_s: float  # summed over the workers that decoded the batch
    encode_s: float

    def renumbered(self, positions: Sequence[int]) -> EncodedBatch:
        """The batch of a sub-list of the files, numbered as in the whole list."""
        self.indices = [positions[i] for i in self.indices]
        self.failures = [(positions[i], why) for i, why in self.failures]
        return self

    def without(self, done: set[int]) -> EncodedBatch:
        """The batch less the files already committed (a retried task may repeat some)."""
        if not done.intersection(self.indices) and not any(i in done for i, _ in self.failures):
            return self
        rows = [row for row, index in enumerate(self.indices) if index not in done]
        vectors = self.vectors[rows] if self.vectors is not None and rows else None
        return EncodedBatch(
            [self.indices[row] for row in rows],
            vectors,
            [self.sizes[row] for row in rows],
            [(i, why) for i, why in self.failures if i not in done],
            self.decode_s,
            self.encode_s,
        )


def encoded_batches(
    run: IngestRun, encoder: Encoder, entries: Sequence[FileEntry]
) -> Generator[EncodedBatch, None, None]:
    """The files' vectors, batch by batch, from the executor the options name. Closing the
    iterator early (a stop) cancels what was not started."""
    from searchmm.sources.images import draft_for

    options = run.options
    draft = draft_for(encoder.image_size)
    if options.ray is not None:
        from searchmm.ingest.ray_encoding import ray_batches

        return ray_batches(run, encoder, entries, draft)
    if options.gpu_decode:
        from searchmm.ingest.gpu_decoding import gpu_decode_applies

        if gpu_decode_applies(encoder, options.exact_decode):
            return _gpu_then_local(run, encoder, entries, draft)
    return _local_batches(run, encoder, entries, draft)


def _gpu_then_local(
    run: IngestRun, encoder: Encoder, entries: Sequence[FileEntry], draft: int | None
) -> Generator[EncodedBatch, None, None]:
    """JPEGs decoded on the model's GPU; then the other files, and the JPEGs the GPU way left,
    decoded by CPU workers."""
    from searchmm.ingest.gpu_decoding import gpu_jpeg_batches, split_jpegs
    from searchmm.model.encoder import TorchEncoder

    assert isinstance(encoder, TorchEncoder), "chosen by gpu_decode_applies"
    jpegs, rest = split_jpegs(entries)
    for batch, left in gpu_jpeg_batches(run, encoder, [entries[i] for i in jpegs]):
        rest += [jpegs[i] for i in left]
        yield batch.renumbered(jpegs)
    rest.sort()
    for batch in _local_batches(run, encoder, [entries[i] for i in rest], draft):
        yield batch.renumbered(rest)


def _local_batches(
    run: IngestRun, encoder: Encoder, entries: Sequence[FileEntry], draft: int | None
) -> Generator[EncodedBatch, None, None]:
    """Decode in worker processes of this machine, encode here."""
    from searchmm.sources.loader import image_batches

    options = run.options
    batches = image_batches(
        [e.path for e in entries],
        encoder.preprocess,
        batch_size=options.batch_size,
        workers=options.workers,
        draft_size=draft,
        expected=[(e.size, e.mtime_ns) for e in entries],
        exact=options.exact_decode,
    )
    try:
        for batch in batches:
            started = time.perf_counter()
            vectors = encoder.encode_images(batch.pixels) if batch.pixels is not None else None
            yield EncodedBatch(
                batch.indices,
                vectors,
                batch.sizes,
                batch.failures,
                batch.seconds,
                time.perf_counter() - started,
            )
    finally:
        batches.close()


class TextEncoding(Protocol):
    """Where the texts of an ingest are encoded: `vectors` yields one array per batch, in order."""

    def vectors(self, batches: Sequence[list[str]]) -> Iterator[np.ndarray]: ...

    def close(self) -> None: ...


class LocalTexts:
    """Texts encoded in this process, by the ingest's encoder (loaded on the first batch)."""

    def __init__(self, run: IngestRun) -> None:
        self.run = run

    def vectors(self, batches: Sequence[list[str]]) -> Iterator[np.ndarray]:
        return (self.run.load_encoder().encode_texts(texts) for texts in batches)

    def close(self) -> None:
        pass


def text_encoding(run: IngestRun) -> TextEncoding:
    """The options' place for texts: this process, or the Ray cluster the images go to."""
    if run.options.ray is not None:
        from searchmm.ingest.ray_encoding import RayTexts

        return RayTexts(run)
    return LocalTexts(run)
