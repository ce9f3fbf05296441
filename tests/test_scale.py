"""The storage tier and the index range at small sizes: float16 stores, IVF-PQ re-ranked with
the stored vectors, the memory budget (measured in a subprocess), quantiser drift, exact batch
search. The sizes that matter are measured in bench/scale.py."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.cli import invoke, invoke_json
from searchmm import Engine, ModelSpec, SearchmmError
from searchmm.engine.storage import StorageOptions, parse_size
from searchmm.index.budget import estimate_bytes
from searchmm.index.specs import choose_spec
from searchmm.search.batch import EXACT_BATCH_QUERIES, exact_batch
from searchmm.vocabulary import Kind

DIM = 64  # the tiny model's


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clusters(rng: np.random.Generator, count: int, per: int, spread: float) -> np.ndarray:
    """`count` tight clusters of `per` unit vectors each: a query near a centre has its exact
    top-10 inside that cluster, well apart from every other."""
    centres = unit(rng.normal(size=(count, DIM)))
    points = centres[:, None, :] + spread * rng.normal(size=(count, per, DIM)) / np.sqrt(DIM)
    return unit(points.reshape(-1, DIM))


def shards(root: Path, vectors: np.ndarray, start: int = 0, dtype: str = "float16") -> Path:
    """clip-retrieval's layout (img_emb/ + metadata/), images that live on another machine."""
    for folder in ("img_emb", "metadata"):
        (root / folder).mkdir(parents=True)
    np.save(root / "img_emb" / "img_emb_0.npy", vectors.astype(dtype))
    paths = [f"/elsewhere/{i:08d}.jpg" for i in range(start, start + len(vectors))]
    pq.write_table(pa.table({"image_path": paths}), root / "metadata" / "metadata_0.parquet")
    return root


def blob_sizes(index_dir: Path) -> set[int]:
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        return {n for (n,) in db.execute("SELECT DISTINCT length(vector) FROM embeddings")}


@pytest.fixture
def tiny(tiny_config: Path) -> ModelSpec:
    return ModelSpec.from_options(model_config=tiny_config)


# -- storage ---------------------------------------------------------------------------------


def test_float16_store_keeps_half_the_bytes_and_the_cosines(tmp_path: Path, tiny_config) -> None:
    x = unit(np.random.default_rng(0).normal(size=(500, DIM)))
    source = shards(tmp_path / "emb", x, dtype="float32")
    half, full = tmp_path / "half", tmp_path / "full"
    args = ("--model-config", tiny_config, "--embedding-dtype")
    invoke_json("import", source, "--index-dir", half, *args, "float16")
    invoke_json("import", source, "--index-dir", full, "--model-config", tiny_config)
    assert blob_sizes(half) == {2 * DIM} and blob_sizes(full) == {4 * DIM}  # float32 shards
    with Engine(half) as engine:
        _, stored = engine.embeddings()
        hits = engine.search_vector(x[7], k=3)
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)  # unit again
    assert float(np.einsum("ij,ij->i", stored, x).min()) >= 0.9999
    assert hits[0].item.path == "/elsewhere/00000007.jpg" and hits[0].score > 0.9999


def test_ingest_into_a_float16_store(tmp_path: Path, photo_dir: Path, tiny_config) -> None:
    index_dir = tmp_path / "idx"
    args = ("--index-dir", index_dir, "--model-config", tiny_config)
    invoke_json("ingest", photo_dir, *args, "--embedding-dtype", "float16")
    assert blob_sizes(index_dir) == {2 * DIM}
    hits = invoke_json("query", "a photo", "--index-dir", index_dir, "-k", "2")
    assert len(hits) == 2 and all(-1.0 <= h["score"] <= 1.0 for h in hits)


def test_import_keeps_float16_shards_as_float16_and_refuses_a_change(
    tmp_path: Path, tiny_config
) -> None:
    x = unit(np.random.default_rng(1).normal(size=(300, DIM)))
    index_dir = tmp_path / "idx"
    invoke_json(
        "import", shards(tmp_path / "a", x), "--index-dir", index_dir, "--model-config", tiny_config
    )
    assert blob_sizes(index_dir) == {2 * DIM}
    before = (index_dir / "searchmm.db").read_bytes()
    more = shards(tmp_path / "b", x[:10], start=1000)
    result = invoke(
        "import", more, "--index-dir", index_dir, "--embedding-dtype", "float32", check=False
    )
    assert result.returncode == 1 and "keeps its vectors as float16" in result.stderr
    assert (index_dir / "searchmm.db").read_bytes() == before  # nothing written
    bad = invoke(
        "import", more, "--index-dir", index_dir, "--embedding-dtype", "bfloat16", check=False
    )
    assert bad.returncode == 1 and "float32 or float16" in bad.stderr


