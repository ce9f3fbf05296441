"""FAISS index cost at 100k and 1M vectors: the engine's auto-picked index against exact search.

For each size, on clustered synthetic 512-d vectors (see `clustered_vectors`), two indexes are
built through `searchmm.index.VectorIndex.build`, the engine's own code path and parameters:
the flat baseline (`IDMap2,Flat`, exact) and the index the engine picks for that many vectors
(spec `auto`, i.e. `choose_spec(n)` with the engine's default exact threshold, whatever that
returns when the bench runs: the results record the spec). Measured for each: build time,
memory, single-query QPS (a loop of one-query searches, as `searchmm query` runs), batch QPS
(all queries in one call), and recall@10 against the exact answers. Headline, at the largest
size: auto recall@10 (target >= 0.95) and auto QPS / flat QPS (target >= 10), both measured in
the same run.

With `--explore`, alternatives are measured too (an efSearch sweep when the auto index is
HNSW, one-thread searches, HNSW32 built with efConstruction 200, IVF with an nprobe sweep), to
show which parameter change would meet the target where the defaults miss it.

    .venv/bin/python bench/index_bench.py --sizes 100k,1M --explore
    .venv/bin/python bench/index_bench.py --quick   # smoke run: 20k vectors, lower threshold
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import harness
import numpy as np

from searchmm.defaults import EXACT_THRESHOLD as DEFAULT_EXACT_THRESHOLD
from searchmm.index.file import IndexHeader
from searchmm.index.specs import AUTO, IndexParams, choose_spec
from searchmm.index.vector_index import VectorIndex

FLAT_SPEC = "IDMap2,Flat"
RECALL_TARGET = 0.95
QPS_TARGET = 10.0
EXPLORE_EF_SEARCH = (16, 32, 64, 128, 256)
EXPLORE_EF_CONSTRUCTION = 200
EXPLORE_ALT_EF_SEARCH = (64, 128, 256)
EXPLORE_NPROBE = (8, 16, 32, 64)
REFERENCE_SINGLE_QUERIES = 250  # single-query loop of the one-thread flat reference row
LID_K = 20  # neighbours used for the local intrinsic dimensionality estimate


# -- data --------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Parameters of the clustered generator (documented in `clustered_vectors`)."""

    dim: int = 512
    clusters: int = 4096
    subspace: int = 32
    spread: float = 0.6
    noise: float = 0.3
    cone: float = 0.65
    seed: int = 0


def clustered_vectors(n: int, nq: int, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """`n` index vectors and `nq` held-out queries from one clustered distribution, float32,
    L2-normalised.

    - A shared direction `mu` makes every vector lean the same way (the "cone" real CLIP
      embeddings show): centre k is normalise(cone * mu + g_k / sqrt(dim)), g_k ~ N(0, I).
    - Cluster sizes are uneven: weights ~ lognormal(0, 1); each vector's cluster is drawn with
      those weights (so is each query's, independently: queries are new points, not copies).
    - Within a cluster, points vary mostly along the cluster's own random `subspace`-dimensional
      directions U_k (dim x subspace, N(0, 1/dim) entries), plus small isotropic noise:
      x = c_k + s_k * U_k z / sqrt(subspace) + noise * g / sqrt(dim), z ~ N(0, I_subspace),
      g ~ N(0, I_dim), s_k = spread * lognormal(0, 0.25); then normalised. The two terms have
      norms of about s_k and `noise`: with the defaults a point's cosine to its centre is ~0.8.
      This gives a low local intrinsic dimensionality, as real embeddings have, rather than
      uniform noise (reported with the results: random-pair cosine, neighbour cosines, LID).
    - Every cluster's centre and basis come from its own generator, seeded (seed, k), so the
      index vectors and the queries share them; sizes, labels and spreads come from `seed`.
    """
    d, r = cfg.dim, cfg.subspace
    rng = np.random.default_rng(cfg.seed)
    mu = rng.standard_normal(d)
    mu /= np.linalg.norm(mu)
    weights = rng.lognormal(0.0, 1.0, cfg.clusters)
    weights /= weights.sum()
    spreads = cfg.spread * rng.lognormal(0.0, 0.25, cfg.clusters)
    outputs = []
    for count in (n, nq):
        labels = rng.choice(cfg.clusters, size=count, p=weights)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(cfg.clusters + 1))
        outputs.append((np.empty((count, d), dtype=np.float32), order, bounds))
    for k in range(cfg.clusters):
        crng = np.random.default_rng([cfg.seed, k])
        centre = cfg.cone * mu + crng.standard_normal(d) / np.sqrt(d)
        centre = (centre / np.linalg.norm(centre)).astype(np.float32)
        basis = (crng.standard_normal((d, r)) / np.sqrt(d)).astype(np.float32)
        for out, order, bounds in outputs:
            rows = order[bounds[k] : bounds[k + 1]]
            if not len(rows):
                continue
            z = crng.standard_normal((len(rows), r), dtype=np.float32)
            g = crng.standard_normal((len(rows), d), dtype=np.float32)
            points = (
                centre + (spreads[k] / np.sqrt(r)) * (z @ basis.T) + (cfg.noise / np.sqrt(d)) * g
            )
            points /= np.linalg.norm(points, axis=1, keepdims=True)
            out[rows] = points
    return outputs[0][0], outputs[1][0]


