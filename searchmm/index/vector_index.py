"""FAISS wrapper: pick an index type, add/remove by item id, search, save and load.

The index is a derived cache of the SQLite store (design invariant 1): it never knows SQL, its
FAISS ids are the store's item ids (invariant 3), and every index uses inner product on
L2-normalised vectors (invariant 7), so scores are cosine similarities whatever the index type.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.index.faisslib import faiss_reason, load_faiss
from searchmm.index.file import IndexHeader, read_index_file, write_index_file

AUTO = "auto"


HNSW_EF_SEARCH = 64
HNSW_EF_CONSTRUCTION = 80
REFINE_K_FACTOR = 8
TRAIN_SAMPLE = 100_000
TRAIN_SEED = 1234
GPU_MAX_K = 2048  # FAISS's GPU k-selection limit; a larger k is answered on the CPU index
NORM_TOLERANCE = 1e-2  # float16 round trips through the store stay well inside this


def choose_spec(n: int, *, exact_threshold: int = 100_000) -> str:
    """FAISS factory string for ``n`` vectors: exact below the threshold, IVF above it.

    Measured with bench/index_bench.py (512-d clustered vectors, 2 cores; results in
    bench/results/index_bench.md, alternatives in bench/results/index_bench_explore.md):

    - Flat is exact and cheap below 100k (a query scans 200 MB at most), removals are free.
    - IVF with nlist near sqrt(n) and nprobe 16: recall@10 0.983 at 100k (IVF256) and 0.996 at
      1M (IVF1024, 12x the flat single-query QPS); it builds in 17 s at 1M and removes ids.
    - HNSW32 (efConstruction 80, efSearch 64), the earlier choice, reached only 0.90 at 100k
      and 0.53 at 1M, took 429 s to build at 1M and cannot remove ids: available through
      `--index-spec HNSW32`, no longer chosen automatically.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0 or n < exact_threshold:
        return "IDMap2,Flat"
    return f"IVF{2 ** max(0, round(float(np.log2(np.sqrt(n)))))},Flat"


def _chain(index: Any) -> list[Any]:
    """The index and what it wraps (IDMap, PreTransform, Refine), outermost first, downcast."""
    faiss = load_faiss()
    chain = [faiss.downcast_index(index)]
    while True:
        top = chain[-1]
        if isinstance(top, (faiss.IndexIDMap, faiss.IndexPreTransform)):
            chain.append(faiss.downcast_index(top.index))
        elif isinstance(top, faiss.IndexRefine):
            chain.append(faiss.downcast_index(top.base_index))
        else:
            return chain


def _takes_ids(index: Any) -> bool:
    """Whether add_with_ids works without an IDMap2 wrapper (IDMap itself, or IVF)."""
    faiss = load_faiss()
    top = next(i for i in _chain(index) if not isinstance(i, faiss.IndexPreTransform))
    return isinstance(top, (faiss.IndexIDMap, faiss.IndexIVF))


def _factory(dim: int, spec: str) -> Any:
    faiss = load_faiss()
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise SearchmmError(f"invalid index spec {spec!r}: {faiss_reason(exc)}") from exc


