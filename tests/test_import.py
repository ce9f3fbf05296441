"""`searchmm import`: a `searchmm export` round-trips; clip-retrieval's layout comes in with
external items; bad folders are refused before the store is touched; re-imports change
nothing; a kill -9 mid-import resumes to the very same store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.cli import invoke, invoke_json
from helpers.files import make_image
from searchmm import Engine, ModelSpec, SearchmmError
from searchmm.errors import ModelMismatchError

DIM = 64  # the tiny model's


@pytest.fixture
def store(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> Path:
    lines = ["a cat on a couch", "the night sky", "一只猫坐在沙发上", "a cup of coffee"]
    (photo_dir / "notes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec.from_options(model_config=tiny_config)) as engine:
        engine.ingest([photo_dir], texts_in_folders=True)
    return index_dir


def dump(index_dir: Path) -> list[Any]:
    """Every item and vector of a store, and its change sequence: to compare two stores."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        items = db.execute(
            "SELECT i.*, e.vector FROM items i LEFT JOIN embeddings e ON e.item_id = i.id "
            "ORDER BY i.id"
        ).fetchall()
        model = db.execute("SELECT name, pretrained, config_json, seed, dim FROM model").fetchall()
    return [items, model]


def clip_retrieval_folder(root: Path, rows: int, photos: list[Path], seed: int = 0) -> Path:
    """clip-retrieval's layout: metadata/ shared by the image and text vectors of each pair;
    the first photos exist here, the other paths are on another machine."""
    rng = np.random.default_rng(seed)
    for folder in ("img_emb", "text_emb", "metadata"):
        (root / folder).mkdir(parents=True)
    paths = [str(p) for p in photos] + [f"/elsewhere/img_{i}.jpg" for i in range(rows)]
    for shard, (start, stop) in enumerate([(0, rows // 2), (rows // 2, rows)]):
        for name in ("img_emb", "text_emb"):
            vectors = rng.normal(size=(stop - start, DIM)).astype(np.float16)
            np.save(root / name / f"{name}_{shard}.npy", vectors)
        table = pa.table(
            {
                "image_path": paths[start:stop],
                "caption": [f"caption number {i}" for i in range(start, stop)],
                "url": [f"https://example.org/{i}.jpg" for i in range(start, stop)],
            }
        )
        pq.write_table(table, root / "metadata" / f"metadata_{shard}.parquet")
    return root


def test_an_export_imports_as_the_same_store(store: Path, tmp_path: Path) -> None:
    out, copy = tmp_path / "out", tmp_path / "copy"
    with Engine(store) as engine:
        engine.export_embeddings(out, shard_size=3, dtype="float32")
        answers = [(h.item.id, h.score) for h in engine.search_text("a cat", k=20)]
        text_answers = [(h.item.id, h.score) for h in engine.search_text("sky", target="texts")]
    summary = invoke_json("import", out, "--index-dir", copy)
    assert summary["added"] == len(dump(store)[0]) and summary["external"] == 0
    assert dump(copy) == dump(store)  # same ids, fields, metadata and vectors, bit for bit
    with Engine(copy) as engine:
        assert [(h.item.id, h.score) for h in engine.search_text("a cat", k=20)] == answers
        got = [(h.item.id, h.score) for h in engine.search_text("sky", target="texts")]
        assert got == text_answers
    again = invoke_json("import", out, "--index-dir", copy)
    assert (again["added"], again["updated"], again["unchanged"]) == (0, 0, summary["added"])
    assert dump(copy) == dump(store)


def test_a_float16_export_imports_within_its_precision(store: Path, tmp_path: Path) -> None:
    out, copy = tmp_path / "out", tmp_path / "copy"
    with Engine(store) as engine:
        engine.export_embeddings(out, dtype="float16")
        ids, vectors = engine.embeddings("images")
    with Engine(copy) as engine:
        engine.import_embeddings(out)
        got_ids, got = engine.embeddings("images")
    assert np.array_equal(got_ids, ids)
    assert (got * vectors).sum(axis=1).min() >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)  # normalised again


def test_clip_retrievals_layout_keeps_items_from_another_machine(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    photos = sorted(p for p in photo_dir.iterdir() if p.suffix in (".jpg", ".png"))[:2]
    folder = clip_retrieval_folder(tmp_path / "cr", 10, photos)
    index_dir = tmp_path / "idx"
    summary = invoke_json("import", folder, "--index-dir", index_dir, "--model-config", tiny_config)
    assert (summary["images"], summary["texts"], summary["added"]) == (10, 10, 20)
    assert summary["external"] == 8  # 2 of the 10 image paths are on this machine
    with Engine(index_dir) as engine:
        items = {i.path: i for i in engine.items("images")}
        captions = {i.text: i for i in engine.items("texts")}
        hits = engine.search_text("caption number 3", target="texts", k=10)
        assert len(hits) == 10
    assert items[str(photos[0])].external is False
    assert items[str(photos[0])].file_size == photos[0].stat().st_size
    assert items["/elsewhere/img_0.jpg"].external is True
    assert items["/elsewhere/img_0.jpg"].meta == {"url": "https://example.org/2.jpg"}
    caption = captions["caption number 7"]  # the caption of the pair's image, known by its text
    assert caption.path == "/elsewhere/img_5.jpg" and caption.locator.startswith("caption:")
    assert caption.external and caption.meta == {"url": "https://example.org/7.jpg"}
    # An ingest of the folder that holds the imported photos keeps every imported item...
    make_image(photo_dir / "new.png", seed=5)
    with Engine(index_dir) as engine:
        ingest = engine.ingest([photo_dir])
        assert ingest.removed == 0 and ingest.encoded_images == ingest.new
        assert len(engine.items("images")) == 10 + ingest.new
    # ...and `searchmm remove` removes external ones.
    invoke("remove", "/elsewhere", "--index-dir", index_dir)
    with Engine(index_dir) as engine:
        assert not [i for i in engine.items("images") if i.path.startswith("/elsewhere")]


def _corrupt(folder: Path, how: str) -> str:
    """Damage one shard of a clip-retrieval folder; the error the import must give."""
    last = folder / "text_emb" / "text_emb_1.npy"
    if how == "truncated npy":
        last.write_bytes(last.read_bytes()[:-40])
        return "not a readable .npy"
    if how == "missing column":
        table = pq.read_table(folder / "metadata" / "metadata_1.parquet").drop(["caption"])
        pq.write_table(table, folder / "metadata" / "metadata_1.parquet")
        return "no 'caption' column"
    if how == "rows do not match":
        np.save(last, np.ones((2, DIM), np.float16))
        return "describes 5 rows, but its shard holds 2 vectors"
    if how in ("NaN vector", "zero vector"):
        vectors = np.load(last)
        vectors[3] = np.nan if how == "NaN vector" else 0
        np.save(last, vectors)
        return "row 3 is not a usable vector"
    if how == "wrong dim":
        for name in ("img_emb", "text_emb"):
            for shard in (0, 1):
                np.save(folder / name / f"{name}_{shard}.npy", np.ones((5, 32), np.float16))
        return "32-d vectors, but searchmm-tiny .* makes 64-d ones"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated npy",
        "missing column",
        "rows do not match",
        "NaN vector",
        "zero vector",
        "wrong dim",
    ],
)
def test_a_bad_folder_is_refused_and_nothing_is_written(
    how: str, tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    folder = clip_retrieval_folder(tmp_path / "cr", 10, [])
    message = _corrupt(folder, how)
    spec = ModelSpec.from_options(model_config=tiny_config)
    with (
        Engine(tmp_path / "new", model=spec) as engine,
        pytest.raises(SearchmmError, match=message),
    ):
        engine.import_embeddings(folder)
    assert not (tmp_path / "new").exists()  # a new store is not even created
    existing = tmp_path / "existing"
    with Engine(existing, model=spec) as engine:
        engine.ingest([photo_dir])
    before = dump(existing)
    result = invoke("import", folder, "--index-dir", existing, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") <= 2, result.stderr
    assert dump(existing) == before


def test_another_models_vectors_are_refused_before_anything_is_written(
    store: Path, tmp_path: Path, tiny_config: Path
) -> None:
    out = tmp_path / "out"
    with Engine(store) as engine:
        engine.export_embeddings(out)
    other = tmp_path / "other.json"
    config = json.loads(tiny_config.read_text())
    other.write_text(json.dumps({**config, "vision_cfg": {**config["vision_cfg"], "layers": 1}}))
    with pytest.raises(ModelMismatchError, match=r"model\.json"):
        Engine(tmp_path / "a", model=ModelSpec.from_options(model_config=other)).import_embeddings(
            out
        )
    cr = clip_retrieval_folder(tmp_path / "cr", 6, [])
    before = dump(store)
    with pytest.raises(ModelMismatchError, match="refusing to import"):
        Engine(store, model=ModelSpec.from_options(model_config=other)).import_embeddings(cr)
    assert dump(store) == before
    unnamed = tmp_path / "unnamed"
    with pytest.raises(SearchmmError, match="does not say which model"):
        Engine(unnamed).import_embeddings(cr)
    assert not unnamed.exists()


KILLED_IMPORT = """
import os, signal, sys
from searchmm import Engine, ModelSpec
spec = ModelSpec.from_options(model_config=sys.argv[3])
def progress(done):
    if done >= 3 * 40:  # three batches committed: die as a kill -9 would, mid-import
        os.kill(os.getpid(), signal.SIGKILL)
with Engine(sys.argv[2], model=spec) as engine:
    engine.import_embeddings(sys.argv[1], batch_rows=40, progress=progress)
"""


def test_a_killed_import_resumes_to_the_same_store(tmp_path: Path, tiny_config: Path) -> None:
    folder = clip_retrieval_folder(tmp_path / "cr", 400, [])
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "whole", model=spec) as engine:
        engine.import_embeddings(folder, batch_rows=40)
    resumed = tmp_path / "resumed"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(folder), str(resumed), str(tiny_config)],
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    partial = len(dump(resumed)[0])
    assert 0 < partial < 800
    with Engine(resumed, model=spec) as engine:
        summary = engine.import_embeddings(folder, batch_rows=40)
        assert summary.unchanged == partial and summary.added == 800 - partial
        assert len(engine.search_text("caption", target="texts", k=1000)) == 400
    assert dump(resumed) == dump(tmp_path / "whole")


def test_a_moved_folder_imports_as_the_same_items(tmp_path: Path, tiny_config: Path) -> None:
    """Images are known by path, clip-retrieval's captions by their image and text: not by
    where the folder was."""
    folder = clip_retrieval_folder(tmp_path / "cr", 6, [])
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "idx", model=spec) as engine:
        engine.import_embeddings(folder)
        before = dump(tmp_path / "idx")
        summary = engine.import_embeddings(shutil.move(folder, tmp_path / "moved"))
    assert (summary.unchanged, summary.added, summary.updated) == (12, 0, 0)
    assert dump(tmp_path / "idx") == before


