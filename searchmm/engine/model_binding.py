"""The one model of a store: which it is, and its encoders once someone asks for them.

A store records its model on the first ingest; later the recorded model is used, and a
different one is refused before anything is written, so vectors of two models never mix.
Queries, and ingest on the CPU, encode with the verified ONNX export of the model when the store
or the machine has one (made the first time torch is loaded for the model), else with torch:
per image onnxruntime is as fast as torch on the CPU, and it starts in a fraction of the time.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from searchmm import defaults
from searchmm.errors import Hint, ModelMismatchError, SearchmmError
from searchmm.model.backend import Backend
from searchmm.model.encoder import Encoder, QueryEncoder, TorchEncoder
from searchmm.model.spec import ModelSpec, spec_of, stored_model
from searchmm.settings import may_use_gpu
from searchmm.store.records import StoredModel

if TYPE_CHECKING:
    from searchmm.store.store import Store


class ModelBinding:
    """The requested model (if any) against the stored one, and the encoder, loaded once."""

    def __init__(
        self,
        index_dir: Path,
        requested: ModelSpec | None,
        device: str | None,
        backend: Backend = Backend.AUTO,
        *,
        quick_start: bool = False,
    ) -> None:
        self.index_dir = index_dir
        self.requested = requested
        self.device = device
        self.backend = backend
        self.quick_start = quick_start
        self._torch: TorchEncoder | None = None
        self._onnx: Encoder | None = None
        self._query: QueryEncoder | None = None
        self._lock = threading.RLock()

    @property
    def loaded(self) -> QueryEncoder | None:
        """The encoder queries use, if it was loaded already (never loads it)."""
        return self._query

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

    def load_torch(self, stored: StoredModel | None) -> TorchEncoder:
        """Load the model with open_clip (seconds) the first time; the same encoder afterwards."""
        with self._lock:
            if self._torch is None:
                from searchmm.model.loading import load_encoder

                self._torch = load_encoder(self.spec(stored), self.device)
            return self._torch

    def load_query(self, stored: StoredModel | None) -> QueryEncoder:
        """The encoder for queries: the verified ONNX export unless the backend says torch."""
        with self._lock:
            if self._query is None:
                self._query = self._query_encoder(stored)
            return self._query

    def load_ingest(self, stored: StoredModel | None, images: int = 0) -> Encoder:
        """The encoder for an ingest that will encode `images` images. On the CPU (auto), the
        verified export below `ONNX_INGEST_IMAGES`: it starts in 0.45 s where torch takes 3 s,
        and encodes 10% slower, so above that torch is faster. A loaded torch model is kept
        to; on a GPU, torch (autocast)."""
        with self._lock:
            if self._torch is not None and self.backend is not Backend.ONNX:
                return self._torch
            onnx = self.backend is Backend.ONNX or (
                self.backend is Backend.AUTO
                and not may_use_gpu(self.device)
                and images < defaults.ONNX_INGEST_IMAGES
            )
            found = self._onnx_encoder(stored) if onnx else None
            return found or self._torch_unless_onnx(stored)

    def _query_encoder(self, stored: StoredModel | None) -> QueryEncoder:
        """The export if there is a verified one (onnx, auto); else torch (torch, auto), making
        the export for the next process while the model is loaded anyway (auto)."""
        found = self._onnx_encoder(stored)
        if found is not None:
            return found
        encoder = self._torch_unless_onnx(stored)
        if stored is not None:
            self.export(encoder)
        return encoder

    def _onnx_encoder(self, stored: StoredModel | None) -> Encoder | None:
        """The store's or the machine's verified export of the model, unless the backend says
        torch; one encoder (and its sessions) for both ingest and queries."""
        if self.backend is Backend.TORCH:
            return None
        if self._onnx is None:
            from searchmm.model.onnx_files import locate_export

            spec = self.spec(stored)
            found = locate_export(self.index_dir, spec)
            if found is not None:
                from searchmm.model.onnx_encoder import OnnxEncoder

                self._onnx = OnnxEncoder(spec, *found, quick_start=self.quick_start)
        return self._onnx

    def _torch_unless_onnx(self, stored: StoredModel | None) -> TorchEncoder:
        if self.backend is Backend.ONNX:
            raise SearchmmError(
                f"there is no verified ONNX export of {self.spec(stored).describe()} yet",
                hint=Hint.USE_TORCH_BACKEND,
            )
        return self.load_torch(stored)

    def export(self, encoder: TorchEncoder) -> QueryEncoder | None:
        """Make the store's ONNX export if it has none (the torch backend never makes one)."""
        if self.backend is Backend.TORCH:
            return None
        from searchmm.model.onnx_export import ensure_export

        return ensure_export(encoder, self.index_dir)

    def keep_export(self, stored: StoredModel) -> None:
        """After an ingest: the store's own export, made with the torch model if it was loaded,
        else linked from the machine's, so the store keeps its torch-free path; an export of
        an older format is brought up to date."""
        if self.backend is Backend.TORCH:
            return
        from searchmm.model.onnx_files import adopt_export, upgrade_export

        if self._torch is not None:
            self.export(self._torch)
        else:
            adopt_export(self.index_dir, self.spec(stored))
        upgrade_export(self.index_dir, self.spec(stored))

    def record(self, store: Store) -> None:
        """Record the model in a new store, or where a requested checkpoint now lives.
        Refuses a different model before anything is written."""
        stored = store.get_model()
        spec = self.spec(stored)
        if stored is None:
            encoder = self.load_ingest(None)
            store.set_model(stored_model(spec, encoder.dim, encoder.software()))
        elif spec.pretrained != stored.pretrained:
            store.set_model(dataclasses.replace(stored, pretrained=spec.pretrained))
