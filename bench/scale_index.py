"""Index only, up to 100M vectors: the IVF-PQ index the engine picks for the size, built in
bounded memory from vectors generated in a stream, and its single-query latency and recall.

No store: 100M vectors would be 100 GB of SQLite, more than this machine's disk. The vectors
(`scale_data`, CLIP-like statistics) are generated chunk by chunk and never all held; each
chunk is added to the index (`index.vector_index.build_from`, the engine's own streaming
build: a training sample, then batches) and scored against the held-out queries in the same
pass, which keeps their exact top-10. The stream stops at `--size` or when `--hours` have
passed, whichever comes first (the issue's 2-hour run), and the index is sized for `--size`.

Then the index is saved (file size), loaded in a fresh process as a query process would load
it (load time, RSS), and searched one query at a time on one thread (the engine's setting for
single queries) for the engine's re-rank pool (`IndexParams.rerank_pool`) with its nprobe.
Two recalls are reported: of the index's own top-10 (PQ scores), and after re-ranking the
pool with exact vectors. The engine re-ranks from the store; here, with no store, that recall
is |pool & exact top-10| / 10, which is exactly what an exact re-rank of the pool returns
(every true top-10 vector in the pool outranks every other pool member). The re-rank's own
cost is the store's read of the pool, measured at 10M by bench/scale.py.

    .venv/bin/python bench/scale_index.py --size 100M --hours 2
    .venv/bin/python bench/scale_index.py --size 1M --spec IVF8192_HNSW32,PQ128x4fs \
        --output /tmp/scale-index  # a try-out
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import harness
import numpy as np
from scale import QUERY_SEED, headline, size
from scale_data import TARGETS, Clustered, ClusteredStream, describe

from searchmm.index.file import IndexHeader
from searchmm.index.specs import IndexParams, choose_spec, nlist_of
from searchmm.index.vector_index import VectorIndex, build_from

DIM = 512
TRAIN_SEED = 3_000_000  # chunk seeds of the training sample: apart from the stream's and queries'
K = 10


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class ExactTop:
    """The queries' exact top-k over everything streamed so far, kept chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        self.ids = np.full((len(queries), k), -1, dtype=np.int64)

    def update(self, first_id: int, vectors: np.ndarray) -> None:
        k = self.scores.shape[1]
        scores = self.queries @ vectors.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        both_scores = np.hstack([self.scores, np.take_along_axis(scores, part, axis=1)])
        both_ids = np.hstack([self.ids, part + first_id])
        order = np.argsort(-both_scores, axis=1, kind="stable")[:, :k]
        self.scores = np.take_along_axis(both_scores, order, axis=1)
        self.ids = np.take_along_axis(both_ids, order, axis=1)


class Stream:
    """The batches the index is built from, timed by stage, with a progress line per chunk."""

    def __init__(self, args: argparse.Namespace, exact: ExactTop, log: Path) -> None:
        self.args, self.exact, self.log = args, exact, log
        self.data = ClusteredStream(Clustered())
        self.seconds = {"generate": 0.0, "exact": 0.0, "add": 0.0}
        self.count = 0
        self.started = time.perf_counter()
        self.first_batch_at: float | None = None

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        args, limit = self.args, self.args.hours * 3600
        for number, first in enumerate(range(0, args.size, args.chunk)):
            if time.perf_counter() - self.started > limit:
                return
            t0 = time.perf_counter()
            vectors = self.data.chunk(min(args.chunk, args.size - first), number)
            t1 = time.perf_counter()
            self.exact.update(first, vectors)
            t2 = time.perf_counter()
            self.first_batch_at = self.first_batch_at or t0
            yield np.arange(first, first + len(vectors), dtype=np.int64), vectors
            self.seconds["generate"] += t1 - t0
            self.seconds["exact"] += t2 - t1
            self.seconds["add"] += time.perf_counter() - t2
            self.count = first + len(vectors)
            progress = {"vectors": self.count, "s": time.perf_counter() - self.started}
            progress.update({"rss": rss_bytes(), **self.seconds})
            with self.log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(progress) + "\n")


