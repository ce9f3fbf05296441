"""The public Python API: an `Engine` over one index directory.

    from searchmm import Engine
    with Engine("./indexes") as engine:
        engine.ingest(["./photos"])
        for hit in engine.search_text("a cat on a couch", k=5):
            print(hit.rank, hit.score, hit.path)

A thin facade: the directory's store and indexes (`IndexDirectory`), its one model
(`ModelBinding`) and the queries (`Searcher`) each live in a module of their own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from searchmm import defaults
from searchmm.engine.directory import IndexDirectory
from searchmm.engine.model_binding import ModelBinding
from searchmm.engine.searcher import Searcher
from searchmm.engine.stats import Stats, collect_stats
from searchmm.engine.storage import StorageOptions
from searchmm.engine.writing import encoding_into
from searchmm.ingest.summary import IngestKwargs, IngestOptions, IngestSummary
from searchmm.model.backend import Backend
from searchmm.model.encoder import Encoder, QueryEncoder
from searchmm.model.spec import ModelSpec
from searchmm.search.hits import Hit
from searchmm.search.options import SearchKwargs, SearchOptions
from searchmm.search.terms import Scheme, Term
from searchmm.settings import resolve_index_dir
from searchmm.sources.scan import check_root
from searchmm.store.records import Item, StoredModel
from searchmm.vocabulary import KINDS, Kind, Target

if TYPE_CHECKING:
    from searchmm.exchange.export import ExportSummary
    from searchmm.exchange.importer import ImportSummary
    from searchmm.ingest.dataset import DatasetKwargs, DatasetSummary


class Engine:
    """One index directory: its SQLite store, its one model and its FAISS indexes.

    `model` is needed only for the first ingest or import (later the recorded model is used);
    another one for an existing store raises `ModelMismatchError`. Nothing is opened or loaded
    until a method needs it; `load_model()` loads the weights explicitly. `backend` (default
    `$SEARCHMM_BACKEND`, else auto): `auto` encodes with the model's verified ONNX export when
    there is one (for ingest, on the CPU), else torch; `onnx` only the export; `torch` only
    torch. `quick_start` suits a process that answers a query or two and exits (ONNX sessions
    start in a fraction of the time and run slower: no weight prepacking)."""

    def __init__(
        self,
        index_dir: str | os.PathLike[str] | None = None,
        *,
        model: ModelSpec | None = None,
        device: str | None = None,
        exact_threshold: int = defaults.EXACT_THRESHOLD,
        exact_filter_limit: int = defaults.EXACT_FILTER_LIMIT,
        backend: str | Backend | None = None,
        quick_start: bool = False,
        storage: StorageOptions | None = None,
    ) -> None:
        self.index_dir = resolve_index_dir(index_dir)
        self._directory = IndexDirectory(self.index_dir, exact_threshold, storage)
        self._model = ModelBinding(
            self.index_dir, model, device, Backend.resolve(backend), quick_start=quick_start
        )
        self._searcher = Searcher(self._directory, self._model, exact_filter_limit)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._directory.close()

    # -- the model -------------------------------------------------------------------------

    def model_spec(self) -> ModelSpec:
        """The store's model, or the requested (else default) one for a new store."""
        return self._model.spec(self._stored_model())

    @property
    def model_loaded(self) -> bool:
        """Whether the query encoder is loaded (asking never loads it)."""
        return self._model.loaded is not None

    def load_model(self) -> QueryEncoder:
        """Load the encoder queries use now (the first call takes seconds; later ones return it):
        onnxruntime on the store's verified export, or open_clip on torch (see `backend`)."""
        return self._model.load_query(self._stored_model())

    def _load_ingest(self, images: int = 0) -> Encoder:
        return self._model.load_ingest(self._stored_model(), images)

    def _stored_model(self) -> StoredModel | None:
        return self._directory.reads().get_model() if self._directory.exists() else None

    # -- writing ---------------------------------------------------------------------------

    def ingest(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        wait: float = 0.0,
        stop: threading.Event | None = None,
        **options: Unpack[IngestKwargs],
    ) -> IngestSummary:
        """Add new and changed files under `paths`, drop the ones that are gone, update indexes.
        `options` are `IngestOptions`' (batch size, decode workers, a Ray cluster, ...).
        Setting `stop` (from another thread, or a signal handler) ends the ingest after the
        batch in flight, which is committed; the summary then says `interrupted`."""
        options.setdefault("progress", False)
        ingest_options = IngestOptions(**options)
        for path in paths:
            check_root(path)  # a typo in a path fails before any model or store is touched
        from searchmm.ingest.pipeline import Pipeline
        from searchmm.ingest.run import IngestRun

        with encoding_into(self._directory, self._model, self._load_ingest, wait) as store:
            return Pipeline(IngestRun(store, self._load_ingest, ingest_options, stop)).run(paths)

    def ingest_dataset(
        self,
        dataset: Any,
        *,
        key_column: str,
        image_column: str | None = None,
        text_column: str | None = None,
        wait: float = 0.0,
        **options: Unpack[DatasetKwargs],
    ) -> DatasetSummary:
        """Rows of a Ray Dataset (Ray's readers: parquet, webdataset, object stores) as items
        named by `key_column`: an image column of image file bytes, a text column, or both,
        encoded on the cluster (`ingest.dataset` says how re-runs and failures go)."""
        from searchmm.ingest.dataset import Columns, ingest_rows

        columns = Columns(key_column, image_column, text_column)
        columns.check(dataset)  # before any model or store is touched
        with encoding_into(self._directory, self._model, self._load_ingest, wait) as store:
            return ingest_rows(store, self._load_ingest(), dataset, columns, **options)

    def import_embeddings(
        self,
        source: str | os.PathLike[str],
        *,
        batch_rows: int = defaults.IMPORT_BATCH_ROWS,
        wait: float = 0.0,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Vectors from clip-retrieval or `searchmm export` (`exchange.importer` says how)."""
        from searchmm.exchange.importer import import_source, prepare_import

        folder, record = prepare_import(source, self._model.requested, self._stored_model())
        with self._directory.writing(wait) as store:
            summary = import_source(store, folder, record, batch_rows=batch_rows, progress=progress)
            self._directory.sync()
        return summary

    def remove(self, paths: Sequence[str | os.PathLike[str]], *, wait: float = 0.0) -> int:
        """Forget every item stored under the given paths (files or folders); returns how many."""
        with self._directory.writing(wait) as store:
            removed = store.remove_under([os.path.abspath(os.fspath(p)) for p in paths])
            if store.get_model() is not None:
                self._directory.sync()
        return removed

    def reindex(self, index_spec: str | None = None, *, wait: float = 0.0) -> dict[Kind, str]:
        """Rebuild both indexes from the stored vectors; `index_spec`: a faiss factory string."""
        with self._directory.writing(wait), self._directory.lock:
            indexes = self._directory.indexes()
            return {kind: indexes.rebuild(kind, index_spec).spec for kind in KINDS}

    # -- reading ---------------------------------------------------------------------------

    def search(self, terms: Sequence[Term], **options: Unpack[SearchKwargs]) -> list[Hit]:
        """Search with a weighted combination of texts, images and stored items (`Term`).
        Options (`SearchOptions`): `target` ("images" or "texts"), `k`, `offset` (paging),
        `threshold` (drop hits below it), `filters` (`Filters`: k results whenever k match)."""
        return self._searcher.search(terms, SearchOptions.of(options))

    def search_text(self, text: str, **options: Unpack[SearchKwargs]) -> list[Hit]:
        return self.search([Term(Scheme.TEXT, text)], **options)

    def search_image(
        self, path: str | os.PathLike[str], **options: Unpack[SearchKwargs]
    ) -> list[Hit]:
        return self.search([Term(Scheme.IMAGE, os.fspath(path))], **options)

    def search_item(self, item_id: int, **options: Unpack[SearchKwargs]) -> list[Hit]:
        """More like this: the stored item's own vector as the query (the item itself ranks 1st)."""
        return self.search([Term(Scheme.ITEM, str(item_id))], **options)

    def search_vector(self, vector: np.ndarray, **options: Unpack[SearchKwargs]) -> list[Hit]:
        """Search with a normalised vector of the store's model (same options as `search`)."""
        return self._searcher.search_vector(vector, SearchOptions.of(options))

    def search_batch(
        self, vectors: np.ndarray, *, target: str | Target = Target.IMAGES, k: int = defaults.K
    ) -> tuple[np.ndarray, np.ndarray]:
        """Many query vectors at once: (scores (q, k), item ids (q, k)); id -1 pads past the end."""
        return self._searcher.search_batch(vectors, Target.parse(target), k)

    def duplicates(self, threshold: float = defaults.DUPES_THRESHOLD) -> list[list[Hit]]:
        """Groups of near-identical images, largest first; scores are similarity to the first."""
        return self._searcher.duplicates(threshold)

    def embeddings(self, target: str | Target = Target.IMAGES) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, vectors) of every stored embedding of a target, in id order."""
        return self._searcher.embeddings(Target.parse(target).kind)

    def items(self, target: str | Target = Target.IMAGES) -> list[Item]:
        """Every stored item of a target (searchable or failed), for callers that need more."""
        return self._directory.reads().items_of_kind(Target.parse(target).kind)

    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        """The stored items with these ids (ids that are not stored are left out)."""
        return self._searcher.items_by_id(ids)

    def stats(self) -> Stats:
        return collect_stats(self._directory)

    def export_embeddings(
        self,
        out: str | os.PathLike[str],
        *,
        shard_size: int = defaults.EXPORT_SHARD_SIZE,
        dtype: str = "float16",
    ) -> ExportSummary:
        """The stored vectors and their metadata under `out` in clip-retrieval's layout."""
        from searchmm.exchange.export import export_embeddings

        return export_embeddings(self._directory.reads(), out, shard_size=shard_size, dtype=dtype)
