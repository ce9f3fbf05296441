"""Incremental ingest: only new or changed files are encoded; store and index follow the disk."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.files import make_image
from helpers.store import index_ids, stored_items
from searchmm import Engine, ModelSpec


class EncodeCounter:
    """Counts images through the real vision tower with a hook: independent of our summary."""

    def __init__(self, engine: Engine) -> None:
        self.images = 0
        engine.load_model().model.visual.register_forward_hook(self._hook)

    def _hook(self, _module: object, inputs: tuple, _output: object) -> None:
        self.images += inputs[0].shape[0]


@pytest.fixture
def engine(tmp_path: Path, tiny_config: Path) -> Engine:
    # torch: the counter counts ingest's encodes; an ONNX export's checks would add their own.
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "idx", model=spec, backend="torch") as engine:
        yield engine


def _paths(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*") if p.is_file()}


def _assert_store_and_index_match_disk(engine: Engine, folder: Path) -> None:
    items = stored_items(engine.index_dir, "image")
    assert set(items) == _paths(folder)
    assert index_ids(engine.index_dir, "image") == set(items.values())


def test_add_modify_delete_rename(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(6):
        make_image(folder / f"img-{i}.png", seed=i)
    counter = EncodeCounter(engine)
    first = engine.ingest([folder])
    assert (first.new, counter.images) == (6, 6)
    _assert_store_and_index_match_disk(engine, folder)
    ids_before = stored_items(engine.index_dir, "image")

    make_image(folder / "new-a.png", seed=100)
    make_image(folder / "sub" / "new-b.png", seed=101)
    make_image(folder / "img-1.png", seed=200)  # modified: new content, same name
    (folder / "img-2.png").unlink()  # deleted
    (folder / "img-3.png").rename(folder / "sub" / "moved-3.png")  # renamed into a subfolder
    os.utime(folder / "img-4.png", ns=(1, 10**18))  # touched: same bytes, new mtime
    counter.images = 0

    second = engine.ingest([folder])
    assert counter.images == 3 == second.encoded_images  # 2 new + 1 modified, nothing else
    assert (second.new, second.changed, second.renamed, second.removed) == (2, 1, 1, 1)
    assert second.unchanged == 3  # img-0, img-5 (same stat), img-4 (same digest after a touch)
    _assert_store_and_index_match_disk(engine, folder)
    ids_after = stored_items(engine.index_dir, "image")
    assert ids_after[str(folder / "sub" / "moved-3.png")] == ids_before[str(folder / "img-3.png")]
    assert ids_after[str(folder / "img-1.png")] == ids_before[str(folder / "img-1.png")]

    hits = engine.search_image(folder / "img-1.png", k=1)
    assert hits[0].path == str(folder / "img-1.png") and hits[0].score == pytest.approx(
        1.0, abs=1e-4
    )

    counter.images = 0
    third = engine.ingest([folder])
    assert counter.images == 0 and third.unchanged == 7 and third.new == third.removed == 0


def test_copies_reuse_vectors_and_other_roots_are_left_alone(
    engine: Engine, tmp_path: Path
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    make_image(a / "x.png", seed=1)
    make_image(b / "y.png", seed=2)
    engine.ingest([a, b])
    counter = EncodeCounter(engine)
    shutil.copy2(a / "x.png", a / "x-copy.png")
    (b / "y.png").unlink()
    summary = engine.ingest([a])  # only `a` is scanned: `b`'s vanished file is not its business
    assert counter.images == 0 and summary.reused == 1 and summary.removed == 0
    assert set(stored_items(engine.index_dir, "image")) == {
        str(a / "x.png"),
        str(a / "x-copy.png"),
        str(b / "y.png"),
    }
    summary = engine.ingest([b])
    assert summary.removed == 1
    assert set(stored_items(engine.index_dir, "image")) == {str(a / "x.png"), str(a / "x-copy.png")}


def test_remove_command_and_stale_index_catch_up(engine: Engine, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(5):
        make_image(folder / ("keep" if i < 3 else "drop") / f"{i}.png", seed=i)
    engine.ingest([folder])
    index_file = engine.index_dir / "images.faiss"
    stale_copy = index_file.read_bytes()

    assert engine.remove([folder / "drop"]) == 2
    _assert_store_and_index_match_disk(engine, folder / "keep")

    # An index file that is behind the store (saved before the removal) is caught up on open.
    index_file.write_bytes(stale_copy)
    with Engine(engine.index_dir) as reader:
        hits = reader.search_image(folder / "keep" / "0.png", k=10)
    assert {h.path for h in hits} == {str(p) for p in (folder / "keep").iterdir()}
    assert index_ids(engine.index_dir, "image") == set(
        stored_items(engine.index_dir, "image").values()
    )
