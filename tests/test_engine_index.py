"""The exact and ANN index paths through the engine, reindex, and damaged index files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import invoke, invoke_json
from helpers.files import make_image
from helpers.store import index_ids, stored_items
from searchmm import Engine, ModelSpec, SearchmmError


def _top_ids(index_dir: Path, query: str, k: int = 5) -> list[int]:
    return [h["id"] for h in invoke_json("query", query, "--index-dir", index_dir, "-k", str(k))]


@pytest.mark.parametrize(
    ("chosen", "expected"), [("auto", "IVF4,Flat"), ("HNSW32", "IDMap2,HNSW32")]
)
def test_ann_index_chosen_by_size_and_kept_consistent(
    tmp_path: Path, photo_dir: Path, tiny_config: Path, chosen: str, expected: str
) -> None:
    index_dir = tmp_path / "idx"
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(index_dir, model=spec, exact_threshold=4) as engine:
        engine.ingest([photo_dir])
        # Chosen by size: 10 vectors over the threshold of 4, nlist = 2 ** round(log2(sqrt(10))).
        assert engine.stats().indexes["image"].spec == "IVF4,Flat"
        if chosen != "auto":
            engine.reindex(chosen)
        for path in sorted(photo_dir.rglob("*.*")):
            hit = engine.search_image(path, k=1)[0]
            assert hit.path == str(path) and hit.score == pytest.approx(1.0, abs=1e-4)
        # IVF removes ids in place; HNSW cannot, so a deletion rebuilds it: both match the store.
        (photo_dir / "coffee.jpg").unlink()
        make_image(photo_dir / "late.png", seed=77)
        summary = engine.ingest([photo_dir])
        assert (summary.new, summary.removed) == (1, 1)
        # Still 10 vectors: auto keeps its IVF4, a chosen spec is kept across the rebuild.
        assert engine.stats().indexes["image"].spec == expected
    assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())


def test_reindex_with_any_factory_string_gives_the_same_results(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    exact = _top_ids(index_dir, "a cat on a couch")
    stats = invoke_json("stats", "--index-dir", index_dir)
    assert stats["indexes"]["image"]["spec"] == "IDMap2,Flat"

    for factory in ("HNSW32", "IVF2,Flat", "auto"):
        specs = invoke_json("reindex", "--index-spec", factory, "--index-dir", index_dir)
        assert factory.split(",")[0] in specs["image"] or (
            factory == "auto" and specs["image"] == "IDMap2,Flat"
        )
        assert _top_ids(index_dir, "a cat on a couch") == exact, factory

    bad = invoke("reindex", "--index-spec", "NoSuchIndex99", "--index-dir", index_dir, check=False)
    assert bad.returncode == 1 and "NoSuchIndex99" in bad.stderr
    assert _top_ids(index_dir, "a cat on a couch") == exact  # a bad spec broke nothing
    assert invoke_json("ingest", photo_dir, "--index-dir", index_dir)["failed"] == []


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_damaged_index_file_is_rebuilt_from_the_store(
    tmp_path: Path, photo_dir: Path, tiny_config: Path, damage: str
) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    expected = _top_ids(index_dir, "a rocket")
    index_file = index_dir / "images.faiss"
    if damage == "delete":
        index_file.unlink()
    elif damage == "truncate":
        index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])
    else:
        index_file.write_bytes(b"not a faiss index at all")
    result = invoke("query", "a rocket", "--index-dir", index_dir, "-k", "5", "--json")
    assert "rebuilding it from the store" in result.stderr
    assert [h["id"] for h in json.loads(result.stdout)] == expected
    assert index_ids(index_dir, "image") == set(
        stored_items(index_dir, "image").values()
    )  # saved again


def test_batch_search_and_embeddings_agree_with_single_queries(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "idx", model=spec) as engine:
        engine.ingest([photo_dir])
        ids, vectors = engine.embeddings("images")
        assert len(ids) == len(vectors) == len(stored_items(engine.index_dir, "image"))
        scores, found = engine.search_batch(vectors, target="images", k=3)
        assert found[:, 0].tolist() == ids.tolist()  # each vector finds its own item first
        single = engine.search_vector(vectors[0], k=3)
        assert [h.item.id for h in single] == found[0].tolist()
        np.testing.assert_allclose([h.score for h in single], scores[0], atol=1e-6)
        with pytest.raises(SearchmmError, match="queries must be"):
            engine.search_batch(vectors[:, :5])


def test_more_like_this_by_item_id(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    with Engine(tmp_path / "idx", model=ModelSpec.from_options(model_config=tiny_config)) as engine:
        engine.ingest([photo_dir])
        cat = stored_items(engine.index_dir, "image")[str(photo_dir / "chelsea.jpg")]
        hits = engine.search_item(cat, k=3)
        assert hits[0].item.id == cat and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert [h.item.id for h in hits] == [
            h.item.id for h in engine.search_image(photo_dir / "chelsea.jpg", k=3)
        ]
        with pytest.raises(SearchmmError, match="no item 999999"):
            engine.search_item(999999)


def test_a_warm_engine_says_when_everything_was_removed_meanwhile(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    """Once its model is loaded an engine skips the emptiness check of each query and reads
    the caught-up index's count instead: the same error, after another writer removed all."""
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec.from_options(model_config=tiny_config)) as writer:
        writer.ingest([photo_dir])
    with Engine(index_dir) as reader:
        assert reader.search_text("a cat", k=1)
        with Engine(index_dir) as other:
            other.remove([photo_dir])
        with pytest.raises(SearchmmError, match="holds no images: ingest some"):
            reader.search_text("a cat", k=1)
