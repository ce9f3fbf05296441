"""The torch-free query path: a store's ONNX export, its checks, and queries that never import
torch, against real open_clip models, real exports and real onnxruntime sessions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers.cli import cli_json
from helpers.files import COCO_SAMPLE, TINY_CONFIG, make_image
from searchmm import Engine, ModelSpec, SearchmmError, Term
from searchmm.model.clip_tokenizer import ClipTokenizer
from searchmm.model.encoder import TorchEncoder
from searchmm.model.loading import load_encoder
from searchmm.model.onnx_encoder import OnnxEncoder
from searchmm.model.onnx_export import ExportRejected, check_export, export, pixel_recipe
from searchmm.model.onnx_files import export_dir, export_key, find_export, rejected_path

HOSTILE = (
    "😀🐈‍⬛🏳️‍🌈 emoji",
    "x" * 10_000,
    "a " * 5_000,
    "control \x00\x01\x1b[31m\x7f characters",
    "一只猫坐在沙发上",
    "東京の夜景 and 서울",
    "<start_of_text> literal <END_OF_TEXT>",
    "&amp;lt;b&amp;gt; entities",
    "ﬁ ligatures, ｆｕｌｌｗｉｄｔｈ, zero\u200bwidth, no\u00a0break",
    "ÃƒÂ© mojibake",
    "",
    "   ",
)


def coco_captions() -> list[str]:
    path = COCO_SAMPLE / "captions_val2017_sample.json"
    if not path.exists():
        pytest.skip(f"{COCO_SAMPLE} is not here")
    return [a["caption"] for a in json.loads(path.read_text(encoding="utf-8"))["annotations"]]


def test_the_tokenizer_gives_open_clips_ids_on_coco_captions_and_hostile_strings() -> None:
    import open_clip
    from open_clip.tokenizer import default_bpe

    texts = [*coco_captions(), *HOSTILE]
    ours = ClipTokenizer(default_bpe())(texts)
    theirs = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    assert ours.dtype == np.int64 and ours.shape == (len(texts), 77)
    differ = [texts[i][:40] for i in np.flatnonzero((ours != theirs).any(axis=1))]
    assert differ == []


def test_the_pixels_are_the_model_transforms_on_real_photos(real_photos: Path) -> None:
    encoder = load_encoder(ModelSpec("ViT-B-32", "none"), "cpu")
    recipe = pixel_recipe(encoder.transform)
    paths = sorted(real_photos.iterdir())
    if COCO_SAMPLE.exists():
        paths += sorted((COCO_SAMPLE / "images").iterdir())[:30]
    for path in paths:
        image = Image.open(path).convert("RGB")
        for shaped in (image, image.rotate(90, expand=True), image.resize((225, 224))):
            expected = encoder.preprocess(shaped)
            assert np.abs(recipe(shaped) - expected).max() <= 1e-5, path


def test_the_recipe_halves_give_its_pixels_and_stand_in_only_for_a_matching_transform(
    real_photos: Path, tiny_config: Path
) -> None:
    from torchvision import transforms

    encoder = load_encoder(ModelSpec.from_options(model_config=tiny_config), "cpu")
    recipe = encoder.pixel_recipe()
    assert recipe is not None
    images = [Image.open(p).convert("RGB") for p in sorted(real_photos.iterdir())]
    crops = np.stack([recipe.crop(image) for image in images])
    assert crops.dtype == np.uint8 and crops.shape == (len(images), recipe.size, recipe.size, 3)
    assert np.array_equal(recipe.normalise(crops), recipe.batch(images))
    reference = np.stack([encoder.preprocess(image) for image in images])
    assert np.abs(recipe.normalise(crops) - reference).max() <= 1e-5
    steps = list(encoder.transform.transforms)
    grey = transforms.Compose([*steps[:-2], transforms.Grayscale(3), *steps[-2:]])
    other = TorchEncoder(encoder.spec, encoder.model, grey, encoder.tokenizer, "cpu")
    assert other.pixel_recipe() is None  # a step the recipe does not know: pixels stay float


@pytest.fixture
def store(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> Path:
    """A tiny-model store with images and texts, ingested as a user would (auto backend)."""
    (photo_dir / "notes.txt").write_text(
        "a cat on a couch\na cup of coffee\nthe night sky\n", encoding="utf-8"
    )
    index_dir = tmp_path / "idx"
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(index_dir, model=spec, device="cpu") as engine:
        engine.ingest([photo_dir], texts_in_folders=True)
    return index_dir


def test_ingest_leaves_a_verified_export(store: Path) -> None:
    (folder,) = [p for p in store.iterdir() if p.name.startswith("onnx-")]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["checks"]["text_cosine"] >= 0.99999
    assert manifest["checks"]["image_cosine"] >= 0.99999
    assert manifest["checks"]["pixel_max_diff"] <= 1e-5
    on_disk = sum(p.stat().st_size for p in folder.iterdir() if p.name != "manifest.json")
    assert manifest["bytes"] == on_disk and manifest["export_s"] > 0
    assert not list(store.glob("onnx-*.tmp-*"))


def test_onnx_and_torch_queries_agree(store: Path, photo_dir: Path) -> None:
    queries = [
        ([Term("text", "a cat on a couch")], "images"),
        ([Term("text", "a rocket")], "texts"),
        ([Term("image", str(photo_dir / "chelsea.jpg"))], "images"),
        ([Term("image", str(photo_dir / "astronaut.png"))], "texts"),
        ([Term("text", "a cat"), Term("image", str(photo_dir / "rocket.png"), -0.5)], "images"),
    ]
    with Engine(store, backend="onnx") as onnx, Engine(store, backend="torch") as torch_engine:
        for terms, target in queries:
            a = onnx.search(terms, target=target, k=10)
            b = torch_engine.search(terms, target=target, k=10)
            assert [h.item.id for h in a] == [h.item.id for h in b]
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
        assert isinstance(onnx.load_model(), OnnxEncoder)
        assert not isinstance(torch_engine.load_model(), OnnxEncoder)


PROBE = """
import json, sys
from searchmm.cli.app import run
sys.argv = ["searchmm", *sys.argv[1:]]
code = run()
heavy = [m for m in ("torch", "torchvision", "open_clip", "timm", "sqlalchemy") if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _query_process(*args: str | Path) -> tuple[object, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, "query", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            "SEARCHMM_CACHE_DIR": os.environ["SEARCHMM_CACHE_DIR"],
        },
    )
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, result.stderr
    return json.loads(result.stdout), report