def describe_data(
    vectors: np.ndarray, queries: np.ndarray, exact_scores: np.ndarray, seed: int
) -> dict[str, float]:
    """What the generated set looks like: similarity statistics and local intrinsic dimension."""
    rng = np.random.default_rng(seed + 1)
    a = vectors[rng.integers(0, len(vectors), 5000)]
    b = vectors[rng.integers(0, len(vectors), 5000)]
    dist = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * exact_scores[:, :LID_K].astype(np.float64)))
    dist = np.maximum(dist, 1e-12)
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)  # Levina-Bickel MLE
    return {
        "random_pair_cosine_mean": float(np.einsum("ij,ij->i", a, b).mean()),
        "query_top1_cosine_mean": float(exact_scores[:, 0].mean()),
        "query_top10_cosine_mean": float(exact_scores[:, 9].mean()),
        f"query_lid_mle_k{LID_K}_median": float(np.median(lid)),
    }


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class IndexResult:
    label: str
    spec: str
    params: dict[str, int]
    build_s: float = 0.0
    rss_delta_bytes: int = 0
    peak_rss_delta_bytes: int = 0
    file_bytes: int = 0
    single_qps: float = 0.0
    single_p50_ms: float = 0.0
    single_p95_ms: float = 0.0
    batch_qps: float = 0.0
    recall_single: float = 0.0
    recall_batch: float = 0.0
    single_qps_vs_flat: float = 0.0
    batch_qps_vs_flat: float = 0.0
    meets_target: bool | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def omp_threads(count: int) -> Iterator[None]:
    """Search with `count` FAISS OpenMP threads (the engine leaves FAISS at its default)."""
    import faiss

    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def build_index(
    vectors: np.ndarray,
    spec: str,
    exact_threshold: int,
    label: str,
    params: IndexParams | None = None,
) -> tuple[VectorIndex, IndexResult]:
    """`VectorIndex.build` timed, with the RSS it added (after) and at its peak (during);
    `params` None is the engine's own (`IndexParams()`)."""
    ids = np.arange(len(vectors), dtype=np.int64)
    harness.release_memory()
    before = harness.rss_bytes()
    peak_ok = harness.reset_peak_rss()
    started = time.perf_counter()
    index = VectorIndex.build(
        vectors.shape[1],
        ids,
        vectors,
        spec,
        exact_threshold=exact_threshold,
        use_gpu=False,
        params=params,
    )
    build_s = time.perf_counter() - started
    result = IndexResult(label, index.spec, dict(index.search_params), build_s=build_s)
    result.rss_delta_bytes = harness.rss_bytes() - before
    result.peak_rss_delta_bytes = harness.peak_rss_bytes() - before if peak_ok else 0
    return index, result


def file_bytes(index: VectorIndex, scratch: Path) -> int:
    """Size of the index as the engine saves it (header + FAISS data), written and deleted."""
    path = scratch / "measure.faiss"
    header = IndexHeader(kind="image", dim=index.dim, spec=index.spec, seq=0, count=index.ntotal)
    index.save(path, header)
    size = path.stat().st_size
    path.unlink()
    return size


