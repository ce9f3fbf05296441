"""Which FAISS index to build, how to make it, and the parameters it is built and searched with.

Every index uses inner product on L2-normalised vectors, so scores are cosine similarities
whatever the type, and its FAISS ids are the store's item ids (an IDMap2 wrapper where the type
keeps no ids of its own).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from searchmm.defaults import EXACT_THRESHOLD
from searchmm.errors import SearchmmError
from searchmm.index.budget import describe_bytes, estimate_bytes
from searchmm.index.faisslib import FaissObject, faiss_reason, load_faiss

AUTO = "auto"
PQ_MIN_VECTORS = 20_000  # fewer train too few vectors per PQ code (and IVF-Flat is small)


@dataclass(frozen=True)
class IndexParams:
    """Build- and search-time knobs. The defaults were measured with bench/index_bench.py;
    FAISS's own (nprobe 1, efSearch 16) lose too much recall."""

    ef_search: int = 64  # HNSW candidates kept while searching
    ef_construction: int = 80  # HNSW candidates kept while adding
    refine_k_factor: int = 8  # a Refine step re-ranks this many times k candidates
    rerank_factor: int = 10  # PQ candidates re-ranked with stored vectors: this many times k
    rerank_min: int = 100  # and at least this many, times ceil(sqrt(n / 1M)) (see below)
    train_sample: int = 100_000  # most vectors trained on (at least 40 per IVF list)
    train_seed: int = 1234  # the sample is drawn with this seed: builds are reproducible
    nprobe_min: int = 16  # IVF lists probed, at least (never more than there are)
    nprobe_lists_per_probe: int = 64  # and at least one list in this many

    def nprobe(self, nlist: int) -> int:
        return min(nlist, max(self.nprobe_min, nlist // self.nprobe_lists_per_probe))

    def nprobe_reranked(self, nlist: int) -> int:
        """Lists probed by an index whose candidates are re-ranked: 16 up to 1,024 lists, then
        8. Its recall is bound by the re-ranked pool, not by the lists (bench/scale.py at 10M,
        IVF4096: 8 lists with 400 candidates gave recall@10 0.968 in 7.5 ms, 16 lists 0.980 in
        11.6 ms, 64 lists with 100 candidates 0.876 in 14.4 ms)."""
        return min(nlist, 16 if nlist <= 1024 else 8)

    def rerank_pool(self, k: int, n: int) -> int:
        """Candidates re-ranked for k results among n vectors: neighbours crowd together as a
        collection grows, so the pool grows with sqrt(n) past 1M (1M: 100 gave recall@10
        0.965; 10M: 100 gave 0.876, 300 0.959, 400 0.968)."""
        return max(self.rerank_min, k * self.rerank_factor) * max(1, math.ceil(math.sqrt(n / 1e6)))


def choose_spec(
    n: int, dim: int, *, exact_threshold: int = EXACT_THRESHOLD, budget: int | None = None
) -> str:
    """FAISS factory string for ``n`` vectors of ``dim``: the most exact type that suits the
    size and whose estimated RAM (`budget.estimate_bytes`) fits ``budget`` bytes (None: any).

    Measured with bench/index_bench.py and bench/scale.py (512-d vectors, 2 cores; results in
    bench/results/):

    - Flat is exact and cheap below 100k (a query scans 200 MB at most), removals are free.
    - Above: IVF (nlist near sqrt(n), nprobe 16 or more) with fast-scan PQ codes, dim/4
      sub-vectors of 4 bits (64 bytes a vector at 512-d), whose best 100 candidates are
      ranked again with the stored vectors (`search.rerank`), so scores are exact cosines. At
      1M CLIP-like vectors: p50 2.6 ms at recall@10 0.968, 72 MB of RAM; IVF1024,Flat gave
      43 ms at 0.984 in 2 GB, so it is no longer chosen above `PQ_MIN_VECTORS`. Under a
      budget, codes get shorter (dim/16, dim/32 bytes).
    - The coarse quantiser stays flat. An HNSW graph over the centroids (`IVF8192_HNSW32,...`,
      tried for 8,192 lists) sent most vectors to a few lists with inner product (imbalance
      factor 624 against 2.4 at 2M): at 100M, recall@10 0.24 before re-ranking and 354 ms a
      query (bench/results/scale_index_100m_ivf8192_hnsw32_pq128x4fs.md). With the flat one
      at 96M: imbalance 3.5, recall@10 0.948 re-ranked, 18 ms (scale_index_100m.md).
    - HNSW32 took 429 s to build at 1M and cannot remove ids: `--index-spec HNSW32` only.
    - Below `PQ_MIN_VECTORS` (a low exact threshold) IVF-Flat: too few vectors to train codes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    candidates = list(_candidates(n, dim, exact_threshold))
    for spec in candidates:
        if budget is None or estimate_bytes(spec, n, dim) <= budget:
            return spec
    least = min(estimate_bytes(spec, n, dim) for spec in candidates)
    raise SearchmmError(
        f"a memory budget of {describe_bytes(budget or 0)} cannot hold an index of {n:,} "
        f"{dim}-d vectors: the smallest automatic one needs about {describe_bytes(least)}; "
        "raise --memory-budget, or choose a type with `searchmm reindex --index-spec`"
    )


def _candidates(n: int, dim: int, exact_threshold: int) -> Iterator[str]:
    if n < exact_threshold:
        yield "IDMap2,Flat"
    if n == 0:
        return
    nlist = 2 ** max(0, round(float(np.log2(np.sqrt(n)))))
    if n < PQ_MIN_VECTORS:
        yield f"IVF{nlist},Flat"
    for m in (dim // 4, dim // 8, dim // 16):
        if m >= 2 and dim % m == 0:
            yield f"IVF{nlist},PQ{m}x4fs"


def family(spec: str) -> str:
    """The type without its sizes ("IVF,Flat", "IVF,PQ", "Flat", "HNSW"): auto-chosen indexes
    are rebuilt when the type for their size changes, not for a new nlist or code size."""
    parts = [re.sub(r"\d+", "", p) for p in spec.split(",") if not p.startswith("IDMap")]
    head = parts[0] if parts else spec
    if head.startswith("IVF") and len(parts) > 1:
        return f"{head},{parts[1].split('x')[0]}"
    return head


def nlist_of(spec: str) -> int | None:
    """The IVF list count a factory string asks for (None: not an IVF spec)."""
    match = re.search(r"(?:^|,)IVF(\d+)", spec)
    return int(match.group(1)) if match else None


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
        nlist = int(parts[-1].nlist)
        reranked = approximate_scores(index)
        found["nprobe"] = params.nprobe_reranked(nlist) if reranked else params.nprobe(nlist)
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


def removable(index: FaissObject) -> bool:
    faiss = load_faiss()
    unremovable = (faiss.IndexHNSW, faiss.IndexNSG, faiss.IndexRefine)
    return not any(isinstance(i, unremovable) for i in chain(index))


def approximate_scores(index: FaissObject) -> bool:
    """Whether its scores are of compressed codes (PQ, SQ): its candidates are then ranked
    again with the stored vectors (`search.rerank`). A Refine step does that itself."""
    faiss = load_faiss()
    exact = (faiss.IndexFlat, faiss.IndexIVFFlat, faiss.IndexHNSWFlat, faiss.IndexRefine)
    return not any(isinstance(i, exact) for i in chain(index))


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
