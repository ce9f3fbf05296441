"""Client mode: `searchmm query` answered by the `searchmm serve` of the same index directory,
with the same output as the local path, and the local path when the server is gone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.server import Served, ServerProcess, build_index
from searchmm.server.registry import record_path, running_server

QUERIES = (
    ["a cat sleeping on a sofa"],
    ["a rocket", "--target", "texts", "-k", "3"],
    ["--add", "text:a cup of coffee", "--sub", "0.5=text:a table", "--offset", "2", "-k", "4"],
    ["galaxies", "--target", "texts", "--where", "author=bo", "--threshold", "-1"],
    ["a photo", "--path", "*/generated/*", "--min-width", "50"],
)

PROBE = """
import json, sys
from searchmm.cli.app import run
sys.argv = ["searchmm", *sys.argv[1:]]
code = run()
loaded = sorted(
    m for m in ("torch", "onnxruntime", "sqlalchemy", "faiss", "numpy") if m in sys.modules
)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def _requests(server: ServerProcess) -> int:
    return server.log().count('"POST /api/query HTTP/1.1" 200')


def test_queries_go_to_the_server_and_answer_as_the_local_path(served: Served) -> None:
    assert running_server(served.index_dir) is not None
    for query in QUERIES:
        before = _requests(served.server)
        via_server = run_cli("query", *query, "--index-dir", served.index_dir, "--json")
        assert _requests(served.server) == before + 1, query
        local = run_cli("query", *query, "--index-dir", served.index_dir, "--json", "--no-server")
        assert _requests(served.server) == before + 1
        _same_answer(via_server.stdout, local.stdout)
        assert json.loads(local.stdout), query  # each query finds something to compare
    plain = ["query", "a cat", "--index-dir", served.index_dir]
    served_table, local_table = run_cli(*plain).stdout, run_cli(*plain, "--no-server").stdout
    assert [line.split()[::2] for line in served_table.splitlines()] == [
        line.split()[::2] for line in local_table.splitlines()
    ]  # rank and path columns: the scores are checked above


def _same_answer(served: str, local: str) -> None:
    """The same hits in the same order; a score may differ in its last printed digit (the
    server's encoder prepacks its weights, a one-shot query's does not: the sums of a short
    text's few rows are taken in another order)."""
    a, b = json.loads(served), json.loads(local)
    assert [{**hit, "score": None} for hit in a] == [{**hit, "score": None} for hit in b]
    assert [hit["score"] for hit in a] == pytest.approx([hit["score"] for hit in b], abs=2e-6)


def test_a_client_loads_no_model_and_no_store(served: Served) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "query", "a cat", "--index-dir", str(served.index_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}
    assert "a cat" not in done.stdout and "rank" in done.stdout


def test_a_bad_query_gets_the_local_error(served: Served) -> None:
    cancelling = ["query", "--add", "text:a cat", "--sub", "text:a cat"]
    via_server = run_cli(*cancelling, "--index-dir", served.index_dir, check=False)
    local = run_cli(*cancelling, "--index-dir", served.index_dir, "--no-server", check=False)
    assert via_server.returncode == local.returncode == 1
    assert via_server.stderr == local.stderr
    assert "cancel each other out" in local.stderr


def test_a_killed_server_is_passed_over(
    tmp_path: Path, real_photos: Path, tiny_config: Path
) -> None:
    index_dir, _ = build_index(tmp_path, real_photos, tiny_config)
    expected = run_cli("query", "a cat", "--index-dir", index_dir, "--json", "--no-server").stdout
    server = ServerProcess(index_dir, "--device", "cpu", log_path=tmp_path / "server.log")
    server.start()
    try:
        assert run_cli("query", "a cat", "--index-dir", index_dir, "--json").stdout == expected
        assert _requests(server) == 1
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)  # no shutdown: its record stays behind
        server.process.wait()
    finally:
        server.stop()
    assert record_path(index_dir).exists() and running_server(index_dir) is None
    assert run_cli("query", "a cat", "--index-dir", index_dir, "--json").stdout == expected
