"""The one model of a store: which it is, and its encoder once someone asks for it.

A store records its model on the first ingest; later the recorded model is used, and a
different one is refused before anything is written, so vectors of two models never mix.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from searchmm.errors import Hint, ModelMismatchError
from searchmm.model.encoder import Encoder
from searchmm.model.loading import load_encoder
from searchmm.model.spec import ModelSpec
from searchmm.store.records import StoredModel
from searchmm.store.store import Store


def spec_of(record: StoredModel) -> ModelSpec:
    return ModelSpec(
        name=record.name,
        pretrained=record.pretrained,
        config_json=record.config_json,
        checkpoint_digest=record.checkpoint_digest,
        seed=record.seed,
    )


class ModelBinding:
    """The requested model (if any) against the stored one, and the encoder, loaded once."""

    def __init__(self, index_dir: Path, requested: ModelSpec | None, device: str | None) -> None:
        self.index_dir = index_dir
        self.requested = requested
        self.device = device
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Encoder | None:
        """The encoder if it was loaded already (never loads it)."""
        return self._encoder

    def spec(self, stored: StoredModel | None) -> ModelSpec:
        """The store's model, or the requested (else default) one for a store without one."""
        if stored is None:
            return self.requested or ModelSpec()
        recorded = spec_of(stored)
        wanted = self.requested
        if wanted is not None and wanted.identity() != recorded.identity():
            raise ModelMismatchError(
                f"{self.index_dir} holds vectors of {recorded.describe()}; refusing to mix in "
                f"{wanted.describe()}",
                hint=Hint.OTHER_INDEX_DIR,
            )
        return wanted or recorded  # a requested checkpoint may have moved: same digest, new path

    def load(self, stored: StoredModel | None) -> Encoder:
        """Load the model's weights (seconds) the first time; the same encoder afterwards."""
        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder(self.spec(stored), self.device)
            return self._encoder

    def record(self, store: Store) -> None:
        """Record the model in a new store, or where a requested checkpoint now lives.
        Refuses a different model before anything is written."""
        stored = store.get_model()
        spec = self.spec(stored)
        if stored is None:
            encoder = self.load(None)
            store.set_model(
                StoredModel(
                    id=1,
                    name=spec.name,
                    pretrained=spec.pretrained,
                    config_json=spec.config_json,
                    checkpoint_digest=spec.checkpoint_digest,
                    seed=spec.seed,
                    dim=encoder.dim,
                    software=encoder.software(),
                )
            )
        elif spec.pretrained != stored.pretrained:
            store.set_model(dataclasses.replace(stored, pretrained=spec.pretrained))
