"""Which FAISS index to build, how to make it, and the parameters it is built and searched with.

Every index uses inner product on L2-normalised vectors, so scores are cosine similarities
whatever the type, and its FAISS ids are the store's item ids (an IDMap2 wrapper where the type
keeps no ids of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from searchmm.defaults import EXACT_THRESHOLD
from searchmm.errors import SearchmmError
from searchmm.index.faisslib import FaissObject, faiss_reason, load_faiss

AUTO = "auto"


@dataclass(frozen=True)
class IndexParams:
    """Build- and search-time knobs. The defaults were measured with bench/index_bench.py;
    FAISS's own (nprobe 1, efSearch 16) lose too much recall."""

    ef_search: int = 64  # HNSW candidates kept while searching
    ef_construction: int = 80  # HNSW candidates kept while adding
    refine_k_factor: int = 8  # a Refine step re-ranks this many times k candidates
    train_sample: int = 100_000  # most vectors trained on (at least 40 per IVF list)
    train_seed: int = 1234  # the sample is drawn with this seed: builds are reproducible
    nprobe_min: int = 16  # IVF lists probed, at least (never more than there are)
    nprobe_lists_per_probe: int = 64  # and at least one list in this many

    def nprobe(self, nlist: int) -> int:
        return min(nlist, max(self.nprobe_min, nlist // self.nprobe_lists_per_probe))


def choose_spec(n: int, *, exact_threshold: int = EXACT_THRESHOLD) -> str:
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


def family(spec: str) -> str:
    """Flat, HNSW or IVF...: auto-chosen indexes are rebuilt only when the family changes."""
    parts = [p for p in spec.split(",") if not p.startswith("IDMap")]
    head = parts[0] if parts else spec
    return "".join(ch for ch in head if not ch.isdigit())


def chain(index: FaissObject) -> list[FaissObject]:
    """The index and what it wraps (IDMap, PreTransform, Refine), outermost first, downcast."""
    faiss = load_faiss()
    parts = [faiss.downcast_index(index)]
    while True:
        top = parts[-1]
        if isinstance(top, (faiss.IndexIDMap, faiss.IndexPreTransform)):
            parts.append(faiss.downcast_index(top.index))
        elif isinstance(top, faiss.IndexRefine):
            parts.append(faiss.downcast_index(top.base_index))
        else:
            return parts


def make_index(dim: int, spec: str, params: IndexParams) -> tuple[FaissObject, str]:
    """(empty FAISS index, its spec): wrapped in IDMap2 when the type cannot take ids itself."""
    faiss = load_faiss()
    index = _factory(dim, spec)
    if not _takes_ids(index):
        spec = f"IDMap2,{spec}"
        index = _factory(dim, spec)
    if isinstance(inner := chain(index)[-1], faiss.IndexHNSW):  # before any add
        inner.hnsw.efConstruction = params.ef_construction
    return index, spec


def search_params(index: FaissObject, params: IndexParams) -> dict[str, int]:
    """The FAISS search parameters (by FAISS's names) this type of index is searched with."""
    faiss = load_faiss()
    parts = chain(index)
    found = {}
    if any(isinstance(i, faiss.IndexRefine) for i in parts):
        found["k_factor_rf"] = params.refine_k_factor
    if isinstance(parts[-1], faiss.IndexIVF):
        found["nprobe"] = params.nprobe(int(parts[-1].nlist))
    elif isinstance(parts[-1], faiss.IndexHNSW):
        found["efSearch"] = params.ef_search
    return found


def apply_search_params(index: FaissObject, values: dict[str, int]) -> None:
    """efSearch is serialised but nprobe is not for every type: apply after any load.
    ParameterSpace reaches through IDMap wrappers; GPU clones copy nprobe themselves."""
    space = load_faiss().ParameterSpace()
    for name, value in values.items():
        space.set_index_parameter(index, name, value)


def selector_params(values: dict[str, int], allowed: np.ndarray) -> FaissObject:
    """Search parameters of the index's own type (they carry nprobe or efSearch), with an ID
    selector restricting results to `allowed`."""
    faiss = load_faiss()
    selector = faiss.IDSelectorBatch(allowed)
    if "nprobe" in values:
        return faiss.SearchParametersIVF(sel=selector, nprobe=values["nprobe"])
    if "efSearch" in values:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=values["efSearch"])
    return faiss.SearchParameters(sel=selector)


def _takes_ids(index: FaissObject) -> bool:
    """Whether add_with_ids works without an IDMap2 wrapper (IDMap itself, or IVF)."""
    faiss = load_faiss()
    top = next(i for i in chain(index) if not isinstance(i, faiss.IndexPreTransform))
    return isinstance(top, (faiss.IndexIDMap, faiss.IndexIVF))


def _factory(dim: int, spec: str) -> FaissObject:
    faiss = load_faiss()
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise SearchmmError(f"invalid index spec {spec!r}: {faiss_reason(exc)}") from exc