def test_a_query_process_imports_neither_torch_nor_sqlalchemy(store: Path, photo_dir: Path) -> None:
    for query in (["a cat"], ["--image", photo_dir / "chelsea.jpg", "--target", "texts"]):
        hits, report = _query_process(*query, "--index-dir", store)
        assert report["heavy"] == []
        expected = cli_json("query", *query, "--index-dir", store, "--backend", "torch")
        assert [h["id"] for h in hits] == [h["id"] for h in expected]  # type: ignore[union-attr]


def test_an_export_that_disagrees_with_its_model_is_rejected(tmp_path: Path) -> None:
    config = tmp_path / "searchmm-tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    seed0 = load_encoder(ModelSpec.from_options(model_config=config), "cpu")
    seed1 = load_encoder(ModelSpec.from_options(model_config=config, seed=1), "cpu")
    export(seed1, tmp_path)
    folder, manifest = find_export(tmp_path, seed1.spec) or pytest.fail("no export")
    with pytest.raises(ExportRejected, match="disagree with torch"):
        check_export(seed0, OnnxEncoder(seed0.spec, folder, manifest))
    assert check_export(seed1, OnnxEncoder(seed1.spec, folder, manifest))["text_cosine"] >= 0.99999
    assert find_export(tmp_path, seed0.spec) is None  # another identity's export is never read