def recall_at(found: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean over queries of |found top-k ∩ exact top-k| / k."""
    pairs = zip(found, exact, strict=True)
    hits = [len(np.intersect1d(f[:k][f[:k] >= 0], e[:k])) for f, e in pairs]
    return float(np.mean(hits)) / k


def time_searches(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    single: int,
    exact: np.ndarray | None,
    result: IndexResult,
) -> np.ndarray:
    """Single-query loop over the first `single` queries, then one batch call over all of them.

    Returns the batch answers (ids). One untimed warm-up search of 10 queries first.
    """
    index.search(queries[:10], k)
    found_single = np.empty((single, k), dtype=np.int64)
    latencies = np.empty(single)
    loop_started = time.perf_counter()
    for i in range(single):
        started = time.perf_counter()
        _, found_single[i] = index.search(queries[i : i + 1], k)
        latencies[i] = time.perf_counter() - started
    loop_s = time.perf_counter() - loop_started
    started = time.perf_counter()
    _, found_batch = index.search(queries, k)
    batch_s = time.perf_counter() - started
    result.single_qps = single / loop_s
    result.single_p50_ms = float(np.percentile(latencies, 50) * 1e3)
    result.single_p95_ms = float(np.percentile(latencies, 95) * 1e3)
    result.batch_qps = len(queries) / batch_s
    if exact is not None:
        result.recall_single = recall_at(found_single, exact[:single], k)
        result.recall_batch = recall_at(found_batch, exact, k)
    return found_batch


def compare(result: IndexResult, flat: IndexResult) -> None:
    result.single_qps_vs_flat = result.single_qps / flat.single_qps
    result.batch_qps_vs_flat = result.batch_qps / flat.batch_qps
    result.meets_target = (
        result.recall_batch >= RECALL_TARGET and result.single_qps_vs_flat >= QPS_TARGET
    )


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def measure_size(n: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Flat baseline, the auto-picked index and (with --explore) alternatives, for one size."""
    k, single = args.k, min(args.single_queries, args.queries)
    cfg = data_config(args)
    progress(f"n={n:,}: generating {n:,} + {args.queries:,} clustered vectors")
    started = time.perf_counter()
    vectors, queries = clustered_vectors(n, args.queries, cfg)
    generate_s = time.perf_counter() - started
    results: list[IndexResult] = []

    progress(f"n={n:,}: flat baseline {FLAT_SPEC}")
    index, flat = build_index(vectors, FLAT_SPEC, args.exact_threshold, "flat (exact baseline)")
    exact_scores, exact_ids = index.search(queries, max(k, LID_K))  # untimed: the ground truth
    exact = exact_ids[:, :k]
    flat.file_bytes = file_bytes(index, scratch)
    found = time_searches(index, queries, k, single, exact, flat)
    if not np.array_equal(found, exact):
        flat.notes.append("batch answers differ from the ground-truth call (ties)")
    compare(flat, flat)
    results.append(flat)
    del index
    data = describe_data(vectors, queries, exact_scores, cfg.seed)

    auto_spec = choose_spec(n, 512, exact_threshold=args.exact_threshold)
    progress(f"n={n:,}: auto-picked {auto_spec}")
    index, auto = build_index(vectors, AUTO, args.exact_threshold, "auto (engine pick)")
    auto.file_bytes = file_bytes(index, scratch)
    time_searches(index, queries, k, single, exact, auto)
    compare(auto, flat)
    results.append(auto)
    progress(
        f"n={n:,}: {auto.spec} recall@{k} {auto.recall_batch:.4f}, "
        f"single-query QPS x{auto.single_qps_vs_flat:.1f} flat, build {auto.build_s:.1f} s"
    )

    if args.explore:
        results += explore(index, vectors, queries, exact, args, flat, auto, scratch)
    del index
    harness.release_memory()
    return {
        "n": n,
        "generate_s": generate_s,
        "auto_spec": auto_spec,
        "data": data,
        "indexes": [asdict(r) for r in results],
    }


def explore(
    auto_index: VectorIndex,
    vectors: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    args: argparse.Namespace,
    flat: IndexResult,
    auto: IndexResult,
    scratch: Path,
) -> list[IndexResult]:
    """efSearch sweep on the auto index and the auto index searched with one OpenMP thread;
    the flat index searched with one thread (a reference, not the baseline); then HNSW32 built
    with efConstruction 200; then IVF(power of two nearest sqrt(n)),Flat with an nprobe sweep."""
    n, k, single = len(vectors), args.k, min(args.single_queries, args.queries)
    out: list[IndexResult] = []

    def sweep(index: VectorIndex, base: IndexResult, name: str, values: tuple[int, ...]) -> None:
        default = index.search_params.get(name)
        for value in values:
            index.set_search_params(**{name: value})
            label = f"{base.label}, {name} {value}"
            r = IndexResult(label, base.spec, dict(index.search_params), build_s=base.build_s)
            r.rss_delta_bytes, r.file_bytes = base.rss_delta_bytes, base.file_bytes
            r.peak_rss_delta_bytes = base.peak_rss_delta_bytes
            r.notes.append("same built index as the row without the parameter change")
            time_searches(index, queries, k, single, exact, r)
            compare(r, flat)
            out.append(r)
            progress(f"n={n:,}: {label}: recall {r.recall_batch:.4f}, x{r.single_qps_vs_flat:.1f}")
        if default is not None:
            index.set_search_params(**{name: default})

    if "efSearch" in auto.params:
        sweep(auto_index, auto, "efSearch", EXPLORE_EF_SEARCH)
    with omp_threads(1):  # OpenMP on a busy 2-core machine can cost more than it gives
        r = IndexResult(f"{auto.label}, 1 OpenMP thread", auto.spec, dict(auto.params))
        r.build_s, r.rss_delta_bytes, r.file_bytes = (
            auto.build_s,
            auto.rss_delta_bytes,
            auto.file_bytes,
        )
        r.peak_rss_delta_bytes = auto.peak_rss_delta_bytes
        time_searches(auto_index, queries, k, single, exact, r)
    compare(r, flat)
    out.append(r)
    del auto_index
    harness.release_memory()

    progress(f"n={n:,}: flat again, searched with 1 OpenMP thread")
    index, r = build_index(vectors, FLAT_SPEC, args.exact_threshold, "flat, 1 OpenMP thread")
    r.file_bytes = flat.file_bytes
    few = min(single, REFERENCE_SINGLE_QUERIES)  # a reference only: spare the time
    r.notes.append(f"single-query figures over the first {few} queries only")
    with omp_threads(1):
        time_searches(index, queries, k, few, exact, r)
    compare(r, flat)
    r.meets_target = None
    out.append(r)
    del index
    harness.release_memory()

    hnsw = "IDMap2,HNSW32,Flat"
    progress(f"n={n:,}: explore {hnsw} with efConstruction {EXPLORE_EF_CONSTRUCTION}")
    label = f"HNSW32, efConstruction {EXPLORE_EF_CONSTRUCTION}"
    params = IndexParams(ef_construction=EXPLORE_EF_CONSTRUCTION)
    index, base = build_index(vectors, hnsw, args.exact_threshold, label, params)
    base.file_bytes = file_bytes(index, scratch)
    sweep(index, base, "efSearch", EXPLORE_ALT_EF_SEARCH)
    del index
    harness.release_memory()

    nlist = 2 ** round(float(np.log2(np.sqrt(n))))
    ivf = f"IVF{nlist},Flat"
    progress(f"n={n:,}: explore {ivf} (engine training: fixed-seed sample)")
    index, base = build_index(vectors, ivf, args.exact_threshold, ivf)
    base.file_bytes = file_bytes(index, scratch)
    sweep(index, base, "nprobe", EXPLORE_NPROBE)
    del index
    harness.release_memory()
    return out


# -- command line and report --------------------------------------------------------------------


def parse_size(text: str) -> int:
    """100000, 100k, 1M, 1.5m."""
    text = text.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    return int(float(number) * scale)


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(
        dim=args.dim,
        clusters=args.clusters,
        subspace=args.subspace,
        spread=args.spread,
        noise=args.noise,
        cone=args.cone,
        seed=args.seed,
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100k,1M", help="comma-separated vector counts (100k, 1M, 250000)"
    )
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries")
    parser.add_argument(
        "--single-queries",
        type=int,
        default=1000,
        help="of which timed one at a time (the rest only in the batch call)",
    )
    parser.add_argument("-k", type=int, default=10, help="neighbours per query (recall@k)")
    parser.add_argument(
        "--exact-threshold",
        type=int,
        default=DEFAULT_EXACT_THRESHOLD,
        help="the engine's Flat-below threshold passed to choose_spec",
    )
    parser.add_argument("--explore", action="store_true", help="also measure alternative specs")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20k vectors, 200 queries, 256 clusters, threshold 10k so the ANN path "
        "runs; results go to bench/results/tmp/ unless --output is given",
    )
    defaults = DataConfig()
    parser.add_argument("--dim", type=int, default=defaults.dim)
    parser.add_argument("--clusters", type=int, default=defaults.clusters)
    parser.add_argument("--subspace", type=int, default=defaults.subspace)
    parser.add_argument("--spread", type=float, default=defaults.spread)
    parser.add_argument("--noise", type=float, default=defaults.noise)
    parser.add_argument("--cone", type=float, default=defaults.cone)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", type=Path, default=None, help="where results go")
    args = parser.parse_args()
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if args.quick:
        args.sizes, args.queries, args.single_queries = [20_000], 200, 200
        args.clusters, args.exact_threshold = 256, 10_000
    if args.output is None:
        args.output = harness.RESULTS_DIR / "tmp" if args.quick else harness.RESULTS_DIR
    if args.k > LID_K or args.k < 1:
        parser.error(f"-k must be between 1 and {LID_K}")
    return args


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def size_name(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


def index_table(sizes: list[dict[str, Any]], k: int) -> list[str]:
    lines = [
        f"| n | index | params | build s | RSS added | peak RSS added | file | 1-query QPS | "
        f"p50 ms | p95 ms | batch QPS | recall@{k} | 1-query QPS / flat | batch QPS / flat | "
        "target |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in sizes:
        for r in s["indexes"]:
            params = ", ".join(f"{a}={b}" for a, b in r["params"].items()) or "-"
            verdict = "met" if r["meets_target"] else "missed"
            if r["label"].startswith("flat"):
                verdict = "(baseline)" if r is s["indexes"][0] else "(reference)"
            lines.append(
                f"| {size_name(s['n'])} | {r['label']}: `{r['spec']}` | {params} | "
                f"{r['build_s']:.1f} | {mib(r['rss_delta_bytes'])} | "
                f"{mib(r['peak_rss_delta_bytes'])} | {mib(r['file_bytes'])} | "
                f"{r['single_qps']:,.0f} | {r['single_p50_ms']:.2f} | {r['single_p95_ms']:.2f} | "
                f"{r['batch_qps']:,.0f} | {r['recall_batch']:.4f} | "
                f"{r['single_qps_vs_flat']:.1f} | {r['batch_qps_vs_flat']:.1f} | {verdict} |"
            )
    return lines


def main() -> None:
    args = parse_args()
    import faiss

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    total_started = time.perf_counter()
    sizes = []
    scratch_parent = harness.RESULTS_DIR / "tmp"
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="index-bench-", dir=scratch_parent) as scratch:
        for n in args.sizes:
            sizes.append(measure_size(n, args, Path(scratch)))
    total_s = time.perf_counter() - total_started

    k, top = args.k, sizes[-1]
    auto = next(r for r in top["indexes"] if r["label"].startswith("auto"))
    at = size_name(top["n"])
    rows: list[tuple[str, str]] = []
    for s in sizes:
        for r in s["indexes"][:2]:
            name = f"{size_name(s['n'])} {r['label']} `{r['spec']}`"
            rows += [
                (f"{name}: build s", f"{r['build_s']:.2f}"),
                (f"{name}: RSS added", mib(r["rss_delta_bytes"])),
                (f"{name}: index file", mib(r["file_bytes"])),
                (f"{name}: single-query QPS", f"{r['single_qps']:,.0f}"),
                (f"{name}: batch QPS", f"{r['batch_qps']:,.0f}"),
                (f"{name}: recall@{k}", f"{r['recall_batch']:.4f}"),
            ]
    rows.append(("total run time, s", f"{total_s:.0f}"))
    cfg = data_config(args)
    harness.record(
        name="index_bench",
        title="searchmm index: auto-picked FAISS index vs exact flat search",
        output=args.output,
        config={
            "sizes": args.sizes,
            "queries": args.queries,
            "single_queries": min(args.single_queries, args.queries),
            "k": k,
            "exact_threshold": args.exact_threshold,
            "explore": args.explore,
            "data": "clustered_vectors("
            + ", ".join(f"{a}={b}" for a, b in asdict(cfg).items())
            + ")",
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "load_average_at_start": load_at_start,
        },
        rows=rows,
        measurements={"total_s": total_s, "sizes": sizes},
        headlines=[
            {
                "metric": f"auto ({auto['spec']}) recall@{k} at {at}",
                "ratio": auto["recall_batch"],
                "target": f">= {RECALL_TARGET}",
                "met": auto["recall_batch"] >= RECALL_TARGET,
            },
            {
                "metric": f"auto single-query QPS / flat single-query QPS at {at}",
                "ratio": auto["single_qps_vs_flat"],
                "target": f">= {QPS_TARGET:g}",
                "met": auto["single_qps_vs_flat"] >= QPS_TARGET,
            },
            {
                "metric": f"auto batch QPS / flat batch QPS at {at}",
                "ratio": auto["batch_qps_vs_flat"],
                "target": f">= {QPS_TARGET:g}",
                "met": auto["batch_qps_vs_flat"] >= QPS_TARGET,
            },
        ],
        timed=[
            "build: VectorIndex.build(dim, ids, vectors, spec) (the engine's code path: factory, "
            "IDMap2 wrapper, efConstruction, training on a fixed-seed sample for IVF, add); "
            "the vectors are already in memory. `flat` is spec IDMap2,Flat; `auto` is spec "
            "'auto' with the exact threshold above, i.e. choose_spec(n).",
            "RSS added: the process's resident memory after the build minus before it (after "
            "gc and malloc_trim); peak RSS added: VmHWM during the build minus the same "
            "before (reset via /proc/self/clear_refs). The input vectors are not counted. "
            "file: the size of the index as the engine saves it (VectorIndex.save: header + "
            "FAISS serialisation).",
            "single-query QPS: a Python loop of VectorIndex.search(one query, k) calls, as "
            "`searchmm query` asks one query at a time (FAISS parallelises a single query "
            "little); p50/p95 are per-call latencies. batch QPS: one VectorIndex.search call "
            "with every query (FAISS spreads queries over its OpenMP threads). One untimed "
            "10-query warm-up search first.",
            f"recall@{k}: mean over queries of |top-{k} ∩ exact top-{k}| / {k}, from the batch "
            "answers; exact = the flat index's answers (an untimed call, which also gives the "
            "neighbour cosines and the LID estimate in `data`).",
            "Generation of the vectors is outside every timing; it is recorded as generate_s.",
        ],
    )
    md = args.output / "index_bench.md"
    extra = ["", "## Every index measured", "", *index_table(sizes, k), "", "## Data", ""]
    for s in sizes:
        stats = ", ".join(f"{a} {b:.3f}" for a, b in s["data"].items())
        extra.append(f"- {size_name(s['n'])}: generated in {s['generate_s']:.1f} s; {stats}")
    extra += [
        "",
        f"Target: the auto-picked index at {at} reaches recall@{k} >= {RECALL_TARGET} at >= "
        f"{QPS_TARGET:g}x the flat index's single-query QPS: "
        + ("**met**" if auto["meets_target"] else "**missed**")
        + ".",
        "",
    ]
    with md.open("a", encoding="utf-8") as f:
        f.write("\n".join(extra))
    print("\n".join(extra))
    print(f"total run time {total_s:.0f} s")


if __name__ == "__main__":
    main()
