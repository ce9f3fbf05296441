"""FAISS wrapper: build or load an index, add/remove by item id, search (optionally filtered).

The index is a derived cache of the SQLite store: it never knows SQL, and its FAISS ids are
the store's item ids.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any, TypedDict, Unpack

import numpy as np

from searchmm.defaults import EXACT_THRESHOLD
from searchmm.errors import SearchmmError
from searchmm.index import specs
from searchmm.index.checks import as_ids, as_matrix, check_batch
from searchmm.index.drift import QuantiserDrift
from searchmm.index.faisslib import load_faiss, threads_for
from searchmm.index.file import IndexHeader, read_index_file, write_index_file
from searchmm.index.gpu import GpuMirror
from searchmm.index.specs import AUTO, IndexParams
from searchmm.index.training import train, training_rows


class BuildOptions(TypedDict, total=False):
    exact_threshold: int  # automatic choice: exact search below this many vectors
    budget: int | None  # automatic choice: bytes of RAM the index may take
    use_gpu: bool | None
    params: IndexParams | None


class VectorIndex:
    """One FAISS index whose ids are item ids; optionally mirrored on GPUs for add and search."""

    def __init__(
        self,
        index: Any,
        spec: str,
        *,
        use_gpu: bool | None = None,
        params: IndexParams | None = None,
    ) -> None:
        self._cpu = index
        self.spec = spec
        self.dim = int(index.d)
        self.params = params or IndexParams()
        self.search_params: dict[str, int] = specs.search_params(index, self.params)
        self._mirror = GpuMirror(use_gpu)
        self.drift = QuantiserDrift()
        self.reranks = specs.approximate_scores(index)  # once: asked on every query
        specs.apply_search_params(self._cpu, self.search_params)

    @classmethod
    def build(
        cls,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        spec: str = AUTO,
        **options: Unpack[BuildOptions],
    ) -> VectorIndex:
        """A new index over ``vectors``; trains first when the type needs it (IVF, PQ)."""
        ids, vectors = as_ids(ids), as_matrix(vectors, dim, "vectors")
        return build_from(dim, len(ids), lambda _rows: vectors, [(ids, vectors)], spec, **options)

    @classmethod
    def empty(
        cls,
        dim: int,
        spec: str = AUTO,
        *,
        use_gpu: bool | None = None,
        params: IndexParams | None = None,
    ) -> VectorIndex:
        """An index with nothing in it; AUTO gives Flat, and an IVF spec trains on its first add."""
        no_ids, no_vectors = np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float32)
        return cls.build(dim, no_ids, no_vectors, spec, use_gpu=use_gpu, params=params)

    @property
    def ntotal(self) -> int:
        return self._mirror.ntotal(self._cpu)

    @property
    def is_trained(self) -> bool:
        """False for an empty IVF (or PQ) index: it trains on its first add."""
        return bool(self._cpu.is_trained)

    @property
    def supports_remove(self) -> bool:
        """HNSW (and NSG, Refine) cannot delete; the caller rebuilds from the store instead."""
        return specs.removable(self._cpu)

    @property
    def supports_filter(self) -> bool:
        """Whether `search(allowed=...)` works: not through a Refine step (it takes no selector)."""
        return "k_factor_rf" not in self.search_params

    def set_search_params(self, **values: int) -> None:
        """Change search-time parameters (FAISS's names, e.g. nprobe, efSearch) of this index."""
        if unknown := set(values) - set(self.search_params):
            raise ValueError(f"index {self.spec!r} has no search parameter {sorted(unknown)}")
        self._sync_cpu()
        self.search_params.update(values)
        specs.apply_search_params(self._cpu, self.search_params)
        self._mirror.drop()  # a GPU copy takes its parameters when made: make it again

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add L2-normalised vectors under the caller's int64 ids (unique, >= 0, not stored yet)."""
        ids, vectors = as_ids(ids), as_matrix(vectors, self.dim, "vectors")
        untrained = not self._cpu.is_trained
        if self._prepare(ids, vectors):
            record = self.drift.record_baseline if untrained else self.drift.record_added
            record(self._cpu, vectors)
            self._insert(ids, vectors)

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids (absent ones are fine); False when the type cannot remove: rebuild."""
        ids = as_ids(ids)
        if not self.supports_remove:
            return False
        if not len(ids):
            return True
        self._sync_cpu()
        try:
            removed = self._cpu.remove_ids(ids)
        except RuntimeError as exc:
            if "not implemented" in str(exc):
                return False
            raise
        if removed:
            self._mirror.drop()
        return True

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32, ids int64), each (q, k); no result is score -inf, id -1.

        `allowed` restricts results to those ids (a FAISS ID selector, answered on the CPU).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = as_matrix(queries, self.dim, "queries")
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        found = np.full((len(queries), k), -1, dtype=np.int64)
        kk = min(k, self.ntotal)  # never ask FAISS for more than it holds
        if kk == 0 or not len(queries):
            return scores, found
        index = self._mirror.searcher(self._cpu, kk) if allowed is None else None
        if index is None:
            self._sync_cpu()
            index = self._cpu
        if allowed is not None:
            if not self.supports_filter:
                raise ValueError(f"index {self.spec!r} cannot filter by id: rank exactly instead")
            selected = specs.selector_params(self.search_params, as_ids(allowed))
            with threads_for(len(queries)):
                dist, labels = index.search(queries, kk, params=selected)
        else:
            with threads_for(len(queries)):
                dist, labels = index.search(queries, kk)
        dist[labels < 0] = -np.inf  # FAISS pads with -FLT_MAX; -inf cannot pass for a score
        scores[:, :kk], found[:, :kk] = dist, labels
        return scores, found

    def ids(self) -> np.ndarray:
        """Every id stored, in no particular order (for consistency checks against the store)."""
        self._sync_cpu()
        return _stored_ids(self._cpu)

    def save(self, path: str | os.PathLike[str], header: IndexHeader) -> IndexHeader:
        """Write header and index to one file atomically; returns the header as written.
        dim, spec, count and drift come from the index, so the file cannot contradict it."""
        self._sync_cpu()
        shape: dict[str, Any] = {"dim": self.dim, "spec": self.spec, "count": self.ntotal}
        header = dataclasses.replace(header, **shape, **self.drift.fields())
        write_index_file(path, self._cpu, header)
        return header

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        use_gpu: bool | None = None,
        params: IndexParams | None = None,
    ) -> tuple[VectorIndex, IndexHeader]:
        """Read a file written by save; a damaged one raises IndexFileError (rebuild it)."""
        index, header = read_index_file(path)
        self = cls(index, header.spec, use_gpu=use_gpu, params=params)
        self.drift = QuantiserDrift(
            header.drift_trained, header.drift_added_sum, header.drift_added
        )
        return self, header

    def _prepare(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Validate a batch and train on it if the index is untrained; False when it is empty."""
        check_batch(ids, vectors)
        if not len(ids):
            return False
        if not self._cpu.is_trained:
            train(self._cpu, self.spec, vectors, self.params)
        return True

    def _fill(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """A new index's bulk add; its first batch gives the quantiser's baseline (`drift`)."""
        first = True
        for ids, vectors in batches:
            ids, vectors = as_ids(ids), as_matrix(vectors, self.dim, "vectors")
            if self._prepare(ids, vectors):
                if first:
                    self.drift.record_baseline(self._cpu, vectors)
                    self._mirror.ensure(self._cpu)  # a bulk add is where a GPU pays off
                    first = False
                self._insert(ids, vectors)

    def _insert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not self._mirror.add(ids, vectors):
            self._cpu.add_with_ids(vectors, ids)

    def _sync_cpu(self) -> None:
        """Bring the CPU index up to date with adds that went to the GPU copy."""
        fresh = self._mirror.refreshed_cpu()
        if fresh is not None:
            self._cpu = fresh
            specs.apply_search_params(self._cpu, self.search_params)


def build_from(
    dim: int,
    count: int,
    sample: Callable[[int], np.ndarray],
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    spec: str = AUTO,
    **options: Unpack[BuildOptions],
) -> VectorIndex:
    """A new index over `count` vectors that arrive in `batches`, so that only one batch and
    the training sample (`sample(rows)`: that many vectors drawn evenly, or all of them) are
    held beside the index. `budget` bounds the automatic choice (bytes)."""
    if spec == AUTO:
        threshold = options.get("exact_threshold", EXACT_THRESHOLD)
        spec = specs.choose_spec(
            count, dim, exact_threshold=threshold, budget=options.get("budget")
        )
    params = options.get("params") or IndexParams()
    index, spec = specs.make_index(dim, spec, params)
    built = VectorIndex(index, spec, use_gpu=options.get("use_gpu"), params=params)
    if count and not index.is_trained:
        train(index, spec, as_matrix(sample(training_rows(index, params)), dim, "vectors"), params)
    built._fill(batches)
    return built


def _stored_ids(index: Any) -> np.ndarray:
    """The ids an IDMap or IVF index holds, read from its id map or its inverted lists."""
    faiss = load_faiss()
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexIDMap):
        return np.asarray(faiss.vector_to_array(top.id_map), dtype=np.int64)
    ivf = faiss.try_extract_index_ivf(top)
    if ivf is None:
        raise SearchmmError(f"cannot list the ids of a {type(top).__name__} index")
    invlists, parts = ivf.invlists, [np.empty(0, dtype=np.int64)]
    for list_no in range(ivf.nlist):
        if size := invlists.list_size(list_no):
            ptr = invlists.get_ids(list_no)
            parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))
            invlists.release_ids(list_no, ptr)
    return np.concatenate(parts)
