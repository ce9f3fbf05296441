"""Text-query latency of searchmm, warm (in-process) and cold (a fresh `searchmm query` process).

Warm: p50 of `Engine.search_text(q, k)` / p50 of `encoder.encode_texts([q])` + a raw FAISS
IndexFlatIP search over the same stored vectors, same process, same queries (target <= 1.1).
The encoder is the one queries use: onnxruntime on the store's verified export (made by the
ingest), or torch where there is none.
Cold: median wall time of `searchmm query TEXT --index-dir D -k K` / median wall time of a bare
`python -c` that imports torch and open_clip and creates the same model and tokenizer
(target <= 1.5).

    .venv/bin/python bench/query_latency.py --model ViT-B-32 --pretrained none
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import harness
import numpy as np

from searchmm import Engine, ModelSpec
from searchmm.settings import resolve_device
from searchmm.store.store import Store
from searchmm.vocabulary import Kind

WARM_TARGET = 1.1
COLD_TARGET = 1.5
COLD_QUERY = "a cat on a couch"
SUBJECTS = (
    "a cat",
    "two dogs",
    "a man riding a bicycle",
    "a red double-decker bus",
    "a plate of pasta and salad",
    "a child flying a kite",
    "an old wooden boat",
    "a giraffe",
    "a woman holding an umbrella",
    "a laptop next to a cup of coffee",
)
PLACES = (
    "on a couch",
    "in a busy city street",
    "near the beach at sunset",
    "in the snow",
    "in a small kitchen",
)
QUERIES = tuple(f"{subject} {place}" for subject in SUBJECTS for place in PLACES)  # 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument(
        "--cold-repeats", type=int, default=3, help="fresh processes of each; median reported"
    )
    return parser.parse_args()


def raw_index(index_dir: Path, dim: int) -> Any:
    """A plain faiss.IndexFlatIP over the image vectors the store holds."""
    import faiss

    store = Store(index_dir, create=False)
    try:
        _, _, vectors = store.snapshot(Kind.IMAGE, dim)
    finally:
        store.close()
    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(vectors))
    return index


def timed_ms(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000.0


def warm_latencies(engine: Engine, raw: Any, k: int) -> tuple[list[float], list[float]]:
    """Per-query milliseconds (engine, baseline), after one untimed pass over every query.

    The warm-up pass fills both paths' caches alike (tokenizer BPE cache, the engine's loaded
    index); the timed pass alternates which of the two goes first.
    """
    encoder = engine.load_model()

    def baseline(q: str) -> None:
        raw.search(encoder.encode_texts([q]), k)

    def searched(q: str) -> None:
        engine.search_text(q, k=k)

    for q in QUERIES:
        searched(q)
        baseline(q)
    engine_ms, baseline_ms = [], []
    for i, q in enumerate(QUERIES):
        if i % 2:
            baseline_ms.append(timed_ms(partial(baseline, q)))
            engine_ms.append(timed_ms(partial(searched, q)))
        else:
            engine_ms.append(timed_ms(partial(searched, q)))
            baseline_ms.append(timed_ms(partial(baseline, q)))
    return engine_ms, baseline_ms


def bare_model_script(spec: ModelSpec, scratch: Path) -> str:
    """The bare cold start: import torch and open_clip, create the same model and tokenizer."""
    register = ""
    if spec.config_json is not None:
        config = scratch / "config" / f"{spec.name}.json"  # open_clip names it by file stem
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(spec.config_json, encoding="utf-8")
        register = f"open_clip.add_model_config({str(config)!r}); "
    pretrained = None if spec.is_random else spec.pretrained
    return (
        f"import torch, open_clip; {register}torch.manual_seed(0); "
        f"m, _, p = open_clip.create_model_and_transforms({spec.name!r}, "
        f"pretrained={pretrained!r}); t = open_clip.get_tokenizer({spec.name!r})"
    )


def wall_s(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} exited {done.returncode}:\n{done.stderr}")
    return elapsed


def cold_walls(
    engine_cmd: list[str], bare_cmd: list[str], repeats: int
) -> tuple[list[float], list[float]]:
    """Wall seconds of fresh processes (engine query, bare model), interleaved, after a warm-up
    run of each so that both start with the same files in the page cache."""
    wall_s(engine_cmd)
    wall_s(bare_cmd)
    engine, bare = [], []
    for _ in range(repeats):
        engine.append(wall_s(engine_cmd))
        bare.append(wall_s(bare_cmd))
    return engine, bare


def main() -> None:
    args = parse_args()
    spec = harness.model_spec(args)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="searchmm-bench-") as tmp:
        scratch = Path(tmp)
        harness.fresh_machine_cache(scratch)
        photos = harness.photo_set(args.images, args.count, scratch)
        index_dir = scratch / "index"
        print(f"indexing {len(photos.paths)} images from {photos.source} with {spec.describe()}")
        with Engine(index_dir, model=spec, device=device) as builder:
            summary = builder.ingest(
                [photos.folder], batch_size=args.batch_size, workers=args.workers
            )
        del builder  # free its model: the reader below loads its own, as `searchmm query` does

        print(f"warm: {len(QUERIES)} queries, engine and baseline")
        with Engine(index_dir, device=device) as engine:
            raw = raw_index(index_dir, engine.load_model().dim)
            engine_ms, baseline_ms = warm_latencies(engine, raw, args.k)
            runtime = type(engine.load_model()).__name__
        print(f"cold: {args.cold_repeats} fresh processes of each")
        engine_cmd = [
            harness.searchmm_executable(),
            "query",
            COLD_QUERY,
            "--index-dir",
            str(index_dir),
            "-k",
            str(args.k),
        ]
        bare_script = bare_model_script(spec, scratch)
        cold_engine, cold_bare = cold_walls(
            engine_cmd, [sys.executable, "-c", bare_script], args.cold_repeats
        )

    p50_engine, p95_engine = np.percentile(engine_ms, [50, 95])
    p50_base, p95_base = np.percentile(baseline_ms, [50, 95])
    warm_ratio = float(p50_engine / p50_base)
    cold_ratio = harness.median(cold_engine) / harness.median(cold_bare)
    rows = [
        ("images indexed", str(summary.encoded_images)),
        ("warm engine p50 / p95, ms", f"{p50_engine:.2f} / {p95_engine:.2f}"),
        ("warm baseline p50 / p95, ms", f"{p50_base:.2f} / {p95_base:.2f}"),
        ("warm p95 engine / p95 baseline", f"{p95_engine / p95_base:.3f}"),
        ("cold `searchmm query` median, s", f"{harness.median(cold_engine):.3f}"),
        ("cold bare model script median, s", f"{harness.median(cold_bare):.3f}"),
    ]
    harness.record(
        name="query_latency",
        title="searchmm query latency",
        output=args.output,
        config={
            **harness.model_config_fields(args, spec, photos),
            "count": summary.encoded_images,
            "k": args.k,
            "queries": len(QUERIES),
            "cold_repeats": args.cold_repeats,
            "device": device,
            "query encoder": runtime,
        },
        rows=rows,
        measurements={
            "warm_engine_ms": engine_ms,
            "warm_baseline_ms": baseline_ms,
            "cold_engine_s": cold_engine,
            "cold_bare_s": cold_bare,
            "cold_query": COLD_QUERY,
            "cold_bare_script": bare_script,
        },
        headlines=[
            {
                "metric": "warm p50 engine / p50 baseline",
                "ratio": warm_ratio,
                "target": f"<= {WARM_TARGET}",
                "met": warm_ratio <= WARM_TARGET,
            },
            {
                "metric": "cold searchmm query / bare model start",
                "ratio": cold_ratio,
                "target": f"<= {COLD_TARGET}",
                "met": cold_ratio <= COLD_TARGET,
            },
        ],
        timed=[
            "warm engine: Engine.search_text(q, k) end to end in a process that has already "
            "loaded the model and the index: store checks (counts, change seq), text encode, "
            "FAISS search, metadata join from SQLite into Hit objects.",
            "warm baseline: encoder.encode_texts([q]) (tokenize, encode_text, normalise) + "
            "search on a plain faiss.IndexFlatIP built from the same stored vectors.",
            "Both: 50 distinct queries after one untimed pass over all of them; the order of "
            "engine and baseline alternates query by query.",
            "cold engine: wall time of a fresh `searchmm query TEXT --index-dir D -k K` process "
            "(interpreter start, imports, model creation, store and index open, one query, "
            "printing the table).",
            "cold baseline: wall time of a fresh `python -c` that imports torch and open_clip, "
            "seeds, and creates the same model, transform and tokenizer (no query, no FAISS, no "
            "SQLite). Runs interleave after one untimed warm-up of each.",
        ],
    )


if __name__ == "__main__":
    main()
