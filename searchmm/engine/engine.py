"""The public Python API: an `Engine` over one index directory.

from searchmm import Engine, ModelSpec
with Engine("./indexes") as engine:
    engine.ingest(["./photos"])
    for hit in engine.search_text("a cat on a couch", k=5):
        print(hit.rank, hit.score, hit.path)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE
from searchmm.defaults import DUPES_THRESHOLD as DEFAULT_THRESHOLD
from searchmm.defaults import EXACT_THRESHOLD as DEFAULT_EXACT_THRESHOLD
from searchmm.defaults import K as DEFAULT_K
from searchmm.engine.locking import write_lock, write_lock_if_free
from searchmm.errors import Hint, ModelMismatchError, NotFoundError, SearchmmError
from searchmm.index.faisslib import preload_in_background
from searchmm.index.sync import IndexSet, index_path
from searchmm.index.vector_index import VectorIndex
from searchmm.ingest.pipeline import Pipeline
from searchmm.ingest.summary import IngestOptions, IngestSummary
from searchmm.model.encoder import Encoder
from searchmm.model.loading import load_encoder
from searchmm.model.spec import ModelSpec
from searchmm.search.dupes import duplicate_groups
from searchmm.search.filters import Filters
from searchmm.search.ranking import Hit, Page, image_vector, search_index, target_kind, text_vector
from searchmm.search.terms import Term, combine
from searchmm.settings import resolve_index_dir
from searchmm.store.database import DB_FILENAME
from searchmm.store.records import StoredModel
from searchmm.store.store import Store
from searchmm.vocabulary import KINDS, Kind


@dataclass
class Stats:
    index_dir: str
    model: dict[str, Any] | None
    items: dict[str, dict[str, int]]
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)
    store_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index_dir": self.index_dir,
            "model": self.model,
            "items": self.items,
            "indexes": self.indexes,
            "store_bytes": self.store_bytes,
        }


def _spec_from_record(record: StoredModel) -> ModelSpec:
    return ModelSpec(
        name=record.name,
        pretrained=record.pretrained,
        config_json=record.config_json,
        checkpoint_digest=record.checkpoint_digest,
        seed=record.seed,
    )


class Engine:
    """One index directory: its SQLite store, its one model and its FAISS indexes.

    `model` is needed only for the first ingest (later the recorded model is used); giving a
    different one for an existing store raises `ModelMismatchError`.
    """

    def __init__(
        self,
        index_dir: str | os.PathLike[str] | None = None,
        *,
        model: ModelSpec | None = None,
        device: str | None = None,
        exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    ) -> None:
        self.index_dir = resolve_index_dir(index_dir)
        self.requested_model = model
        self.device = device
        self.exact_threshold = exact_threshold
        self._store: Store | None = None
        self._encoder: Encoder | None = None
        self._indexes: IndexSet | None = None
        # Guards lazy loading and the in-memory indexes: catching an index up changes it in
        # place, so searches hold it too (FAISS is fast next to encoding, done outside it).
        self._lock = threading.RLock()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._indexes = None

    # -- lazily opened parts ---------------------------------------------------------------

    def _open_store(self, *, create: bool) -> Store:
        with self._lock:
            if self._store is None:
                self._store = Store(self.index_dir, create=create)
            return self._store

    @property
    def model(self) -> ModelSpec:
        """The store's model, or the requested (else default) one for a new store."""
        record = self._open_store(create=False).get_model() if self._db_exists() else None
        if record is None:
            return self.requested_model or ModelSpec()
        recorded = _spec_from_record(record)
        wanted = self.requested_model
        if wanted is not None and wanted.identity() != recorded.identity():
            raise ModelMismatchError(
                f"{self.index_dir} holds vectors of {recorded.describe()}; refusing to mix in "
                f"{wanted.describe()}",
                hint=Hint.OTHER_INDEX_DIR,
            )
        return wanted or recorded  # a requested checkpoint may have moved: same digest, new path

    @property
    def encoder(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder(self.model, self.device)
            return self._encoder

    def _db_exists(self) -> bool:
        return self._store is not None or (self.index_dir / DB_FILENAME).exists()

    def _index_set(self) -> IndexSet:
        store = self._open_store(create=False)
        if self._indexes is None:
            record = store.get_model()
            if record is None:
                raise SearchmmError(
                    f"the index at {self.index_dir} is empty", hint=Hint.INGEST_FIRST
                )
            self._indexes = IndexSet(
                store, self.index_dir, record.dim, exact_threshold=self.exact_threshold
            )
        return self._indexes

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[Store]:
        """Hold the directory's write lock (one writer at a time; readers never wait)."""
        with write_lock(self.index_dir, wait):
            yield self._open_store(create=True)

    # -- writing ---------------------------------------------------------------------------

    def ingest(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        workers: int = 0,
        include_hidden: bool = False,
        texts_in_folders: bool = False,
        text_field: str = "text",
        progress: bool = False,
        wait: float = 0.0,
        stop: threading.Event | None = None,
    ) -> IngestSummary:
        """Add new and changed files under `paths`, drop the ones that are gone, update indexes.

        Setting `stop` (from another thread, or a signal handler) ends the ingest after the
        batch in flight, which is committed; the summary then says `interrupted`.
        """
        if batch_size < 1 or workers < 0:
            raise SearchmmError("need batch_size >= 1 and workers >= 0", hint=Hint.BATCH_OPTIONS)
        options = IngestOptions(
            batch_size=batch_size,
            workers=workers,
            include_hidden=include_hidden,
            texts_in_folders=texts_in_folders,
            text_field=text_field,
            progress=progress,
        )
        from searchmm.sources.scan import check_root

        for path in paths:
            check_root(path)  # a typo in a path fails before any model or store is touched
        if not self._db_exists():
            _ = self.encoder  # weights that cannot be had leave no empty store behind
        with self.writing(wait) as store:
            self._record_model(store)
            summary = Pipeline(store, lambda: self.encoder, options, stop).run(paths)
            self._sync_indexes()
        return summary

    def _record_model(self, store: Store) -> None:
        spec = self.model  # refuses a different model before anything is written
        record = store.get_model()
        if record is None:
            import open_clip
            import torch

            store.set_model(
                StoredModel(
                    id=1,
                    name=spec.name,
                    pretrained=spec.pretrained,
                    config_json=spec.config_json,
                    checkpoint_digest=spec.checkpoint_digest,
                    seed=spec.seed,
                    dim=self.encoder.dim,
                    software={"open_clip": open_clip.__version__, "torch": torch.__version__},
                )
            )
        elif spec.pretrained != record.pretrained:
            # the checkpoint moved: remember where
            store.set_model(dataclasses.replace(record, pretrained=spec.pretrained))

    def _sync_indexes(self) -> None:
        with self._lock:
            indexes = self._index_set()
            for kind in KINDS:
                indexes.get(kind, persist=True)

    def remove(self, paths: Sequence[str | os.PathLike[str]], *, wait: float = 0.0) -> int:
        """Forget every item stored under the given paths (files or folders); returns how many."""
        with self.writing(wait) as store:
            removed = store.remove_under([os.path.abspath(os.fspath(p)) for p in paths])
            if store.get_model() is not None:
                self._sync_indexes()
        return removed

    def reindex(self, index_spec: str | None = None, *, wait: float = 0.0) -> dict[str, str]:
        """Rebuild both indexes from the stored vectors; `index_spec`: a faiss factory string."""
        with self.writing(wait), self._lock:
            indexes = self._index_set()
            return {kind: indexes.rebuild(kind, index_spec).spec for kind in KINDS}

    # -- reading ---------------------------------------------------------------------------

    def search(self, terms: Sequence[Term], **options: Any) -> list[Hit]:
        """Search with a weighted combination of texts, images and stored items (`query.Term`).

        Options: `target` ("images" or "texts"), `k`, `offset` (paging), `threshold` (drop hits
        scoring below it) and `filters` (`filters.Filters`: k results whenever k items match).
        """
        needs_model = any(term.scheme != "item" for term in terms)
        return self._query(lambda: combine(terms, self._term_vector), needs_model, **options)

    def search_text(self, text: str, **options: Any) -> list[Hit]:
        return self.search([Term("text", text)], **options)

    def search_image(self, path: str | os.PathLike[str], **options: Any) -> list[Hit]:
        return self.search([Term("image", os.fspath(path))], **options)

    def search_item(self, item_id: int, **options: Any) -> list[Hit]:
        """More like this: the stored item's own vector as the query (the item itself ranks 1st)."""
        return self.search([Term("item", str(item_id))], **options)

    def search_vector(self, vector: np.ndarray, **options: Any) -> list[Hit]:
        """Search with a normalised vector of the store's model (same options as `search`)."""
        return self._query(lambda: vector, False, **options)

    def _query(
        self,
        make_vector: Callable[[], np.ndarray],
        needs_model: bool,
        *,
        target: str = "images",
        k: int = DEFAULT_K,
        offset: int = 0,
        threshold: float | None = None,
        filters: Filters | None = None,
    ) -> list[Hit]:
        page = Page(k, offset, threshold)  # bad paging fails before any model is loaded
        kind = self._searchable(target, load_model=needs_model)
        store = self._store_or_fail()
        allowed = None
        if filters is not None and filters.active:
            allowed = store.allowed_ids(kind, filters)
        vector = make_vector()
        with self._lock:
            return search_index(store, self._reader_index(kind), vector, page, allowed=allowed)

    def _term_vector(self, term: Term) -> np.ndarray:
        if term.scheme == "text":
            return text_vector(self.encoder, term.value)
        if term.scheme == "image":
            return image_vector(self.encoder, term.value)
        store = self._store_or_fail()
        record = store.get_model()
        ids, vectors = store.vectors([int(term.value)], record.dim) if record else ([], None)
        if not len(ids):
            raise NotFoundError(f"no item {term.value} with an embedding in {self.index_dir}")
        return vectors[0]

    def search_batch(
        self, vectors: np.ndarray, *, target: str = "images", k: int = DEFAULT_K
    ) -> tuple[np.ndarray, np.ndarray]:
        """Many query vectors at once: (scores (q, k), item ids (q, k)); id -1 pads past the end."""
        kind = self._searchable(target, load_model=False)
        queries = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        with self._lock:
            index = self._reader_index(kind)
            if queries.ndim != 2 or queries.shape[1] != index.dim:
                raise SearchmmError(f"queries must be (n, {index.dim}), got {queries.shape}")
            return index.search(queries, k)

    def duplicates(self, threshold: float = DEFAULT_THRESHOLD) -> list[list[Hit]]:
        """Groups of near-identical images, largest first; scores are similarity to the first."""
        ids, vectors = self.embeddings("images")
        groups = duplicate_groups(ids, vectors, threshold)
        items = self._store_or_fail().items_by_id(i for g in groups for i in g.ids)
        return [
            [
                Hit(rank, s, items[i])
                for rank, (i, s) in enumerate(zip(g.ids, g.scores, strict=True), 1)
            ]
            for g in groups
        ]

    def embeddings(self, target: str = "images") -> tuple[np.ndarray, np.ndarray]:
        """(item ids, vectors) of every stored embedding of a target, in id order."""
        kind = target_kind(target)
        store = self._store_or_fail()
        record = store.get_model()
        if record is None:
            return np.empty(0, np.int64), np.empty((0, 0), np.float32)
        _, ids, vectors = store.snapshot(kind, record.dim)
        return ids, vectors

    @property
    def store(self) -> Store:
        """The SQLite store (items and their metadata), for callers that need more than hits."""
        return self._store_or_fail()

    def _store_or_fail(self) -> Store:
        if not self._db_exists():
            raise SearchmmError(f"no index at {self.index_dir}", hint=Hint.INGEST_FIRST)
        return self._open_store(create=False)

    def _searchable(self, target: str, *, load_model: bool = True) -> Kind:
        """The kind a target searches, checked non-empty before any model is loaded."""
        kind = target_kind(target)
        if not self._store_or_fail().has_items(kind):
            raise SearchmmError(f"the index at {self.index_dir} holds no {kind}s: ingest some")
        if load_model and self._encoder is None:
            preload_in_background()  # FAISS loads while the model does
            _ = self.encoder
        return kind

    def _reader_index(self, kind: Kind) -> VectorIndex:
        """Readers catch a stale index up in memory, and save it only if no writer is busy.
        Call with `_lock` held, and search the index before releasing it."""
        indexes = self._index_set()
        index = indexes.get(kind, persist=False)
        if indexes.dirty(kind):
            with write_lock_if_free(self.index_dir) as held:
                if held:
                    indexes.save(kind)
        return index

    def stats(self) -> Stats:
        store = self._open_store(create=False)
        record = store.get_model()
        stats = Stats(str(self.index_dir), None, store.counts())
        stats.store_bytes = sum(
            p.stat().st_size for p in self.index_dir.glob(DB_FILENAME + "*") if p.is_file()
        )
        if record is None:
            return stats
        spec = _spec_from_record(record)
        stats.model = {
            "name": spec.name,
            "pretrained": spec.pretrained,
            "dim": record.dim,
            **record.software,
        }
        with self._lock:
            indexes = self._index_set()
            for kind in KINDS:
                index = indexes.get(kind, persist=False)
                path = index_path(self.index_dir, kind)
                stats.indexes[kind] = {
                    "spec": index.spec,
                    "vectors": index.ntotal,
                    "bytes": path.stat().st_size if path.exists() else 0,
                    "file": str(Path(path).name),
                }
        return stats