def _letterboxing_model(root: Path) -> ModelSpec:
    """A local-dir model whose transform fits the long side and pads (resize_mode longest)."""
    from safetensors.torch import save_file

    config = root / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    reference = load_encoder(ModelSpec.from_options(model_config=config), "cpu")
    folder = root / "letterbox-model"
    folder.mkdir()
    cfg = {"model_cfg": TINY_CONFIG, "preprocess_cfg": {"resize_mode": "longest"}}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    state = {k: v.contiguous() for k, v in reference.model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return ModelSpec.from_options(f"local-dir:{folder}")


def test_a_model_the_export_cannot_follow_keeps_torch(
    tmp_path: Path, photo_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = _letterboxing_model(tmp_path)
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=spec, device="cpu") as engine:
        engine.ingest([photo_dir])
        assert "ResizeKeepRatio step" in caplog.text and "keep using torch" in caplog.text
        assert not isinstance(engine.load_model(), OnnxEncoder)
    assert rejected_path(index_dir, spec).exists() and not export_dir(index_dir, spec).exists()
    caplog.clear()
    with Engine(index_dir, device="cpu") as engine:  # said once: a later process is quiet
        hits = engine.search_image(photo_dir / "chelsea.jpg", k=1)
        assert hits[0].path == str(photo_dir / "chelsea.jpg")
        assert "ONNX" not in caplog.text
    with Engine(index_dir, backend="onnx") as engine, pytest.raises(SearchmmError, match="ONNX"):
        engine.search_text("a cat")


def test_another_checkpoint_gets_another_export(tmp_path: Path, photo_dir: Path) -> None:
    from safetensors.torch import save_file

    config = tmp_path / "searchmm-tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    stores = []
    for seed in (0, 1):
        encoder = load_encoder(ModelSpec.from_options(model_config=config, seed=seed), "cpu")
        weights = tmp_path / f"weights-{seed}.safetensors"
        save_file({k: v.contiguous() for k, v in encoder.model.state_dict().items()}, weights)
        spec = ModelSpec.from_options(model_config=config, pretrained=str(weights))
        index_dir = tmp_path / f"idx-{seed}"
        with Engine(index_dir, model=spec, device="cpu") as engine:
            engine.ingest([photo_dir])
        stores.append((index_dir, spec))
    (a_dir, a_spec), (b_dir, b_spec) = stores
    assert export_key(a_spec) != export_key(b_spec)
    # An export copied from the other store, under this store's name, is not trusted.
    shutil.rmtree(export_dir(b_dir, b_spec))
    shutil.copytree(export_dir(a_dir, a_spec), export_dir(b_dir, b_spec))
    assert find_export(b_dir, b_spec) is None
    with Engine(b_dir) as b, Engine(b_dir, backend="torch") as reference:
        query = make_image(tmp_path / "query.png", seed=5)
        got = [(h.item.id, round(h.score, 4)) for h in b.search_image(query)]
        assert got == [(h.item.id, round(h.score, 4)) for h in reference.search_image(query)]


@pytest.mark.slow
def test_a_full_size_model_answers_the_same_through_its_export(
    tmp_path: Path, real_photos: Path
) -> None:
    """ViT-B-32 (random init): the export a user's first ingest makes, against torch."""
    index_dir = tmp_path / "idx"
    with Engine(index_dir, model=ModelSpec("ViT-B-32", "none"), device="cpu") as engine:
        engine.ingest([real_photos])
    texts = ("a cat", "an astronaut in a white suit", "一只猫", "coffee " * 100)
    with Engine(index_dir, backend="onnx") as onnx, Engine(index_dir, backend="torch") as ref:
        for text in texts:
            a, b = onnx.search_text(text), ref.search_text(text)
            assert [h.item.id for h in a] == [h.item.id for h in b]
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
        for photo in sorted(real_photos.iterdir())[:2]:
            a, b = onnx.search_image(photo), ref.search_image(photo)
            assert [h.item.id for h in a] == [h.item.id for h in b]
            assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)


def test_an_export_keeps_each_towers_weights_beside_its_graph(store: Path) -> None:
    """onnxruntime memory-maps weights in a file of their own: sessions start faster."""
    spec = Engine(store).model_spec()
    folder, manifest = find_export(store, spec) or pytest.fail("no export")
    assert manifest.format == 2
    for tower in ("text.onnx", "image.onnx"):
        graph, weights = folder / tower, folder / f"{tower}.data"
        assert weights.stat().st_size > 10 * graph.stat().st_size
    texts = ["a cat on a couch", "一只猫"]
    quick = OnnxEncoder(spec, folder, manifest, quick_start=True)
    steady = OnnxEncoder(spec, folder, manifest)
    assert np.allclose(quick.encode_texts(texts), steady.encode_texts(texts), atol=1e-5)


def _embed_weights(folder: Path) -> None:
    """Turn a format-2 export into what searchmm wrote before: weights inside the graphs."""
    import onnx

    for tower in ("text.onnx", "image.onnx"):
        weights = folder / f"{tower}.data"
        shutil.copyfile(weights, folder / "unlinked")  # onnx refuses hard-linked weights
        (folder / "unlinked").replace(weights)
        model = onnx.load(str(folder / tower))  # reads the external weights in
        weights.unlink()
        onnx.save_model(model, str(folder / tower))
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))


