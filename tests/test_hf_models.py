"""Models with a Hugging Face tokenizer (the SigLIP family) end to end: ingest, query in English
and Chinese, export, through open_clip's own HF text path on a small real tokenizer built here,
with the preprocessing open_clip publishes for SigLIP (squash resize, mean and std 0.5)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import invoke, invoke_json
from helpers.hf_models import CORPUS, siglip_model_dir, siglip_preprocess
from searchmm import Engine, ModelSpec
from searchmm.model.loading import load_encoder
from searchmm.model.onnx_files import find_export, rejected_path


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return siglip_model_dir(tmp_path_factory.mktemp("siglip"))


@pytest.fixture
def siglip_store(tmp_path: Path, photo_dir: Path, siglip_dir: Path) -> Path:
    (photo_dir / "captions.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    index_dir = tmp_path / "idx"
    summary = invoke_json("ingest", photo_dir, "--texts", "--model", f"local-dir:{siglip_dir}",
                          "--index-dir", index_dir, "--workers", "0")  # fmt: skip
    assert summary["failed"] == [] and summary["encoded_texts"] == len(CORPUS)
    return index_dir


def test_the_tokenizer_and_preprocessing_are_open_clips_own(siglip_dir: Path) -> None:
    from transformers import AutoTokenizer

    encoder = load_encoder(ModelSpec.from_options(f"local-dir:{siglip_dir}"), "cpu")
    hf = AutoTokenizer.from_pretrained(siglip_dir)
    for text in ("a cat on a couch", "一只猫坐在沙发上"):
        ids = encoder.tokenizer([text])[0].tolist()
        expected = hf(text).input_ids  # canonicalize leaves these as they are
        assert ids[: len(expected)] == expected and set(ids[len(expected) :]) <= {0}
    resize, *_, normalize = encoder.transform.transforms
    assert tuple(resize.size) == (224, 224)  # squash: both sides, no centre crop
    published = siglip_preprocess()
    assert tuple(normalize.mean) == tuple(published["mean"]) == (0.5, 0.5, 0.5)


def test_queries_in_english_and_chinese_find_their_texts(
    siglip_store: Path, photo_dir: Path
) -> None:
    for text in ("a cat on a couch", "一只猫坐在沙发上", "太空中漂浮的宇航员"):
        hits = invoke_json(
            "query", text, "--target", "texts", "--index-dir", siglip_store, "-k", "3"
        )
        assert hits[0]["text"] == text and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    hits = invoke_json("query", "--image", photo_dir / "chelsea.jpg", "--index-dir", siglip_store)
    assert hits[0]["path"] == str(photo_dir / "chelsea.jpg")
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


PROBE = """
import json, sys
from searchmm import Engine
with Engine(sys.argv[1], quick_start=True) as engine:
    texts = [[h.item.id for h in engine.search_text(t, target="texts", k=5)] for t in sys.argv[3:]]
    image = [h.item.id for h in engine.search_image(sys.argv[2], k=5)]
