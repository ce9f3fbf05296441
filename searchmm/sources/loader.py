"""Decoding in parallel for the local executor: worker processes that turn bad files into error
records, so one unreadable file among a million never stops an ingest.

No torch here: pixels are numpy arrays whichever runtime encodes them, so an ingest that
encodes with onnxruntime never imports torch. Workers are forked (the preprocess, often a
closure, is inherited, not pickled); a few batches are decoded ahead, never the whole list.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from PIL import Image

from searchmm.errors import SearchmmError
from searchmm.sources.files import FILE_CHANGED, file_state
from searchmm.sources.images import ImageDecodeError, load_image
from searchmm.sources.scan import image_extensions

Preprocess = Callable[[Image.Image], np.ndarray]
BATCHES_AHEAD_PER_WORKER = 4
PARENT_CHECK_S = 0.5  # how soon a worker whose ingest was killed notices and exits


@dataclass
class DecodedBatch:
    """A batch as the encoder wants it: pixels for the good files, reasons for the bad ones."""

    indices: list[int]
    pixels: np.ndarray | None
    sizes: list[tuple[int, int]]
    failures: list[tuple[int, str]]
    seconds: float = 0.0  # what decoding and preprocessing took


class Decoded(TypedDict):
    """One decoded file: the pixels and displayed size of a good file, or why it failed."""

    index: int
    pixels: np.ndarray | None
    size: tuple[int, int] | None
    error: str | None


class ImageDecoder:
    """Decodes and preprocesses one path per item; a failure is an error item, never a raise.

    `expected` holds each file's (size, mtime_ns) as scanned: a file that no longer matches after
    decoding changed under us, and its pixels may belong to neither version (`FILE_CHANGED`).
    """

    def __init__(
        self,
        paths: Sequence[str],
        transform: Preprocess,
        draft_size: int | None = None,
        expected: Sequence[tuple[int, int]] | None = None,
        exact: bool = False,
    ) -> None:
        image_extensions()  # registers optional openers (HEIF) in this process
        self.paths = list(paths)
        self.transform = transform
        self.draft_size = draft_size
        self.exact = exact
        self.expected = list(expected) if expected is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Decoded:
        path = self.paths[i]

        def decode() -> tuple[Image.Image, tuple[int, int]]:
            return load_image(path, draft_size=self.draft_size, exact=self.exact)

        def unchanged() -> None:
            if self.expected is not None and file_state(path) != self.expected[i]:
                raise ImageDecodeError(FILE_CHANGED)

        return preprocessed(i, decode, self.transform, unchanged)

    def batch(self, indices: Sequence[int]) -> DecodedBatch:
        started = time.perf_counter()
        batch = collate_decoded([self[i] for i in indices])
        batch.seconds = time.perf_counter() - started
        return batch


def preprocessed(
    index: int,
    decode: Callable[[], tuple[Image.Image, tuple[int, int]]],
    transform: Preprocess,
    check: Callable[[], None] | None = None,
) -> Decoded:
    """One image decoded (`decode` raises `ImageDecodeError` with a reason) and preprocessed,
    then `check`ed; a failure is an error item, never a raise."""
    item: Decoded = {"index": index, "pixels": None, "size": None, "error": None}
    try:
        image, size = decode()
        pixels = transform(image)
        if check is not None:
            check()
        item["pixels"], item["size"] = pixels, size
    except ImageDecodeError as err:
        item["error"] = str(err)
    except Exception as err:  # a transform failing on one odd image must not kill the worker
        item["error"] = f"preprocessing failed: {type(err).__name__}: {err}"
    return item


def collate_decoded(items: list[Decoded]) -> DecodedBatch:
    """Stack the good items' pixels; keep the bad items' reasons beside them."""
    good = [
        (it["index"], it["pixels"], it["size"])
        for it in items
        if it["error"] is None and it["pixels"] is not None and it["size"] is not None
    ]
    return DecodedBatch(
        indices=[index for index, _, _ in good],
        pixels=np.stack([pixels for _, pixels, _ in good]) if good else None,
        sizes=[(int(size[0]), int(size[1])) for _, _, size in good],
        failures=[(it["index"], it["error"]) for it in items if it["error"] is not None],
    )


_worker_decoder: ImageDecoder | None = None


def _start_worker(decoder: ImageDecoder) -> None:
    """One thread per decode worker, so workers do not steal the model's cores.

    Ctrl-C reaches the whole process group: only the main process decides when to stop (after
    the batch in flight), so a worker must not die of it half way through that batch.
    """
    global _worker_decoder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    torch = sys.modules.get("torch")  # inherited from a parent encoding with torch
    if torch is not None:
        torch.set_num_threads(1)
    _worker_decoder = decoder


def _exit_with_parent(parent: int) -> None:
    """A worker of a killed ingest would wait for work forever (its siblings keep the task
    pipe open): it exits once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os._exit(0)


def _decode_in_worker(indices: list[int]) -> DecodedBatch:
    assert _worker_decoder is not None, "started by _start_worker"
    return _worker_decoder.batch(indices)


def ramp_up_batches(n: int, batch_size: int) -> list[list[int]]:
    """Index batches whose first is a quarter size: the model starts after a few decodes, not 32."""
    batches, start, size = [], 0, max(1, batch_size // 4)
    while start < n:
        batches.append(list(range(start, min(n, start + size))))
        start, size = start + size, batch_size
    return batches


def image_batches(
    paths: Sequence[str],
    transform: Preprocess,
    *,
    batch_size: int,
    workers: int,
    draft_size: int | None = None,
    expected: Sequence[tuple[int, int]] | None = None,
    exact: bool = False,
) -> Generator[DecodedBatch, None, None]:
    """`DecodedBatch`es in path order, decoded by `workers` processes (0: in this process), as
    `load_image` decodes. Closing the iterator early (a stop, Ctrl-C) cancels what was not
    started."""
    decoder = ImageDecoder(paths, transform, draft_size, expected, exact)
    batches = ramp_up_batches(len(paths), batch_size)
    if workers == 0:
        yield from (decoder.batch(indices) for indices in batches)
        return
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(decoder,)
    )
    todo = deque(batches)
    pending: deque[Future[DecodedBatch]] = deque()
    try:
        while todo or pending:
            while todo and len(pending) < workers * BATCHES_AHEAD_PER_WORKER:
                pending.append(pool.submit(_decode_in_worker, todo.popleft()))
            try:
                batch = pending.popleft().result()
            except BrokenProcessPool as exc:
                raise SearchmmError(
                    "a decode worker died (killed, or out of memory); what was committed is "
                    "kept: run the ingest again (--workers 0 decodes in the main process)"
                ) from exc
            yield batch
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
