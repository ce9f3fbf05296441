"""Warm text-query latency through `searchmm serve` (HTTP on 127.0.0.1) against the same query
in-process (`Engine.search_text`), in the same run: p50 HTTP / p50 in-process (target <= 1.3).

    .venv/bin/python bench/server_latency.py --model ViT-B-32 --pretrained none
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import harness
import numpy as np
from query_latency import QUERIES

from searchmm import Engine
from searchmm.settings import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.server import ServerProcess

TARGET = 1.3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser)
    parser.add_argument("-k", type=int, default=10, help="results per query")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of both sides (this process, and the server through OMP_NUM_THREADS) "
        "[default: torch's own, one per core]",
    )
    return parser.parse_args()


class HttpSearch:
    """GET /api/search over one kept-alive connection, as a client of a warm server would."""

    def __init__(self, url: str, k: int) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.k = k
        self.server_ms: list[float] = []  # the engine's time in the server (Server-Timing)

    def __call__(self, q: str) -> list[int]:
        path = "/api/search?" + urlencode({"q": q, "k": self.k})
        try:
            body, status = self._get(path)
        except (http.client.RemoteDisconnected, ConnectionError):
            self.connection.close()  # the server closed an idle keep-alive connection: reopen
            body, status = self._get(path)
        if status != 200:
            raise SystemExit(f"the server answered {status}: {body[:300]!r}")
        return [hit["id"] for hit in json.loads(body)["hits"]]

    def _get(self, path: str) -> tuple[bytes, int]:
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        timing = response.getheader("Server-Timing", "")
        if "dur=" in timing:
            self.server_ms.append(float(timing.split("dur=")[1].split(",")[0]))
        return response.read(), response.status

    def close(self) -> None:
        self.connection.close()


def latencies(http: HttpSearch, engine: Engine, k: int) -> tuple[list[float], list[float]]:
    """Per-query milliseconds (HTTP, in-process), after one untimed pass of each over every query;
    the timed pass alternates which of the two goes first. Both must return the same items."""

    def local(q: str) -> list[int]:
        return [hit.item.id for hit in engine.search_text(q, k=k)]

    for q in QUERIES:
        if http(q) != local(q):
            raise SystemExit(f"the server and the engine disagree on {q!r}")
    http_ms, local_ms = [], []
    http.server_ms.clear()  # keep the timed pass's only
    for i, q in enumerate(QUERIES):
        order = (
            ((local, local_ms), (http, http_ms)) if i % 2 else ((http, http_ms), (local, local_ms))
        )
        for call, out in order:
            started = time.perf_counter()
            call(q)
            out.append((time.perf_counter() - started) * 1000.0)
    return http_ms, local_ms


def main() -> None:
    args = parse_args()
    env = {}
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    spec = harness.model_spec(args)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="searchmm-bench-") as tmp:
        scratch = Path(tmp)
        photos = harness.photo_set(args.images, args.count, scratch)
        index_dir = scratch / "index"
        print(f"indexing {len(photos.paths)} images from {photos.source} with {spec.describe()}")
        with Engine(index_dir, model=spec, device=device) as builder:
            summary = builder.ingest(
                [photos.folder], batch_size=args.batch_size, workers=args.workers
            )
        del builder

        print("starting `searchmm serve` (it loads the model once, then warms up)")
        started = time.perf_counter()
        server = ServerProcess(
            index_dir, "--device", device, log_path=scratch / "server.log", env=env
        )
        with server:
            ready_s = time.perf_counter() - started
            print(f"warm: {len(QUERIES)} queries through HTTP and in-process")
            http = HttpSearch(server.url, args.k)
            try:
                with Engine(index_dir, device=device) as engine:
                    http_ms, local_ms = latencies(http, engine, args.k)
                    server_ms = list(http.server_ms)
            finally:
                http.close()

    p50_http, p95_http = np.percentile(http_ms, [50, 95])
    p50_local, p95_local = np.percentile(local_ms, [50, 95])
    p50_server = float(np.percentile(server_ms, 50))
    ratio = float(p50_http / p50_local)
    rows = [
        ("images indexed", str(summary.encoded_images)),
        ("HTTP p50 / p95, ms", f"{p50_http:.2f} / {p95_http:.2f}"),
        ("in-process p50 / p95, ms", f"{p50_local:.2f} / {p95_local:.2f}"),
        ("HTTP overhead at p50, ms", f"{p50_http - p50_local:.2f}"),
        ("engine time inside the server p50, ms", f"{p50_server:.2f}"),
        ("p95 HTTP / p95 in-process", f"{p95_http / p95_local:.3f}"),
        ("server start to first answer, s", f"{ready_s:.2f}"),
    ]
    harness.record(
        name="server_latency",
        title="searchmm server latency",
        output=args.output,
        config={
            **harness.model_config_fields(args, spec, photos),
            "count": summary.encoded_images,
            "k": args.k,
            "queries": len(QUERIES),
            "device": device,
            "threads": args.threads or "torch default",
        },
        rows=rows,
        measurements={
            "http_ms": http_ms,
            "in_process_ms": local_ms,
            "server_engine_ms": server_ms,
            "server_ready_s": ready_s,
        },
        headlines=[
            {
                "metric": "warm p50 HTTP / p50 in-process",
                "ratio": ratio,
                "target": f"<= {TARGET}",
                "met": ratio <= TARGET,
            }
        ],
        timed=[
            "HTTP: `GET /api/search?q=...&k=K` to a `searchmm serve` child process on 127.0.0.1, "
            "over one kept-alive connection (http.client), until the JSON body is read and parsed "
            "on the client: request parsing, validation, Engine.search_text in the server's "
            "thread pool, hit JSON with thumbnail/image URLs, response.",
            "Engine time inside the server: the `Server-Timing` header of each answer, the time "
            "of Engine.search_text in the server's worker thread (informative, not in the ratio).",
            "In-process: Engine.search_text(q, k) in this process, on its own Engine over the same "
            "index directory (store checks, text encode, FAISS search, metadata join).",
            "Both: 50 distinct queries after one untimed pass of each over all of them (which also "
            "checks that both return the same items); the order of the two alternates query by "
            "query. The server is idle while the in-process query runs, and the other way round.",
            "Server start: from launching `searchmm serve` until /api/health first answers "
            "(imports, model load, warm-up queries, bind); not part of the ratio.",
        ],
    )


if __name__ == "__main__":
    main()
