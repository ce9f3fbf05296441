"""What the executors of one ingest share: store, lazy encoder, options, summary, stop signal."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from searchmm.ingest.summary import IngestOptions, IngestSummary
from searchmm.model.encoder import Encoder
from searchmm.store.store import Store


class IngestRun:
    """One ingest's shared state; the encoder is loaded only when something must be encoded."""

    def __init__(
        self,
        store: Store,
        encoder: Callable[[int], Encoder],
        options: IngestOptions,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self._encoder_factory = encoder
        self.options = options
        self.summary = IngestSummary()
        self._stop = stop

    def load_encoder(self, images: int = 0) -> Encoder:
        """The model, loaded on the first call (seconds): only once something must be encoded.
        `images` (how many are to be encoded) lets the engine choose the faster runtime."""
        encoder = self._encoder_factory(images)
        self.summary.encoded_with = encoder.runtime
        return encoder

    def stopping(self) -> bool:
        """Whether to stop before the next batch (checked only where everything is committed)."""
        if self._stop is not None and self._stop.is_set():
            self.summary.interrupted = True
        return self.summary.interrupted

    def bar(self, total: int | None, desc: str, unit: str) -> tqdm[Any]:
        return tqdm(
            total=total, desc=desc, unit=unit, disable=not self.options.progress, leave=False
        )

    def dim(self) -> int:
        model = self.store.get_model()
        assert model is not None, "the engine records the model before ingesting"
        return model.dim