def test_a_new_store_has_16k_pages_and_gives_back_its_change_log(tmp_path: Path, tiny) -> None:
    x = unit(np.random.default_rng(7).normal(size=(20_000, DIM)))
    with Engine(tmp_path / "idx", model=tiny) as engine:
        engine.import_embeddings(shards(tmp_path / "emb", x))  # 20,000 changes, then pruned
    with sqlite3.connect(tmp_path / "idx" / "searchmm.db") as db:
        pragmas = [db.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "auto_vacuum")]
        assert pragmas == [16_384, 2]  # incremental
        assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 0
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0


def test_memory_sizes_parse() -> None:
    assert parse_size("8G") == 8 * 2**30 and parse_size("512m") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("4096") == 4096
    for bad in ("", "-1G", "8X", "G"):
        with pytest.raises(SearchmmError, match="memory size"):
            parse_size(bad)
    with pytest.raises(SearchmmError, match="> 0"):
        StorageOptions(memory_budget=0)


# -- the automatic choice and the budget -----------------------------------------------------


def test_the_budget_picks_the_most_exact_index_that_fits() -> None:
    n, d = 2_000_000, 512
    assert choose_spec(n, d) == choose_spec(n, d, budget=2**30) == "IVF1024,PQ128x4fs"
    codes, centroids, codebooks = int(n * (64 + 8) * 1.3), 4 * d * 1024, 4 * d * 16
    assert estimate_bytes("IVF1024,PQ128x4fs", n, d) == codes + centroids + codebooks
    assert choose_spec(n, d, budget=100 * 2**20) == "IVF1024,PQ32x4fs"  # 16 + 8 bytes
    assert choose_spec(50_000, d, budget=10 * 2**20) == "IVF256,PQ128x4fs"  # flat: 100 MB
    assert choose_spec(50_000, d, budget=200 * 2**20) == "IDMap2,Flat"
    with pytest.raises(SearchmmError, match="cannot hold an index of 2,000,000"):
        choose_spec(n, d, budget=2**20)


def test_ivf_pq_reranked_with_stored_vectors_is_exact(tmp_path: Path, tiny) -> None:
    rng = np.random.default_rng(2)
    x = clusters(rng, 200, 100, spread=0.35)
    queries = unit(x[::100] + 0.05 * rng.normal(size=(200, DIM)) / np.sqrt(DIM))
    exact = np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :10] + 1  # ids from 1
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=tiny, exact_threshold=1_000) as engine:
        engine.import_embeddings(shards(tmp_path / "emb", x, dtype="float32"))
        assert engine.reindex("IVF64,PQ8")["image"] == "IVF64,PQ8"  # 8 bytes a vector
        plain = [[h.item.id for h in engine.search_vector(q, k=10)] for q in queries]
        assert engine.reindex("auto")["image"] == "IVF128,PQ16x4fs"  # fast scan, 4-bit codes
        got = [[h.item.id for h in engine.search_vector(q, k=10)] for q in queries]
        hit = engine.search_vector(queries[0], k=10)[0]
        scores, ids = engine.search_batch(queries, k=10)
    assert np.array_equal(np.asarray(plain), exact) and np.array_equal(np.asarray(got), exact)
    assert hit.score == pytest.approx(float(queries[0] @ x[hit.item.id - 1]), abs=1e-6)
    assert np.array_equal(ids, exact)  # a batch is re-ranked too
    np.testing.assert_allclose(
        scores[:, 0], np.einsum("ij,ij->i", queries, x[ids[:, 0] - 1]), atol=1e-6
    )