def test_an_image_of_several_captions_is_one_item(tmp_path: Path, tiny_config: Path) -> None:
    """COCO-style pairs: five rows share an image (and its vector), each with its caption."""
    folder = tmp_path / "pairs"
    for name in ("img_emb", "text_emb", "metadata"):
        (folder / name).mkdir(parents=True)
    rng = np.random.default_rng(1)
    image = rng.normal(size=DIM).astype(np.float32)
    np.save(folder / "img_emb" / "img_emb_0.npy", np.stack([image] * 5))
    np.save(folder / "text_emb" / "text_emb_0.npy", rng.normal(size=(5, DIM)).astype(np.float32))
    captions = [f"a dog, take {i}" for i in range(5)]
    pq.write_table(
        pa.table({"image_path": ["/far/dog.jpg"] * 5, "caption": captions}),
        folder / "metadata" / "metadata_0.parquet",
    )
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "idx", model=spec) as engine:
        summary = engine.import_embeddings(folder, batch_rows=3)
        assert (summary.added, summary.unchanged) == (6, 4)
        assert [i.path for i in engine.items("images")] == ["/far/dog.jpg"]
        assert sorted(i.text for i in engine.items("texts")) == captions


def test_names_that_are_not_utf8_round_trip(tmp_path: Path, tiny_config: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    odd = Path(os.fsdecode(bytes(photos) + b"/caf\xe9-\xff.png"))
    make_image(odd, seed=1)
    make_image(photos / "plain.png", seed=2)
    (photos / "notes.txt").write_text("a cat\nthe sky\n", encoding="utf-8")
    notes = Path(os.fsdecode(bytes(photos) + b"/n\xe9.txt"))
    notes.write_text("latin name, utf-8 text\n", encoding="utf-8")
    store, out, copy = tmp_path / "idx", tmp_path / "out", tmp_path / "copy"
    with Engine(store, model=ModelSpec.from_options(model_config=tiny_config)) as engine:
        engine.ingest([photos], texts_in_folders=True)
        engine.export_embeddings(out, dtype="float32")
    invoke_json("import", out, "--index-dir", copy)
    assert dump(copy) == dump(store)  # the odd names exactly, and found on disk (not external)
    with Engine(copy) as engine:
        paths = {item.path: item.external for item in engine.items()}
    assert paths == {str(odd): False, str(photos / "plain.png"): False}