def test_an_export_of_the_first_format_answers_and_the_next_ingest_upgrades_it(
    store: Path, photo_dir: Path
) -> None:
    spec = Engine(store).model_spec()
    folder = export_dir(store, spec)
    with Engine(store) as engine:
        expected = [(h.item.id, round(h.score, 4)) for h in engine.search_text("a cat")]
    _embed_weights(folder)
    found = find_export(store, spec)
    assert found is not None and found[1].format == 1
    with Engine(store) as engine:
        assert isinstance(engine.load_model(), OnnxEncoder)
        assert [(h.item.id, round(h.score, 4)) for h in engine.search_text("a cat")] == expected
        engine.ingest([photo_dir], texts_in_folders=True)  # nothing new to encode
    found = find_export(store, spec)
    assert found is not None and found[1].format == 2
    assert (folder / "text.onnx.data").exists() and not list(store.glob("onnx-*.tmp-*"))
    with Engine(store) as engine:
        assert [(h.item.id, round(h.score, 4)) for h in engine.search_text("a cat")] == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=120))
def test_plain_ascii_skips_ftfy_and_keeps_open_clips_ids(text: str) -> None:
    import open_clip
    from open_clip.tokenizer import default_bpe

    ours = _TOKENIZER.setdefault("ours", ClipTokenizer(default_bpe()))
    theirs = _TOKENIZER.setdefault("theirs", open_clip.get_tokenizer("ViT-B-32"))
    assert np.array_equal(ours([text]), theirs([text]).numpy())


_TOKENIZER: dict[str, object] = {}


def test_the_tokenizer_reads_its_tables_of_either_form_and_rebuilds_them_when_damaged(
    tmp_path: Path,
) -> None:
    import marshal

    from open_clip.tokenizer import default_bpe

    from searchmm.model.clip_tokenizer import TABLES_FILENAME

    vocab, tables = tmp_path / "bpe_simple_vocab_16e6.txt.gz", tmp_path / TABLES_FILENAME
    shutil.copyfile(default_bpe(), vocab)
    built = ClipTokenizer(vocab)
    built.save_tables(tables)
    tokens, merges = marshal.loads(tables.read_bytes())
    cat = tokens.index("cat</w>")
    tokens[cat], tokens[12345] = tokens[12345], tokens[cat]  # tables that differ: the ones read
    tables.write_bytes(marshal.dumps((tokens, merges), 4))
    assert ClipTokenizer(vocab)(["cat"])[0, 1] == 12345
    first_form = (  # what searchmm wrote before: dicts, the merges keyed by pairs
        {token: i for i, token in enumerate(tokens)},
        {tuple(merge.split()): rank for rank, merge in enumerate(merges)},
    )
    tables.write_bytes(marshal.dumps(first_form, 4))
    assert ClipTokenizer(vocab)(["cat"])[0, 1] == 12345
    tables.write_bytes(b"\x00 not marshal data")
    assert np.array_equal(ClipTokenizer(vocab)(["a cat"]), built(["a cat"]))


def test_a_clip_text_tower_runs_only_the_tokens_a_text_has(store: Path) -> None:
    """Its export takes any length; padding after the end token changes nothing, so a query
    sends no padding (a tenth of the work for a short one)."""
    import onnxruntime

    from searchmm.model.onnx_encoder import normalised

    spec = Engine(store).model_spec()
    folder, manifest = find_export(store, spec) or pytest.fail("no export")
    assert manifest.text_trim
    session = onnxruntime.InferenceSession(str(folder / "text.onnx"))
    assert isinstance(session.get_inputs()[0].shape[1], str)  # a named, dynamic axis
    onnx = OnnxEncoder(spec, folder, manifest)
    texts = ["a cat", "a photo of two dogs running on the beach", "word " * 100, "!"]
    padded = onnx.tokenizer()(texts)
    assert padded.shape[1] == 77
    full = normalised(session.run(None, {"input": padded})[0])
    alone = np.concatenate([onnx.encode_texts([text]) for text in texts])
    assert (full * alone).sum(axis=1).min() >= 0.99999
    assert (full * onnx.encode_texts(texts)).sum(axis=1).min() >= 0.99999
    reference = load_encoder(spec, "cpu").encode_texts(texts)
    assert (reference * alone).sum(axis=1).min() >= 0.99999