heavy = sorted(m for m in ("torch", "torchvision", "open_clip", "transformers") if m in sys.modules)
print(json.dumps({"texts": texts, "image": image, "heavy": heavy}))
"""


def test_siglip_queries_need_neither_torch_nor_transformers(
    siglip_store: Path, photo_dir: Path, tmp_path: Path
) -> None:
    """The export holds SigLIP's squash preprocessing and its tokenizer as a plain
    tokenizer.json: a query process imports neither torch nor transformers, and answers as
    torch does."""
    import subprocess
    import sys

    spec = Engine(siglip_store).model_spec()
    found = find_export(siglip_store, spec)
    assert found is not None, rejected_path(siglip_store, spec).read_text()
    manifest = found[1]
    assert (manifest.tokenizer, manifest.clean, manifest.pixels.squash) == (
        "hf-tokenizers",
        "canonicalize",
        True,
    )
    assert not manifest.text_trim  # SigLIP pools the last position: its padding counts
    texts = ["a cat on a couch", "一只猫坐在沙发上", "The Rocket, on its PAD!", "咖啡" * 40]
    image = photo_dir / "chelsea.jpg"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(siglip_store), str(image), *texts],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert report["heavy"] == []
    with Engine(siglip_store, backend="torch") as reference:
        assert report["texts"] == [
            [h.item.id for h in reference.search_text(t, target="texts", k=5)] for t in texts
        ]
        assert report["image"] == [h.item.id for h in reference.search_image(image, k=5)]
    out = tmp_path / "vectors"
    invoke("export", out, "--index-dir", siglip_store, "--dtype", "float32")
    model = json.loads((out / "model.json").read_text())
    assert model["model"]["name"] == spec.name and model["counts"]["texts"] == len(CORPUS)
    with Engine(siglip_store) as engine:
        _, stored = engine.embeddings("texts")
    assert np.array_equal(np.load(out / "text_emb" / "text_emb_0.npy"), stored)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["ViT-B-16-SigLIP", "ViT-B-16-SigLIP2"])
def test_the_full_size_siglip_architectures_with_a_local_tokenizer(
    tmp_path: Path, real_photos: Path, architecture: str
) -> None:
    """SigLIP and SigLIP 2 as open_clip defines them (timm vision towers with attention
    pooling), random init, with the local tokenizer in place of the one on the hub; their
    exports answer as torch does."""
    import open_clip

    folder = siglip_model_dir(tmp_path, open_clip.get_model_config(architecture))
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec.from_options(f"local-dir:{folder}")) as engine:
        engine.ingest([real_photos])
    spec = Engine(index_dir).model_spec()
    assert find_export(index_dir, spec) is not None, rejected_path(index_dir, spec).read_text()
    query = sorted(real_photos.iterdir())[0]
    with Engine(index_dir) as onnx, Engine(index_dir, backend="torch") as reference:
        hits = onnx.search_image(query, k=3)
        assert hits[0].path == str(query) and hits[0].score == pytest.approx(1.0, abs=1e-4)
        for text in ("a cat on a couch", "一只猫"):
            ours, theirs = onnx.search_text(text, k=3), reference.search_text(text, k=3)
            assert [h.item.id for h in ours] == [h.item.id for h in theirs]
            assert np.allclose([h.score for h in ours], [h.score for h in theirs], atol=1e-4)
        assert onnx.stats().model is not None and onnx.stats().model.dim == 768


def test_only_an_english_model_hints_at_a_multilingual_one(
    siglip_store: Path, photo_dir: Path, tiny_config: Path, tmp_path: Path
) -> None:
    from helpers.cli import run_cli
    from searchmm.search.language import mostly_non_latin

    assert mostly_non_latin("一只猫坐在沙发上") and mostly_non_latin("кошка на диване")
    assert not mostly_non_latin("a cat on a couch") and not mostly_non_latin("café 猫")
    assert not mostly_non_latin("2024 ...")
    clip_store = tmp_path / "clip"
    run_cli("ingest", photo_dir, "--index-dir", clip_store, "--model-config", tiny_config)
    chinese = run_cli("query", "一只猫坐在沙发上", "--index-dir", clip_store)
    assert chinese.stderr.count("trained on English captions") == 1
    assert "xlm-roberta-base-ViT-B-32" in chinese.stderr
    english = run_cli("query", "a cat on a couch", "--index-dir", clip_store)
    assert "English" not in english.stderr
    multilingual = run_cli("query", "一只猫坐在沙发上", "--index-dir", siglip_store)
    assert "English" not in multilingual.stderr


def test_a_siglip_model_benchmarks_on_the_coco_sample(siglip_dir: Path, tmp_path: Path) -> None:
    from helpers.files import COCO_SAMPLE

    captions = COCO_SAMPLE / "captions_val2017_sample.json"
    if not captions.exists():
        pytest.skip(f"{COCO_SAMPLE} is not here")
    out = tmp_path / "report"
    invoke("bench", "coco", "--images", COCO_SAMPLE / "images", "--captions", captions,
           "--model", f"local-dir:{siglip_dir}", "--index-dir", tmp_path / "bench",
           "--workers", "0", "--output", out)  # fmt: skip
    report = json.loads((out / "coco-all.json").read_text())
    assert report["model"] == f"local-dir:{siglip_dir}"
    assert report["counts"]["images"] == 100 and report["counts"]["captions"] == 500
    assert 0.0 <= report["metrics"]["image_retrieval_recall@10"] <= 1.0


def test_a_hugging_face_text_tower_model_end_to_end(tmp_path: Path, photo_dir: Path) -> None:
    """The open_clip path of xlm-roberta-base-ViT-B-32 (a transformers text tower, its own
    tokenizer) on a small XLM-RoBERTa built here: ingest, queries in English and Chinese, an
    export that answers as torch does."""
    from helpers.hf_models import hf_text_tower_model_dir

    folder = hf_text_tower_model_dir(tmp_path)
    (photo_dir / "captions.txt").write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec.from_options(f"local-dir:{folder}")) as engine:
        summary = engine.ingest([photo_dir], texts_in_folders=True)
    assert summary.failed == [] and summary.encoded_texts == len(CORPUS)
    spec = Engine(index_dir).model_spec()
    assert find_export(index_dir, spec) is not None, rejected_path(index_dir, spec).read_text()
    with Engine(index_dir) as onnx, Engine(index_dir, backend="torch") as reference:
        for text in ("一只猫坐在沙发上", "a rocket on its launch pad"):
            ours = onnx.search_text(text, target="texts", k=3)
            assert ours[0].item.text == text and ours[0].score == pytest.approx(1.0, abs=1e-4)
            theirs = reference.search_text(text, target="texts", k=3)
            assert [h.item.id for h in ours] == [h.item.id for h in theirs]
        assert not onnx.load_model().english_only
