"""A written projection to 1B vectors, on one larger machine and on N machines, from what
bench/scale_index.py measured at up to 100M (its JSON in bench/results/). Nothing is timed
here: every figure is a measured one scaled by a stated rule, and the rules are in the table.

    .venv/bin/python bench/scale_projection.py --measured bench/results/scale_index_100m.json \
        --cores 64 --machines 8
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import harness

from searchmm.index.budget import estimate_bytes
from searchmm.index.specs import IndexParams, choose_spec, nlist_of

DIM = 512
TARGET = 1_000_000_000
MEASURED_CORES = 2
# Store rows: bytes a float16 512-d vector takes in SQLite with 16 kB pages (bench/scale.py
# --storage-rows, bench/results/scale_10m.md) and the cost of reading one by id while
# re-ranking (bench/scale.py at 10M: about half of the 8.4 ms p50 went to the 400-row pool).
STORE_BYTES_PER_VECTOR = 1093
RERANK_READ_US = 11.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", type=Path, required=True, help="scale_index JSON")
    parser.add_argument("--cores", type=int, default=64, help="cores of the larger machine")
    parser.add_argument("--machines", type=int, default=8, help="N for the sharded projection")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    measured = json.loads(args.measured.read_text(encoding="utf-8"))
    rows, found = project(measured["measurements"], args.cores, args.machines)
    config = {"measured": measured["command"], "cores": args.cores, "machines": args.machines}
    title = f"Projection to {TARGET:,} vectors from {measured['measurements']['n']:,} measured"
    harness.record("scale_projection", title, args.output, config, rows, found, [], RULES)


def project(m: dict[str, Any], cores: int, machines: int) -> tuple[list[tuple[str, str]], dict]:
    n, params = m["n"], IndexParams()
    add_us = m["stages_s"]["add"] / n * 1e6
    nlist_measured = nlist_of(m["spec"]) or 1
    speedup = cores / MEASURED_CORES
    rows: list[tuple[str, str]] = [
        ("measured: vectors, index", f"{n:,}, {m['spec']}"),
        ("measured: add per vector on 2 cores", f"{add_us:.1f} us"),
        ("measured: training s (40 vectors a list)", f"{m['train_s']:.0f}"),
        ("measured: index file bytes a vector", f"{m['file_bytes'] / n:.1f}"),
        ("measured: single query p50 ms (index)", f"{m['auto']['p50_ms']:.2f}"),
        ("measured: recall@10 re-ranked", f"{m['auto']['recall_reranked']:.3f}"),
    ]
    found: dict[str, Any] = {}
    for label, shards in (("one machine", 1), (f"{machines} machines", machines)):
        each = math.ceil(TARGET / shards)
        spec = choose_spec(each, DIM)
        nlist = nlist_of(spec) or 1
        ram = estimate_bytes(spec, each, DIM)
        lists = nlist / nlist_measured
        build_h = each * add_us * lists / 1e6 / speedup / 3600
        train_s = m["train_s"] * (nlist / nlist_measured) ** 2 / speedup
        scanned = (n / nlist_measured, each / nlist)
        query_ms = m["auto"]["p50_ms"] * max(scanned[1] / scanned[0], lists)
        pool = params.rerank_pool(10, each)
        rerank_ms = pool * RERANK_READ_US / 1000
        store_tb = each * STORE_BYTES_PER_VECTOR / 1e12
        found[label] = {
            "vectors": each,
            "spec": spec,
            "ram_bytes": ram,
            "build_h": build_h,
            "train_s": train_s,
            "query_ms": query_ms,
            "rerank_ms": rerank_ms,
            "store_tb": store_tb,
        }
        rows += [
            (f"{label}: vectors a machine, index", f"{each:,}, {spec}"),
            (f"{label}: index RAM a machine (budget estimate)", f"{ram / 2**30:,.0f} GiB"),
            (f"{label}: training, {cores} cores", f"{train_s / 60:,.0f} min"),
            (f"{label}: adding every vector, {cores} cores", f"{build_h * 60:,.0f} min"),
            (f"{label}: single query, index search", f"{query_ms:.1f} ms"),
            (f"{label}: re-ranking {pool:,} candidates from the store", f"{rerank_ms:.0f} ms"),
            (f"{label}: store on disk a machine (float16)", f"{store_tb:.2f} TB"),
        ]
    return rows, found


RULES = [
    "index and its RAM: the engine's own choice for the vectors a machine holds "
    "(`index.specs.choose_spec`) and its estimate (`index.budget.estimate_bytes`: codes, ids, "
    "inverted-list slack 1.3x, centroids).",
    "adding: the measured FAISS add cost a vector (the flat quantiser's scan of every centroid, "
    "then 4-bit PQ encoding), times lists/measured lists (the scan dominates, and grows with "
    "the lists), divided by cores/2: FAISS adds a batch with one OpenMP thread a core.",
    "training: k-means over 40 vectors a list costs lists^2: the measured time times "
    "(lists/measured lists)^2, divided by cores/2.",
    "single query: the index's time is the centroid scan (grows with the lists) plus the codes "
    "scanned (nprobe lists of n/nlist codes): the measured p50 times the larger of the two "
    "ratios. One thread a query: cores add queries per second, not speed.",
    f"re-ranking: the engine re-ranks IndexParams.rerank_pool candidates from the store at "
    f"about {RERANK_READ_US:.0f} us a row (SQLite reads by id, measured at 10M): at 1B about "
    "half the index's time, the case for vectors in memory-mapped shards.",
    f"store: {STORE_BYTES_PER_VECTOR} bytes a float16 512-d row (16 kB pages, measured).",
    "N machines: vectors sharded by id, one store and index each, built in parallel; a query "
    "goes to every shard and the N top-k lists are merged (latency: the slowest shard plus "
    "the network round trip, not included).",
]


if __name__ == "__main__":
    main()
