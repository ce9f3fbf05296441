"""Reading an index directory: queries of weighted terms, batches of vectors, stored embeddings,
near-duplicates and the items behind hits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from searchmm import defaults
from searchmm.engine.directory import IndexDirectory
from searchmm.engine.model_binding import ModelBinding
from searchmm.errors import NotFoundError, SearchmmError
from searchmm.index.faisslib import preload_in_background
from searchmm.model.encoder import QueryEncoder
from searchmm.search.batch import search_batch
from searchmm.search.dupes import duplicate_groups
from searchmm.search.hits import Hit
from searchmm.search.language import MULTILINGUAL_HINT, mostly_non_latin
from searchmm.search.options import SearchOptions
from searchmm.search.query_vectors import image_vector, text_vector
from searchmm.search.ranking import rank
from searchmm.search.terms import Scheme, Term, combine
from searchmm.store.records import Item
from searchmm.vocabulary import Kind, Target

log = logging.getLogger("searchmm")


class Searcher:
    """Queries against one directory's store and indexes, encoding with the bound model."""

    def __init__(
        self,
        directory: IndexDirectory,
        model: ModelBinding,
        exact_filter_limit: int = defaults.EXACT_FILTER_LIMIT,
    ) -> None:
        self.directory = directory
        self.model = model
        self.exact_filter_limit = exact_filter_limit
        self._hinted = False

    def encoder(self) -> QueryEncoder:
        """The query encoder; once loaded, a query reads nothing to get it."""
        loaded = self.model.loaded
        return loaded or self.model.load_query(self.directory.reads().get_model())

    def search(self, terms: Sequence[Term], options: SearchOptions) -> list[Hit]:
        """The weighted combination of the terms' vectors, ranked (see `search_vector`)."""
        needs_model = any(term.scheme.needs_model for term in terms)
        return self._query(lambda: combine(terms, self._term_vector), needs_model, options)

    def search_vector(self, vector: np.ndarray, options: SearchOptions) -> list[Hit]:
        return self._query(lambda: vector, False, options)

    def _query(
        self, make_vector: Callable[[], np.ndarray], needs_model: bool, options: SearchOptions
    ) -> list[Hit]:
        warm = self.model.loaded is not None  # the index's own count then says if it is empty
        if not warm:
            self._check_searchable(options.kind, load_model=needs_model)
        store = self.directory.reads()
        allowed = None
        if options.filters is not None and options.filters.active:
            allowed = store.allowed_ids(options.kind, options.filters)
        vector = make_vector()
        with self.directory.lock:
            index = self.directory.reader_index(options.kind)
            if warm and index.ntotal == 0:
                raise self._nothing_to_search(options.kind)
            limit = self.exact_filter_limit
            return rank(store, index, vector, options, allowed=allowed, exact_filter_limit=limit)

    def _term_vector(self, term: Term) -> np.ndarray:
        if term.scheme == Scheme.TEXT:
            encoder = self.encoder()
            if encoder.english_only and not self._hinted and mostly_non_latin(term.value):
                self._hinted = True  # once: a server must not repeat it on every query
                log.warning(MULTILINGUAL_HINT.format(model=encoder.spec.name))
            return text_vector(encoder, term.value)
        if term.scheme == Scheme.IMAGE:
            return image_vector(self.encoder(), term.value)
        store = self.directory.reads()
        stored = store.get_model()
        if stored is not None:
            ids, vectors = store.vectors([int(term.value)], stored.dim)
            if len(ids):
                return np.asarray(vectors[0], dtype=np.float32)
        raise NotFoundError(f"no item {term.value} with an embedding in {self.directory.path}")

    def search_batch(
        self, vectors: np.ndarray, target: Target, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Many query vectors at once: (scores (q, k), item ids (q, k)); id -1 pads past the end."""
        self._check_searchable(target.kind, load_model=False)
        queries = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        with self.directory.lock:
            index = self.directory.reader_index(target.kind)
            if queries.ndim != 2 or queries.shape[1] != index.dim:
                raise SearchmmError(f"queries must be (n, {index.dim}), got {queries.shape}")
            return search_batch(self.directory.reads(), index, target.kind, queries, k)

    def embeddings(self, kind: Kind) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, vectors) of every stored embedding of a kind, in id order."""
        store = self.directory.reads()
        stored = store.get_model()
        if stored is None:
            return np.empty(0, np.int64), np.empty((0, 0), np.float32)
        _, ids, vectors = store.snapshot(kind, stored.dim)
        return ids, vectors

    def duplicates(self, threshold: float) -> list[list[Hit]]:
        """Groups of near-identical images, largest first; scores are similarity to the first."""
        ids, vectors = self.embeddings(Kind.IMAGE)
        groups = duplicate_groups(ids, vectors, threshold)
        items = self.items_by_id(i for g in groups for i in g.ids)
        return [
            [Hit(r, s, items[i]) for r, (i, s) in enumerate(zip(g.ids, g.scores, strict=True), 1)]
            for g in groups
        ]

    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        return self.directory.reads().items_by_id(ids)

    def _nothing_to_search(self, kind: Kind) -> SearchmmError:
        return SearchmmError(f"the index at {self.directory.path} holds no {kind}s: ingest some")

    def _check_searchable(self, kind: Kind, *, load_model: bool) -> None:
        """Refuse an empty target before any model is loaded; load it if the query needs it."""
        if not self.directory.reads().has_items(kind):
            raise self._nothing_to_search(kind)
        if load_model and self.model.loaded is None:
            preload_in_background()  # FAISS loads while the model does
            self.encoder()