def single_queries(
    index: VectorIndex, queries: np.ndarray, exact_ids: np.ndarray, pool: int, nprobe: int
) -> dict[str, float]:
    index.set_search_params(nprobe=nprobe)
    for q in queries[:10]:
        index.search(q[None], pool)
    times, own, reranked = [], [], []
    for q, exact in zip(queries, exact_ids, strict=True):
        started = time.perf_counter()
        _, found = index.search(q[None], pool)
        times.append(time.perf_counter() - started)
        truth = set(exact.tolist())
        own.append(len(truth & set(found[0, :K].tolist())) / K)
        reranked.append(len(truth & set(found[0].tolist())) / K)
    ms = np.asarray(times) * 1e3
    return {
        "nprobe": nprobe,
        "pool": pool,
        "p50_ms": float(np.median(ms)),
        "p95_ms": float(np.percentile(ms, 95)),
        "recall_own": float(np.mean(own)),
        "recall_reranked": float(np.mean(reranked)),
    }


def query_process(scratch: Path) -> None:
    """A fresh process, as a query process would be: load the index (time, RSS), then the
    engine's single queries and a sweep around them; prints JSON."""
    params = IndexParams()
    rss_before = rss_bytes()
    started = time.perf_counter()
    index, header = VectorIndex.load(scratch / "images.faiss", params=params)
    load_s = time.perf_counter() - started
    loaded_rss = rss_bytes() - rss_before
    queries, exact_ids = np.load(scratch / "queries.npy"), np.load(scratch / "exact_ids.npy")
    pool = params.rerank_pool(K, index.ntotal)
    nprobe = params.nprobe_reranked(nlist_of(header.spec) or 1)
    auto = single_queries(index, queries, exact_ids, pool, nprobe)
    sweep = [
        single_queries(index, queries, exact_ids, p, probe)
        for probe in sorted({nprobe, 2 * nprobe, 4 * nprobe})
        for p in sorted({pool // 2, pool, 2 * pool})
        if (probe, p) != (nprobe, pool)
    ]
    print(json.dumps({"load_s": load_s, "loaded_rss": loaded_rss, "auto": auto, "sweep": sweep}))


def main() -> None:
    if sys.argv[1:2] == ["--query-process"]:
        return query_process(Path(sys.argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=size, default=100_000_000)
    parser.add_argument("--hours", type=float, default=2.0, help="stop the stream after this")
    parser.add_argument("--chunk", type=size, default=500_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--spec", default=None, help="a factory string (default: the engine's)")
    parser.add_argument("--scratch", type=Path, default=None, help="index file and progress")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="searchmm-scale-index-"))
    scratch.mkdir(parents=True, exist_ok=True)
    params = IndexParams()
    spec = args.spec or choose_spec(args.size, DIM)
    data = ClusteredStream(Clustered())
    queries = data.chunk(args.queries, QUERY_SEED)
    exact = ExactTop(queries, K)
    stream = Stream(args, exact, scratch / "progress.jsonl")
    rss_before = rss_bytes()
    index = build_from(
        DIM,
        args.size,
        lambda rows: data.chunk(rows, TRAIN_SEED),
        stream.batches(),
        spec,
        params=params,
    )
    build_s = time.perf_counter() - stream.started
    train_s = (stream.first_batch_at or stream.started) - stream.started
    rss_built = rss_bytes()
    # how evenly the lists are filled (1: even): the check that caught a broken quantiser
    imbalance = faiss.extract_index_ivf(index._cpu).invlists.imbalance_factor()
    n = index.ntotal
    path = scratch / "images.faiss"
    started = time.perf_counter()
    index.save(path, IndexHeader(kind="image", dim=DIM, spec=spec, seq=0, count=0))
    save_s = time.perf_counter() - started
    del index
    np.save(scratch / "queries.npy", queries)
    np.save(scratch / "exact_ids.npy", exact.ids)
    child = [sys.executable, __file__, "--query-process", str(scratch)]
    searched = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
    found = {
        "n": n,
        "spec": spec,
        "build_s": build_s,
        "train_s": train_s,
        "stages_s": stream.seconds,
        "save_s": save_s,
        "file_bytes": path.stat().st_size,
        "index_rss": rss_built - rss_before,
        "list_imbalance": imbalance,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        **searched,
        "data": describe(data.chunk(100_000, 3), exact.scores),
    }
    path.unlink()
    report(args, found)


def report(args: argparse.Namespace, found: dict[str, Any]) -> None:
    gib, n, auto = 2**30, found["n"], found["auto"]
    add_us = found["stages_s"]["add"] / n * 1e6
    headlines = [
        headline("vectors reached (target >= 30M, 100M asked)", n, 30e6, lower_is_better=False),
        headline("recall@10 after re-ranking", auto["recall_reranked"], 0.95, False),
        headline(f"single-query p50 ms, index search ({found['spec']})", auto["p50_ms"], None),
    ]
    rows = [
        ("vectors", f"{n:,} x {DIM} (stream asked for {args.size:,} in <= {args.hours} h)"),
        ("index chosen for the size", found["spec"]),
        ("build wall s (train + stream)", f"{found['build_s']:.0f}"),
        ("training (sample drawn + trained) s", f"{found['train_s']:.0f}"),
        *((f"stream: {stage} s", f"{s:.0f}") for stage, s in found["stages_s"].items()),
        ("add per vector (2 cores)", f"{add_us:.1f} us"),
        ("index RSS after build", f"{found['index_rss'] / gib:.2f} GiB"),
        ("inverted lists' imbalance factor (1: even)", f"{found['list_imbalance']:.2f}"),
        ("process peak RSS", f"{found['peak_rss'] / gib:.2f} GiB"),
        (
            "index file",
            f"{found['file_bytes'] / gib:.2f} GiB ({found['file_bytes'] / n:.1f} B/vector)",
        ),
        ("save s, load s", f"{found['save_s']:.0f}, {found['load_s']:.0f}"),
        ("RSS of the loaded index", f"{found['loaded_rss'] / gib:.2f} GiB"),
    ]
    for q in [auto, *found["sweep"]]:
        label = f"nprobe {q['nprobe']}, pool {q['pool']}: p50 / p95 ms, recall own / re-ranked"
        figures = (
            f"{q['p50_ms']:.2f} / {q['p95_ms']:.2f}, "
            f"{q['recall_own']:.3f} / {q['recall_reranked']:.3f}"
        )
        rows.append((label + (" (engine's)" if q is auto else ""), figures))
    for key, value in found["data"].items():
        rows.append((f"data: {key}", f"{value:.3f}"))
    config = {
        "size": args.size,
        "hours": args.hours,
        "chunk": args.chunk,
        "queries": args.queries,
        "spec": args.spec,
        "data": Clustered().__dict__,
        "data_targets": TARGETS,
    }
    name = f"scale_index_{args.size // 1_000_000}m"
    if args.spec:  # a chosen type is recorded apart from the engine's choice
        name += "_" + re.sub(r"[^0-9A-Za-z]+", "_", args.spec).strip("_").lower()
    title = f"searchmm index only, {n:,} vectors streamed"
    harness.record(name, title, args.output, config, rows, found, headlines, TIMED)


TIMED = [
    "build: build_from (the engine's streaming build) from the first training vector drawn to "
    "the last batch added; each chunk's generation and its exact scoring against the queries "
    "run inside it and are reported apart ('stream: generate', 'stream: exact'); 'add' is "
    "FAISS's add_with_ids with the engine's checks.",
    "index RSS: the process's RSS after the build minus before it (the last chunk freed); "
    "loaded RSS and load s: VectorIndex.load of the saved file in a fresh query process.",
    "single query: VectorIndex.search(q, pool) on one thread in that process, warm (10 "
    "untimed queries first); the store's re-rank read of the pool is not included.",
    "recall@10: own = |index top-10 & exact| / 10; re-ranked = |pool & exact| / 10 (see the "
    "module docstring); exact from the same streaming pass, float32.",
]


if __name__ == "__main__":
    main()
