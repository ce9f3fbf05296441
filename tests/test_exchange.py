"""`searchmm export`: the store's vectors and metadata in clip-retrieval's layout, read back with
numpy and pyarrow and compared with the store, item by item."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers.cli import invoke, invoke_json
from helpers.files import COCO_SAMPLE
from searchmm import Engine, ModelSpec, SearchmmError


def read_kind(
    root: Path, emb: str, meta: str
) -> tuple[np.ndarray, list[dict[str, Any]], list[int]]:
    """Every shard of a kind in shard order: vectors, metadata rows, rows per shard."""
    shards = sorted((root / emb).glob("*.npy"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    arrays, rows = [], []
    for number, path in enumerate(shards):
        assert path.name == f"{emb}_{number}.npy"
        arrays.append(np.load(path))
        table = pq.read_table(root / meta / f"metadata_{number}.parquet")
        assert table.num_rows == len(arrays[-1])
        rows += table.to_pylist()
    assert len(list((root / meta).iterdir())) == len(shards)
    return np.concatenate(arrays), rows, [len(a) for a in arrays]


@pytest.fixture
def store(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> Path:
    lines = ["a cat on a couch", "the night sky", "一只猫坐在沙发上", "a cup of coffee", "rain"]
    (photo_dir / "notes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec.from_options(model_config=tiny_config)) as engine:
        engine.ingest([photo_dir], texts_in_folders=True)
    return index_dir


def test_an_export_reads_back_as_the_store_holds_it(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with Engine(store) as engine:
        summary = engine.export_embeddings(out, shard_size=3, dtype="float32")
        image_ids, image_vectors = engine.embeddings("images")
        text_ids, text_vectors = engine.embeddings("texts")
        items = {item.id: item for t in ("images", "texts") for item in engine.items(t)}
        identity = engine.model_spec().identity()
    vectors, rows, sizes = read_kind(out, "img_emb", "img_metadata")
    assert [r["id"] for r in rows] == image_ids.tolist() and summary.images == len(rows)
    assert vectors.dtype == np.float32 and np.array_equal(vectors, image_vectors)
    assert sizes[:-1] == [3] * (len(sizes) - 1) and 1 <= sizes[-1] <= 3
    for row in rows:
        item = items[row["id"]]
        assert (row["image_path"], row["width"], row["height"]) == (
            item.path,
            item.width,
            item.height,
        )
        assert row["content_digest"] == item.content_digest and row["mtime_ns"] > 0
    vectors, rows, _ = read_kind(out, "text_emb", "text_metadata")
    assert [r["id"] for r in rows] == text_ids.tolist() and np.array_equal(vectors, text_vectors)
    assert [r["caption"] for r in rows] == [items[r["id"]].text for r in rows]
    assert "一只猫坐在沙发上" in [r["caption"] for r in rows]
    assert {r["source"] for r in rows} == {items[text_ids[0]].path}
    assert [r["locator"] for r in rows] == [items[r["id"]].locator for r in rows]
    model = json.loads((out / "model.json").read_text())
    assert model["identity"] == identity and model["dtype"] == "float32"
    assert model["counts"] == {"images": len(image_ids), "texts": 5}
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_float16_export_keeps_the_rows_normalised(store: Path, tmp_path: Path) -> None:
    with Engine(store) as engine:
        engine.export_embeddings(tmp_path / "out")  # float16, one shard: the defaults
        _, stored = engine.embeddings("images")
    vectors, _, sizes = read_kind(tmp_path / "out", "img_emb", "img_metadata")
    assert vectors.dtype == np.float16 and sizes == [len(stored)]
    wide = vectors.astype(np.float32)
    assert np.allclose(np.linalg.norm(wide, axis=1), 1.0, atol=1e-3)
    assert float((wide * stored).sum(axis=1).min()) >= 0.9999


def test_an_export_never_writes_into_a_folder_with_files(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with Engine(store) as engine, pytest.raises(SearchmmError, match="not an empty folder"):
        engine.export_embeddings(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with Engine(tmp_path / "nothing") as engine, pytest.raises(SearchmmError, match="no index"):
        engine.export_embeddings(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()
    bad = invoke(
        "export", tmp_path / "other", "--index-dir", store, "--shard-size", "0", check=False
    )
    assert bad.returncode == 1 and "--shard-size" in bad.stderr
    assert not (tmp_path / "other").exists()


def test_a_bench_store_exports_through_the_cli(tmp_path: Path, tiny_config: Path) -> None:
    captions = COCO_SAMPLE / "captions_val2017_sample.json"
    if not captions.exists():
        pytest.skip(f"{COCO_SAMPLE} is not here")
    bench_dir, out = tmp_path / "bench", tmp_path / "out"
    invoke("bench", "coco", "--images", COCO_SAMPLE / "images", "--captions", captions,
           "--model-config", tiny_config, "--index-dir", bench_dir, "--workers", "0")  # fmt: skip
    summary = invoke_json("export", out, "--index-dir", bench_dir, "--dtype", "float32")
    assert (summary["images"], summary["texts"]) == (100, 500)
    vectors, rows, _ = read_kind(out, "img_emb", "img_metadata")
    with Engine(bench_dir) as engine:
        ids, stored = engine.embeddings("images")
    assert [r["id"] for r in rows] == ids.tolist() and np.array_equal(vectors, stored)
    assert all(Path(r["image_path"]).parent == COCO_SAMPLE / "images" for r in rows)
    plain = invoke("export", tmp_path / "again", "--index-dir", bench_dir)
    assert "100 image and 500 text vectors (float16)" in plain.stdout