BUDGET_PROBE = """
import json, sys
from searchmm import Engine
from searchmm.engine.storage import StorageOptions

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

import faiss, numpy as np
index_dir, budget = sys.argv[1], (int(sys.argv[2]) or None)
options = {"exact_threshold": 500_000, "storage": StorageOptions(memory_budget=budget)}
warm = np.random.default_rng(0).normal(size=(20_000, 64)).astype("float32")
small = faiss.index_factory(64, "IVF16,PQ8", faiss.METRIC_INNER_PRODUCT)
small.train(warm)  # FAISS's and BLAS's own buffers are the process's, not the index's
small.add(warm)
small.search(warm[:10], 10)
del small, warm
with Engine(index_dir, **options) as engine:
    engine.remove(["/nowhere"])  # opens the store for writing: SQLAlchemy is loaded
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = hwm()
    spec = engine.reindex()["image"]
    print(json.dumps({"spec": spec, "peak_added": hwm() - before}))
"""


def test_memory_budget_is_honoured_in_a_subprocess(tmp_path: Path, tiny) -> None:
    x = unit(np.random.default_rng(3).normal(size=(250_000, DIM)))  # 64 MB as float32
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=tiny, exact_threshold=500_000) as engine:
        engine.import_embeddings(shards(tmp_path / "emb", x, dtype="float32"))

    def reindex(budget: int) -> dict[str, object]:
        run = subprocess.run(
            [sys.executable, "-c", BUDGET_PROBE, str(index_dir), str(budget)],
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(run.stdout.splitlines()[-1])

    budget = 64 * 2**20
    unbounded, bounded = reindex(0), reindex(budget)
    assert unbounded["spec"] == "IDMap2,Flat" and bounded["spec"] == "IVF512,PQ16x4fs"
    assert int(unbounded["peak_added"]) > budget  # the test can fail: flat would not fit
    assert int(bounded["peak_added"]) <= budget


# -- drift -----------------------------------------------------------------------------------


def test_adds_from_new_topics_retrain_the_quantiser(tmp_path: Path, tiny, caplog) -> None:
    rng = np.random.default_rng(4)
    topics = clusters(rng, 400, 60, spread=0.5)  # 400 topics; the index sees half of them
    seen, unseen = topics[: 200 * 60], topics[200 * 60 :]
    first = seen[rng.permutation(len(seen))]
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=tiny, exact_threshold=1_000) as engine:
        engine.import_embeddings(shards(tmp_path / "a", first[:10_000]))
        same = engine.import_embeddings(shards(tmp_path / "b", first[10_000:], start=10_000))
        assert same.added == 2_000
        caplog.set_level("INFO", logger="searchmm")
        engine.search_vector(first[0], k=1)
        assert "drifted" not in caplog.text  # more of the trained distribution: kept
        engine.import_embeddings(shards(tmp_path / "c", unseen[:3_000], start=20_000))
        engine.search_vector(first[0], k=1)
    assert "the quantiser drifted" in caplog.text


# -- batches ---------------------------------------------------------------------------------


def test_large_batches_on_ivf_flat_are_searched_exactly(tmp_path: Path, tiny) -> None:
    rng = np.random.default_rng(5)
    x = unit(rng.normal(size=(5_000, DIM)))
    queries = unit(rng.normal(size=(EXACT_BATCH_QUERIES, DIM)))
    exact = np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :10] + 1
    with Engine(tmp_path / "idx", model=tiny) as engine:
        engine.import_embeddings(shards(tmp_path / "emb", x, dtype="float32"))
        engine.reindex("IVF64,Flat")
        _, few = engine.search_batch(queries[: EXACT_BATCH_QUERIES - 1], k=10)
        scores, many = engine.search_batch(queries, k=10)
    assert not np.array_equal(few, exact[:-1])  # nprobe 16 of 64 lists: approximate
    assert np.array_equal(many, exact)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ x.T, many - 1, 1), atol=1e-6)


def test_exact_batch_breaks_ties_by_id_and_pads(tmp_path: Path, tiny) -> None:
    x = unit(np.random.default_rng(6).normal(size=(3, DIM)))
    with Engine(tmp_path / "idx", model=tiny) as engine:
        engine.import_embeddings(shards(tmp_path / "emb", np.vstack([x, x[:1]]), dtype="float32"))
        reads = engine._directory.reads()
        scores, ids = exact_batch(reads, Kind.IMAGE, DIM, x[:1], 6)
    assert ids[0].tolist() == [1, 4, *ids[0, 2:4].tolist(), -1, -1]
    assert scores[0, 4] == -np.inf
