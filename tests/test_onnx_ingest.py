"""Ingest with onnxruntime on the CPU: a second store of a model needs no torch at all, because
the machine keeps the first store's verified export; plus the cheaper torch path (checkpoint
digests remembered, no initialisation of weights a checkpoint overwrites)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from searchmm import Engine, ModelSpec, SearchmmError
from searchmm.model.onnx_encoder import OnnxEncoder
from searchmm.model.onnx_files import export_dir, shared_root
from searchmm.sources.files import file_digest

INGEST_PROBE = """
import json, sys
from searchmm import Engine, ModelSpec
index_dir, photos, config = sys.argv[1:4]
spec = ModelSpec.from_options(model_config=config)
with Engine(index_dir, model=spec, device="auto") as engine:
    summary = engine.ingest([photos], texts_in_folders=True)
heavy = sorted(m for m in ("torch", "torchvision", "open_clip", "timm") if m in sys.modules)
print(json.dumps({"encoded": summary.encoded_images, "texts": summary.encoded_texts,
                  "failed": len(summary.failed), "heavy": heavy}))
"""


def _ingest_process(index_dir: Path, photos: Path, config: Path, **env: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", INGEST_PROBE, str(index_dir), str(photos), str(config)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture
def first_store(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> Path:
    """A store ingested with torch (no export anywhere yet): it exports the model."""
    (photo_dir / "notes.txt").write_text("a cat on a couch\nthe night sky\n", encoding="utf-8")
    index_dir = tmp_path / "first"
    with Engine(index_dir, model=ModelSpec.from_options(model_config=tiny_config)) as engine:
        engine.ingest([photo_dir], texts_in_folders=True)
    return index_dir


def _vectors(index_dir: Path) -> dict[str, np.ndarray]:
    with Engine(index_dir) as engine:
        ids, vectors = engine.embeddings("images")
        paths = {item.id: item.path for item in engine.items("images")}
    return {paths[i]: v for i, v in zip(ids.tolist(), vectors, strict=True)}


def test_the_first_export_is_kept_for_the_machine_without_a_copy(first_store: Path) -> None:
    spec = Engine(first_store).model_spec()
    own, shared = export_dir(first_store, spec), export_dir(shared_root(), spec)
    assert sorted(p.name for p in own.iterdir()) == sorted(p.name for p in shared.iterdir())
    for path in own.iterdir():
        assert path.stat().st_ino == (shared / path.name).stat().st_ino  # hard links


def test_a_second_store_of_the_model_ingests_without_torch(
    first_store: Path, tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    second = tmp_path / "second"
    report = _ingest_process(second, photo_dir, tiny_config)
    assert report["heavy"] == []
    assert report["encoded"] == len(_vectors(first_store)) and report["failed"] == 0
    assert report["texts"] == 2
    ours, theirs = _vectors(second), _vectors(first_store)
    assert ours.keys() == theirs.keys()
    cosines = [float(ours[p] @ theirs[p]) for p in ours]
    assert min(cosines) >= 0.99999  # the export's own bar against torch
    spec = Engine(second).model_spec()
    assert (export_dir(second, spec) / "manifest.json").exists()  # the store keeps its own
    with Engine(second) as engine, Engine(first_store, backend="torch") as reference:
        assert isinstance(engine.load_model(), OnnxEncoder)
        ours_hits = engine.search_text("a cat on a couch", k=5)
        theirs_hits = reference.search_text("a cat on a couch", k=5)
        assert [h.path for h in ours_hits] == [h.path for h in theirs_hits]
        stored = engine.stats().model
        assert stored is not None and "onnxruntime" in stored.software


def test_the_torch_backend_still_ingests_with_torch(
    first_store: Path, tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    second = tmp_path / "second"
    report = _ingest_process(second, photo_dir, tiny_config, SEARCHMM_BACKEND="torch")
    assert "torch" in report["heavy"] and "open_clip" in report["heavy"]
    assert not list(second.glob("onnx-*"))  # the torch backend never makes nor links one


def test_the_onnx_backend_without_any_export_is_refused_before_a_store_exists(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    spec = ModelSpec.from_options(model_config=tiny_config)
    with (
        Engine(index_dir, model=spec, backend="onnx") as engine,
        pytest.raises(SearchmmError, match="no verified ONNX export"),
    ):
        engine.ingest([photo_dir])
    assert not index_dir.exists()


def test_a_checkpoint_digest_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    checkpoint = tmp_path / "weights.safetensors"
    checkpoint.write_bytes(b"first version of the weights")
    first = ModelSpec.from_options("ViT-B-32", str(checkpoint)).checkpoint_digest
    assert first == file_digest(str(checkpoint))
    (record,) = (shared_root().parent / "digests").iterdir()
    entry = json.loads(record.read_text())
    assert entry["path"] == str(checkpoint) and entry["digest"] == first
    entry["digest"] = "remembered"  # what a second command reads, instead of hashing again
    record.write_text(json.dumps(entry))
    assert ModelSpec.from_options("ViT-B-32", str(checkpoint)).checkpoint_digest == "remembered"
    checkpoint.write_bytes(b"other version of the weight")  # same size, new mtime
    os.utime(checkpoint, ns=(1, entry["state"][1] + 1))
    again = ModelSpec.from_options("ViT-B-32", str(checkpoint)).checkpoint_digest
    assert again == file_digest(str(checkpoint)) != first


def test_a_checkpoint_loads_exactly_without_initialising_first(
    tmp_path: Path, tiny_config: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    from searchmm.model.loading import load_encoder

    initialisers = {name: getattr(torch.nn.init, name) for name in ("normal_", "uniform_")}
    random = load_encoder(ModelSpec.from_options(model_config=tiny_config, seed=3), "cpu")
    checkpoint = tmp_path / "tiny.safetensors"
    state = {k: v.contiguous() for k, v in random.model.state_dict().items()}
    save_file(state, str(checkpoint))
    spec = ModelSpec.from_options(pretrained=str(checkpoint), model_config=tiny_config)
    loaded = load_encoder(spec, "cpu").model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert {name: getattr(torch.nn.init, name) for name in initialisers} == initialisers
    seeded = load_encoder(ModelSpec.from_options(model_config=tiny_config, seed=3), "cpu")
    assert all(torch.equal(seeded.model.state_dict()[k], state[k]) for k in state)
    partial = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in state.items() if k != "logit_scale"}, str(partial))
    with pytest.raises(SearchmmError):  # strict: a missing weight is never left uninitialised
        load_encoder(ModelSpec.from_options(pretrained=str(partial), model_config=tiny_config))


def test_the_faster_runtime_encodes_by_the_size_of_the_ingest(
    first_store: Path, tmp_path: Path, tiny_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the threshold onnxruntime (it starts seconds sooner), above it torch (it encodes
    faster per image); the summary says which."""
    from helpers.files import make_image
    from searchmm import defaults

    monkeypatch.setattr(defaults, "ONNX_INGEST_IMAGES", 5)
    spec = ModelSpec.from_options(model_config=tiny_config)
    folder = tmp_path / "new"
    for i in range(4):
        make_image(folder / "few" / f"{i}.png", seed=100 + i)
    for i in range(6):
        make_image(folder / "many" / f"{i}.png", seed=200 + i)
    with Engine(tmp_path / "second", model=spec) as engine:
        few = engine.ingest([folder / "few"])
    with Engine(tmp_path / "second") as engine:
        many = engine.ingest([folder / "many"])
        again = engine.ingest([folder / "many"])
    assert (few.encoded_images, few.encoded_with) == (4, "onnxruntime")
    assert (many.encoded_images, many.encoded_with) == (6, "torch")
    assert (again.encoded_images, again.encoded_with) == (0, None)