def _default_params(index: Any) -> dict[str, int]:
    """Search-time knobs for the recall measured in the environment notes (FAISS's defaults,
    nprobe 1 and efSearch 16, lose too much); a Refine step re-ranks 8 * k candidates."""
    faiss = load_faiss()
    chain = _chain(index)
    params = {}
    if any(isinstance(i, faiss.IndexRefine) for i in chain):
        params["k_factor_rf"] = REFINE_K_FACTOR
    if isinstance(chain[-1], faiss.IndexIVF):
        params["nprobe"] = min(chain[-1].nlist, max(16, chain[-1].nlist // 64))
    elif isinstance(chain[-1], faiss.IndexHNSW):
        params["efSearch"] = HNSW_EF_SEARCH
    return params


def _as_ids(ids: np.ndarray) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids must be a 1-D integer array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def _as_matrix(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    arr = np.asarray(vectors)
    if arr.ndim == 1 and what == "queries":
        arr = arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class VectorIndex:
    """One FAISS index whose ids are item ids; optionally mirrored on GPUs for add and search.

    The CPU index is the one saved. With a GPU, a copy is made lazily (first search, or a bulk
    build); once it exists adds go to it, and the CPU index is refreshed from it only when
    needed (save, remove, ids, k above the GPU limit). Types FAISS cannot put on a GPU (HNSW)
    stay on the CPU silently.
    """

    def __init__(self, index: Any, spec: str, *, use_gpu: bool | None = None) -> None:
        faiss = load_faiss()  # faiss-cpu has get_num_gpus (0) but no GPU cloner
        gpus = faiss.get_num_gpus() if hasattr(faiss, "index_cpu_to_all_gpus") else 0
        if use_gpu and not gpus:
            raise SearchmmError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")
        self._cpu = index
        self.spec = spec
        self.dim = int(index.d)
        self.search_params: dict[str, int] = _default_params(index)
        self._use_gpu = bool(gpus) if use_gpu is None else use_gpu
        self._gpu: Any = None
        self._gpu_failed = False
        self._cpu_stale = False  # True when the GPU copy holds adds the CPU index lacks
        self._apply_params()

    @classmethod
    def build(
        cls,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        spec: str = AUTO,
        *,
        exact_threshold: int = 100_000,
        use_gpu: bool | None = None,
    ) -> VectorIndex:
        """A new index over ``vectors``; trains first when the type needs it (IVF, PQ)."""
        ids, vectors = _as_ids(ids), _as_matrix(vectors, dim, "vectors")
        if spec == AUTO:
            spec = choose_spec(len(ids), exact_threshold=exact_threshold)
        index = _factory(dim, spec)
        if not _takes_ids(index):
            spec = f"IDMap2,{spec}"
            index = _factory(dim, spec)
        if isinstance(inner := _chain(index)[-1], load_faiss().IndexHNSW):  # before any add
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        self = cls(index, spec, use_gpu=use_gpu)
        if self._prepare(ids, vectors):
            self._ensure_gpu()  # a bulk add is where a GPU pays off
            self._insert(ids, vectors)
        return self

    @classmethod
    def empty(cls, dim: int, spec: str = AUTO, *, use_gpu: bool | None = None) -> VectorIndex:
        """An index with nothing in it; AUTO gives Flat, and an IVF spec trains on its first add."""
        no_vectors = np.empty((0, dim), dtype=np.float32)
        return cls.build(dim, np.empty(0, dtype=np.int64), no_vectors, spec, use_gpu=use_gpu)

    @property
    def ntotal(self) -> int:
        return int((self._gpu if self._cpu_stale else self._cpu).ntotal)

    @property
    def supports_remove(self) -> bool:
        """HNSW (and NSG, Refine) cannot delete; the caller rebuilds from the store instead."""
        faiss = load_faiss()
        unremovable = (faiss.IndexHNSW, faiss.IndexNSG, faiss.IndexRefine)
        return not any(isinstance(i, unremovable) for i in _chain(self._cpu))

    def _apply_params(self) -> None:
        """efSearch is serialised but nprobe is not for every type: apply after any load.
        ParameterSpace reaches through IDMap wrappers; GPU clones copy nprobe themselves."""
        space = load_faiss().ParameterSpace()
        for name, value in self.search_params.items():
            space.set_index_parameter(self._cpu, name, value)

    def _ensure_gpu(self) -> Any:
        """The GPU copy, made on first use; None when unwanted or the type cannot go there."""
        if not self._use_gpu or self._gpu_failed or not self._cpu.is_trained:
            return None
        if self._gpu is None:
            try:
                self._gpu = load_faiss().index_cpu_to_all_gpus(self._cpu)
            except RuntimeError:  # "This index type is not implemented on GPU." (HNSW, ...)
                self._gpu_failed = True
                return None
        return self._gpu

    def _sync_cpu(self) -> None:
        """Bring the CPU index up to date with adds that went to the GPU copy."""
        if self._cpu_stale:
            self._cpu = load_faiss().index_gpu_to_cpu(self._gpu)
            self._cpu_stale = False
            self._apply_params()

    def _train(self, vectors: np.ndarray) -> None:
        """Train on a fixed-seed sample: >= 40 vectors per IVF list (FAISS warns below 39)."""
        ivf = load_faiss().try_extract_index_ivf(self._cpu)
        nlist, n = (int(ivf.nlist) if ivf is not None else 0), len(vectors)
        if n < nlist:
            suggest = 2 ** int(np.log2(max(1, n // 39)))
            raise SearchmmError(
                f"index spec {self.spec!r} needs at least {nlist} vectors to train (one per IVF "
                f"list) but got {n}: use a smaller nlist (e.g. IVF{suggest},Flat) or 'Flat'"
            )
        limit = max(TRAIN_SAMPLE, 40 * nlist)
        if n > limit:
            rows = np.random.default_rng(TRAIN_SEED).choice(n, size=limit, replace=False)
            vectors = vectors[np.sort(rows)]
        for part in _chain(self._cpu):  # PQ's polysemous codes are never used here: 10x faster
            if hasattr(part, "do_polysemous_training"):
                part.do_polysemous_training = False
        try:
            self._cpu.train(vectors)
        except RuntimeError as exc:
            raise SearchmmError(f"cannot train index {self.spec!r}: {faiss_reason(exc)}") from exc

    def _prepare(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Validate a batch and train on it if the index is untrained; False when it is empty."""
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
        if not len(ids):
            return False
        if ids.min() < 0:
            raise ValueError("ids must be >= 0 (FAISS uses -1 for 'no result')")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique within one add")
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        if np.abs(norms - 1.0).max() > NORM_TOLERANCE:
            raise ValueError("vectors must be L2-normalised (scores are inner products)")
        if not self._cpu.is_trained:
            self._train(vectors)
        return True

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add L2-normalised vectors under the caller's int64 ids (unique, >= 0, not stored yet)."""
        ids, vectors = _as_ids(ids), _as_matrix(vectors, self.dim, "vectors")
        if self._prepare(ids, vectors):
            self._insert(ids, vectors)

    def _insert(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self._gpu is not None:
            self._gpu.add_with_ids(vectors, ids)
            self._cpu_stale = True
        else:
            self._cpu.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ids (absent ones are fine); False when the type cannot remove: rebuild."""
        ids = _as_ids(ids)
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
            self._gpu = None  # GPU indexes cannot remove: mirror again on the next search
        return True

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores float32, ids int64), each (q, k); no result is score -inf, id -1.

        `allowed` restricts results to those ids (a FAISS ID selector, answered on the CPU).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        queries = _as_matrix(queries, self.dim, "queries")
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        found = np.full((len(queries), k), -1, dtype=np.int64)
        kk = min(k, self.ntotal)  # never ask FAISS for more than it holds
        if kk == 0 or not len(queries):
            return scores, found
        index = self._ensure_gpu() if kk <= GPU_MAX_K and allowed is None else None
        if index is None:
            self._sync_cpu()
            index = self._cpu
        if allowed is not None:
            if not self.supports_filter:
                raise ValueError(f"index {self.spec!r} cannot filter by id: rank exactly instead")
            dist, labels = index.search(queries, kk, params=self._filtered(_as_ids(allowed)))
        else:
            dist, labels = index.search(queries, kk)
        dist[labels < 0] = -np.inf  # FAISS pads with -FLT_MAX; -inf cannot pass for a score
        scores[:, :kk], found[:, :kk] = dist, labels
        return scores, found

    @property
    def supports_filter(self) -> bool:
        """Whether `search(allowed=...)` works: not through a Refine step (it takes no selector)."""
        return "k_factor_rf" not in self.search_params

    def _filtered(self, allowed: np.ndarray) -> Any:
        """Parameters of the index's own type (they carry nprobe or efSearch), with a selector."""
        faiss = load_faiss()
        selector = faiss.IDSelectorBatch(allowed)
        params = self.search_params
        if "nprobe" in params:
            return faiss.SearchParametersIVF(sel=selector, nprobe=params["nprobe"])
        if "efSearch" in params:
            return faiss.SearchParametersHNSW(sel=selector, efSearch=params["efSearch"])
        return faiss.SearchParameters(sel=selector)

    def ids(self) -> np.ndarray:
        """Every id stored, in no particular order (for consistency checks against the store)."""
        faiss = load_faiss()
        self._sync_cpu()
        top = faiss.downcast_index(self._cpu)
        if isinstance(top, faiss.IndexIDMap):
            return faiss.vector_to_array(top.id_map).astype(np.int64, copy=False)
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

    def save(self, path: str | os.PathLike[str], header: IndexHeader) -> IndexHeader:
        """Write header and index to one file atomically; returns the header as written.

        dim, spec and count come from the index itself, so the file cannot contradict it.
        """
        self._sync_cpu()
        header = dataclasses.replace(header, dim=self.dim, spec=self.spec, count=self.ntotal)
        write_index_file(path, self._cpu, header)
        return header

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, use_gpu: bool | None = None
    ) -> tuple[VectorIndex, IndexHeader]:
        """Read a file written by save; a damaged one raises IndexFileError (rebuild it)."""
        index, header = read_index_file(path)
        return cls(index, header.spec, use_gpu=use_gpu), header
