"""Retrieval evaluation: metrics (hand-checked, brute force, scale), loaders, runner and CLI."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.cli import invoke
from helpers.files import COCO_SAMPLE, make_image
from helpers.store import stored_items, stored_vectors
from searchmm import Engine, ModelSpec, SearchmmError
from searchmm.errors import Hint
from searchmm.evaluation import (
    EvaluationReport,
    default_bench_dir,
    evaluate,
    load_coco,
    load_flickr8k_tokens,
    load_karpathy,
    recall_from_hits,
    retrieval_metrics,
    retrieval_ranks,
)
from searchmm.evaluation.published import published_metrics

SAMPLE_CAPTIONS = COCO_SAMPLE / "captions_val2017_sample.json"
needs_sample = pytest.mark.skipif(not SAMPLE_CAPTIONS.exists(), reason="COCO sample absent")

# -- metrics: hand-checked -----------------------------------------------------------------

# Dot products of these vectors are exact in float32, so every tie below is an exact tie.
IMAGES = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)  # image 2 has no caption
TEXTS = np.array([[1, 0], [0.5, 0.5], [0, 1], [-1, 0]], dtype=np.float32)
OWNER = np.array([0, 1, 0, 1])


def test_hand_checked_several_captions_and_an_image_without_captions() -> None:
    # text -> image, scores against (I0, I1, I2):
    #   T0 (1, 0)    -> I0: 1, 0, -1         correct I0 is first:                    rank 1
    #   T1 (.5, .5)  -> I1: .5, .5, -.5      I0 ties the correct I1 (pessimistic):   rank 2
    #   T2 (0, 1)    -> I0: 0, 1, 0          I1 above, I2 ties the correct I0:       rank 3
    #   T3 (-1, 0)   -> I1: -1, 0, 1         I2 above:                               rank 2
    # image -> text (I2 has no caption, so it is not a query), scores against (T0..T3):
    #   I0 -> {T0, T2, T3}: 1, .5, 0, -1     its best caption T0 is first:           rank 1
    #   I1 -> {T1, T3}: 0, .5, 1, 0          T2 (not its caption) above T1:          rank 2
    ranks = retrieval_ranks(IMAGES, TEXTS, OWNER)
    assert ranks.image_retrieval.tolist() == [1, 2, 3, 2]
    assert ranks.text_retrieval.tolist() == [1, 2]
    assert ranks.text_queries.tolist() == [0, 1]

    metrics = retrieval_metrics(IMAGES, TEXTS, OWNER, ks=(1, 2, 3))
    assert metrics == pytest.approx(
        {
            "image_retrieval_recall@1": 0.25,
            "image_retrieval_recall@2": 0.75,
            "image_retrieval_recall@3": 1.0,
            "image_retrieval_mrr": (1 + 1 / 2 + 1 / 3 + 1 / 2) / 4,
            "image_retrieval_mean_rank": 2.0,
            "image_retrieval_median_rank": 2.0,
            "text_retrieval_recall@1": 0.5,
            "text_retrieval_recall@2": 1.0,
            "text_retrieval_recall@3": 1.0,
            "text_retrieval_mrr": 0.75,
            "text_retrieval_mean_rank": 1.5,
            "text_retrieval_median_rank": 1.5,
            "image_retrieval_queries": 4,
            "text_retrieval_queries": 2,
            "text_retrieval_excluded": 1,
        }
    )


def test_ties_count_against_the_query_but_not_between_relevant_items() -> None:
    # Two equal images: caption 0 belongs to image 1, and image 0 scores the same.
    images = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    texts = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    ranks = retrieval_ranks(images, texts, np.array([1, 2, 2]))
    assert ranks.image_retrieval.tolist() == [2, 3, 1]  # T1 (1,0) -> I2 (0,1): both others above
    # I1's only caption T0 ties T1 (not its own): rank 2. I2's captions T1 (score 0) and T2
    # (score 1): best is T2, first.
    assert ranks.text_retrieval.tolist() == [2, 1]

    # Relevant items tied at the top do not push each other down.
    images = np.array([[1, 0], [0, 1]], dtype=np.float32)
    texts = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    assert retrieval_ranks(images, texts, np.array([0, 0, 1])).text_retrieval.tolist() == [1, 1]


def test_a_collapsed_model_scores_zero_not_one() -> None:
    images = np.ones((5, 3), dtype=np.float32)
    texts = np.ones((10, 3), dtype=np.float32)
    owner = np.repeat(np.arange(5), 2)
    metrics = retrieval_metrics(images, texts, owner, ks=(1, 5))
    assert metrics["image_retrieval_recall@1"] == 0.0
    assert metrics["image_retrieval_recall@5"] == 1.0
    assert metrics["image_retrieval_mean_rank"] == 5.0
    assert metrics["text_retrieval_recall@1"] == 0.0
    assert metrics["text_retrieval_median_rank"] == 9.0  # 8 other captions tie, then its own


def test_bad_inputs_are_user_errors() -> None:
    with pytest.raises(SearchmmError, match="dimensions"):
        retrieval_metrics(IMAGES, np.ones((4, 3)), OWNER)
    with pytest.raises(SearchmmError, match=r"image rows 0\.\.2"):
        retrieval_metrics(IMAGES, TEXTS, np.array([0, 1, 3, 0]))
    with pytest.raises(SearchmmError, match="one integer image row per text"):
        retrieval_metrics(IMAGES, TEXTS, np.array([0, 1]))
    with pytest.raises(SearchmmError, match="NaN"):
        retrieval_metrics(IMAGES, np.full((4, 2), np.nan), OWNER)
    with pytest.raises(SearchmmError, match="at least 1"):
        retrieval_metrics(IMAGES, TEXTS, OWNER, ks=(0, 5))


# -- metrics: against a brute-force implementation -------------------------------------------


def _brute_force(
    images: np.ndarray, texts: np.ndarray, owner: np.ndarray
) -> tuple[list[int], list[int]]:
    """Full score matrix, sort each query's gallery (score desc, non-relevant first on ties)."""
    scores = texts.astype(np.float64) @ images.T.astype(np.float64)
    image_ranks = []
    for q in range(len(texts)):
        relevant = np.arange(len(images)) == owner[q]
        order = np.lexsort((relevant, -scores[q]))
        image_ranks.append(int(np.flatnonzero(relevant[order])[0]) + 1)
    text_ranks = []
    for i in range(len(images)):
        relevant = owner == i
        if relevant.any():
            order = np.lexsort((relevant, -scores[:, i]))
            text_ranks.append(int(np.flatnonzero(relevant[order])[0]) + 1)
    return image_ranks, text_ranks


@st.composite
def _retrieval_problems(draw: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Small integer vectors (exact dot products, many ties), random caption -> image maps."""
    n_images = draw(st.integers(1, 7))
    n_texts = draw(st.integers(1, 14))
    dim = draw(st.integers(1, 3))
    values = st.integers(-2, 2)
    images = draw(st.lists(values, min_size=n_images * dim, max_size=n_images * dim))
    texts = draw(st.lists(values, min_size=n_texts * dim, max_size=n_texts * dim))
    owner = draw(st.lists(st.integers(0, n_images - 1), min_size=n_texts, max_size=n_texts))
    return (
        np.array(images, dtype=np.float32).reshape(n_images, dim),
        np.array(texts, dtype=np.float32).reshape(n_texts, dim),
        np.array(owner),
        draw(st.integers(1, 4)),  # chunk rows: exercise chunk boundaries
    )


@settings(max_examples=300, deadline=None)
@given(_retrieval_problems())
def test_ranks_and_metrics_equal_brute_force(
    problem: tuple[np.ndarray, np.ndarray, np.ndarray, int],
) -> None:
    images, texts, owner, chunk_rows = problem
    image_ranks, text_ranks = _brute_force(images, texts, owner)
    ranks = retrieval_ranks(images, texts, owner, chunk_rows=chunk_rows)
    assert ranks.image_retrieval.tolist() == image_ranks
    assert ranks.text_retrieval.tolist() == text_ranks

    metrics = retrieval_metrics(images, texts, owner, ks=(1, 3), chunk_rows=chunk_rows)
    for prefix, expected in (("image_retrieval", image_ranks), ("text_retrieval", text_ranks)):
        r = np.array(expected, dtype=np.float64)
        assert metrics[f"{prefix}_recall@1"] == pytest.approx(np.mean(r <= 1))
        assert metrics[f"{prefix}_recall@3"] == pytest.approx(np.mean(r <= 3))
        assert metrics[f"{prefix}_mrr"] == pytest.approx(np.mean(1 / r))
        assert metrics[f"{prefix}_mean_rank"] == pytest.approx(r.mean())
        assert metrics[f"{prefix}_median_rank"] == pytest.approx(np.median(r))
    assert metrics["text_retrieval_queries"] == len(set(owner.tolist()))
    assert metrics["text_retrieval_excluded"] == len(images) - len(set(owner.tolist()))


def test_coco_5k_scale_in_bounded_memory() -> None:
    """5,000 images x 25,010 captions: the full score matrix alone would be 500 MB."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((5000, 64)).astype(np.float32)
    texts = rng.standard_normal((25010, 64)).astype(np.float32)
    owner = rng.integers(0, 5000, 25010)
    tracemalloc.start()
    try:
        metrics = retrieval_metrics(images, texts, owner)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert metrics["image_retrieval_queries"] == 25010
    image_ranks, text_ranks = _chunked_ranks(images, texts, owner)
    assert metrics["image_retrieval_mean_rank"] == pytest.approx(image_ranks.mean(), rel=1e-4)
    assert metrics["image_retrieval_recall@10"] == pytest.approx(
        np.mean(image_ranks <= 10), abs=4e-4
    )
    assert metrics["text_retrieval_recall@10"] == pytest.approx(np.mean(text_ranks <= 10), abs=4e-4)
    assert metrics["text_retrieval_recall@10"] <= 0.05  # random vectors: near chance


def _chunked_ranks(
    images: np.ndarray, texts: np.ndarray, owner: np.ndarray, rows: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of random float vectors (no ties), counted block by block with numpy: 1 + how many
    irrelevant items score at least the (best) relevant one."""
    own = np.einsum("ij,ij->i", texts, images[owner])  # each caption against its image
    above = np.zeros(len(texts), dtype=np.int64)
    text_ranks = []
    for start in range(0, len(images), rows):
        block = images[start : start + rows] @ texts.T  # (rows, texts)
        mine = owner[None, :] == np.arange(start, start + len(block))[:, None]
        above += ((block >= own[None, :]) & ~mine).sum(axis=0)
        for row, relevant in zip(block, mine, strict=True):
            if relevant.any():
                text_ranks.append(1 + int((row[~relevant] >= row[relevant].max()).sum()))
    return above + 1, np.array(text_ranks)


def test_recall_from_hits_window() -> None:
    hits = np.array([[3, 1, 2], [0, 2, -1], [5, -1, -1], [-1, -1, -1]])
    labels = np.array([1, 2, 4, -1])  # the last query's -1 must not match the -1 padding
    found = recall_from_hits(hits, labels, ks=(1, 2, 3))
    assert found == pytest.approx(
        {"recall@1": 0.0, "recall@2": 0.5, "recall@3": 0.5, "mrr@3": (1 / 2 + 1 / 2) / 4}
    )
    with pytest.raises(SearchmmError, match="Recall@5 needs at least 5 hits"):
        recall_from_hits(hits, labels, ks=(1, 5))


# -- loaders -------------------------------------------------------------------------------


def _sample_doc() -> dict[str, Any]:
    return json.loads(SAMPLE_CAPTIONS.read_text())


def _pairs(dataset: Any) -> list[tuple[str, str]]:
    return sorted(
        (dataset.image_paths[row].name, caption)
        for caption, row in zip(dataset.captions, dataset.caption_image, strict=True)
    )


@needs_sample
def test_coco_loader_on_the_official_sample() -> None:
    dataset = load_coco(COCO_SAMPLE / "images", SAMPLE_CAPTIONS)
    doc = _sample_doc()
    names = {image["id"]: image["file_name"] for image in doc["images"]}
    expected = sorted((names[a["image_id"]], a["caption"].strip()) for a in doc["annotations"])
    assert (dataset.name, dataset.split, dataset.split_source) == ("coco", "all", "all")
    assert len(dataset.image_paths) == 100 and len(dataset.captions) == 500
    assert dataset.missing == []
    assert _pairs(dataset) == expected  # every caption row points at its own image
    assert all(path.is_file() for path in dataset.image_paths)
    assert sorted(dataset.image_ids) == sorted(names)


def _karpathy_coco(doc: dict[str, Any], splits: dict[int, str]) -> dict[str, Any]:
    """dataset_coco.json as Karpathy wrote it: val2014 names, his own tokenised sentences."""
    images = []
    for imgid, image in enumerate(doc["images"]):
        cocoid = image["id"]
        images.append(
            {
                "filepath": "val2014",
                "sentids": [imgid * 5 + j for j in range(5)],
                "filename": f"COCO_val2014_{cocoid:012d}.jpg",
                "imgid": imgid,
                "split": splits.get(cocoid, "train"),
                "sentences": [
                    {"tokens": ["karpathy", "text"], "raw": "Karpathy text.", "imgid": imgid}
                ],
                "cocoid": cocoid,
            }
        )
    return {"images": images, "dataset": "coco"}


@needs_sample
def test_coco_karpathy_split_takes_all_official_captions(tmp_path: Path) -> None:
    doc = _sample_doc()
    ids = [image["id"] for image in doc["images"]]
    splits = {cocoid: "test" for cocoid in ids[:10]} | {cocoid: "val" for cocoid in ids[10:15]}
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(json.dumps(_karpathy_coco(doc, splits)))
    # The image folder holds nine official (2017) names and one Karpathy (2014) name only.
    images = tmp_path / "images"
    images.mkdir()
    names = {image["id"]: image["file_name"] for image in doc["images"]}
    for cocoid in ids[:9]:
        shutil.copy(COCO_SAMPLE / "images" / names[cocoid], images / names[cocoid])
    karpathy_name = f"COCO_val2014_{ids[9]:012d}.jpg"
    shutil.copy(COCO_SAMPLE / "images" / names[ids[9]], images / karpathy_name)

    dataset = load_coco(images, SAMPLE_CAPTIONS, karpathy_split=split_file)
    assert (dataset.name, dataset.split, dataset.split_source) == ("coco", "test", "karpathy")
    assert dataset.image_ids == ids[:10]
    assert len(dataset.captions) == 50 and "Karpathy text." not in dataset.captions
    assert dataset.missing == []
    assert dataset.image_paths[9].name == karpathy_name
    by_image: dict[Any, list[str]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
    for caption, row in zip(dataset.captions, dataset.caption_image, strict=True):
        assert caption in by_image[dataset.image_ids[row]]

    val = load_coco(COCO_SAMPLE / "images", SAMPLE_CAPTIONS, karpathy_split=split_file, split="val")
    assert (len(val.image_paths), len(val.captions)) == (5, 25)
    with pytest.raises(SearchmmError, match="unknown split 'restval'; the file has: test, train"):
        load_coco(images, SAMPLE_CAPTIONS, karpathy_split=split_file, split="restval")
    with pytest.raises(SearchmmError, match="a split needs a Karpathy split file") as refused:
        load_coco(images, SAMPLE_CAPTIONS, split="test")
    assert refused.value.hint is Hint.PASS_SPLIT_FILE


@needs_sample
def test_coco_split_images_absent_from_the_captions_file(tmp_path: Path) -> None:
    doc = _sample_doc()
    karpathy = _karpathy_coco(doc, {doc["images"][0]["id"]: "test"})
    karpathy["images"].append({**karpathy["images"][1], "cocoid": 391895, "split": "test"})
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(json.dumps(karpathy))
    with pytest.raises(SearchmmError, match=r"1 of the 2 'test' images .* cocoid 391895"):
        load_coco(COCO_SAMPLE / "images", SAMPLE_CAPTIONS, karpathy_split=split_file)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"images": []}', "no 'annotations' list"),
        ('[{"images": []}]', "no 'images' list"),
        ('{"images": [{"id": 1}], "annotations": []}', r"images\[0\] needs an 'id' and a"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], '
            '"annotations": [{"image_id": 2, "caption": "x"}]}',
            "refers to image_id 2",
        ),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], '
            '"annotations": [{"image_id": 1, "caption": "  "}]}',
            "empty or non-string caption",
        ),
    ],
)
def test_malformed_coco_captions(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "captions.json"
    path.write_text(content)
    with pytest.raises(SearchmmError, match=message):
        load_coco(tmp_path, path)


def test_missing_images_folder_and_captions_file(tmp_path: Path) -> None:
    with pytest.raises(SearchmmError, match="does not exist or is not a folder"):
        load_coco(tmp_path / "nope", tmp_path / "captions.json")
    with pytest.raises(SearchmmError, match="cannot read"):
        load_coco(tmp_path, tmp_path / "captions.json")


def _flickr_images(folder: Path, n: int) -> list[str]:
    names = [f"{1000 + i}_flickr.jpg" for i in range(n)]
    for i, name in enumerate(names):
        make_image(folder / name, seed=100 + i)
    return names


def _karpathy_flickr(names: list[str], splits: list[str], dataset: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "images": [
            {
                "filename": name,
                "imgid": i,
                "split": split,
                "sentids": [i * 5 + j for j in range(5)],
                "sentences": [
                    {"raw": f"photo {i} caption {j} ", "tokens": ["photo"], "imgid": i}
                    for j in range(5)
                ],
            }
            for i, (name, split) in enumerate(zip(names, splits, strict=True))
        ],
    }


def test_flickr_karpathy_loader(tmp_path: Path) -> None:
    names = _flickr_images(tmp_path / "images", 5)
    split_file = tmp_path / "dataset_flickr30k.json"
    doc = _karpathy_flickr(names, ["test", "train", "test", "val", "test"], "flickr30k")
    split_file.write_text(json.dumps(doc))
    dataset = load_karpathy(split_file, tmp_path / "images")
    assert (dataset.name, dataset.split, dataset.split_source) == ("flickr30k", "test", "karpathy")
    assert [p.name for p in dataset.image_paths] == [names[0], names[2], names[4]]
    assert len(dataset.captions) == 15
    assert dataset.captions[5] == "photo 2 caption 0"  # stripped, Karpathy's own sentences
    assert dataset.caption_image.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    del doc["dataset"]
    (tmp_path / "dataset_flickr8k.json").write_text(json.dumps(doc))
    assert load_karpathy(tmp_path / "dataset_flickr8k.json", tmp_path / "images").name == "flickr8k"
    del doc["images"][0]["sentences"]
    split_file.write_text(json.dumps(doc))
    with pytest.raises(SearchmmError, match="has no 'sentences'"):
        load_karpathy(split_file, tmp_path / "images")


def test_flickr8k_token_files(tmp_path: Path) -> None:
    names = _flickr_images(tmp_path / "images", 4)
    tokens = tmp_path / "Flickr8k.token.txt"
    lines = [f"{name}#{j}\tA caption {j} of {name}" for name in names for j in range(5)]
    lines.insert(3, "2258277193_586949ec62.jpg.1#0\tA line for an image in no list")
    tokens.write_text("\n".join(lines) + "\n")
    test_list = tmp_path / "Flickr_8k.testImages.txt"
    test_list.write_text(f"{names[3]}\n{names[1]}\n\n")
    dataset = load_flickr8k_tokens(tokens, tmp_path / "images", test_images=test_list)
    assert (dataset.name, dataset.split, dataset.split_source) == ("flickr8k", "test", "flickr8k")
    assert [p.name for p in dataset.image_paths] == [names[3], names[1]]
    assert dataset.captions[:2] == [f"A caption 0 of {names[3]}", f"A caption 1 of {names[3]}"]
    assert dataset.caption_image.tolist() == [0] * 5 + [1] * 5
    everything = load_flickr8k_tokens(tokens, tmp_path / "images")
    assert (len(everything.image_paths), len(everything.captions), everything.split) == (
        5,
        21,
        "all",
    )
    assert everything.missing == [tmp_path / "images" / "2258277193_586949ec62.jpg.1"]
    tokens.write_text(lines[0] + "\nno tab here\n")
    with pytest.raises(SearchmmError, match="line 2 is not '<image>#<n><TAB><caption>'"):
        load_flickr8k_tokens(tokens, tmp_path / "images")


def test_dropping_images_renumbers_captions(tmp_path: Path) -> None:
    names = _flickr_images(tmp_path / "images", 3)
    split_file = tmp_path / "dataset_flickr30k.json"
    split_file.write_text(json.dumps(_karpathy_flickr(names, ["test"] * 3, "flickr30k")))
    (tmp_path / "images" / names[1]).unlink()
    dataset = load_karpathy(split_file, tmp_path / "images")
    assert dataset.missing == [tmp_path / "images" / names[1]]
    kept = dataset.without_missing()
    assert [p.name for p in kept.image_paths] == [names[0], names[2]]
    assert kept.caption_image.tolist() == [0] * 5 + [1] * 5
    assert kept.captions[5] == "photo 2 caption 0" and kept.missing == []


# -- runner: through a real engine ----------------------------------------------------------


@pytest.fixture
def flickr_set(tmp_path: Path) -> Path:
    """A Flickr30k-format test split of 6 generated images, 5 captions each."""
    names = _flickr_images(tmp_path / "images", 6)
    split_file = tmp_path / "dataset_flickr30k.json"
    split_file.write_text(json.dumps(_karpathy_flickr(names, ["test"] * 6, "flickr30k")))
    return split_file


def _engine(index_dir: Path, tiny_config: Path) -> Engine:
    return Engine(index_dir, model=ModelSpec.from_options(model_config=tiny_config), device="cpu")


def test_missing_and_undecodable_images(
    tmp_path: Path, flickr_set: Path, tiny_config: Path
) -> None:
    images = tmp_path / "images"
    names = sorted(p.name for p in images.iterdir())
    (images / names[0]).unlink()
    (images / names[1]).write_text("not a photo")
    dataset = load_karpathy(flickr_set, images)
    with (
        _engine(tmp_path / "idx", tiny_config) as engine,
        pytest.raises(SearchmmError, match=rf"1 of the 6 images .* missing on disk \({names[0]}\)"),
    ):
        evaluate(dataset, engine)
    assert not (tmp_path / "idx" / "searchmm.db").exists()  # refused before anything was done
    with (
        _engine(tmp_path / "idx", tiny_config) as engine,
        pytest.raises(SearchmmError, match=r"1 of the 5 images .* cannot be decoded"),
    ):
        evaluate(dataset.without_missing(), engine)
    with _engine(tmp_path / "idx", tiny_config) as engine:
        report = evaluate(dataset, engine, allow_missing=True, ks=(1, 2))
    assert report.counts["images"] == 4 and report.counts["captions"] == 20
    assert report.counts["missing_images"] == 1 and report.counts["failed_images"] == 1
    assert report.counts["dropped_captions"] == 10 and report.counts["images_listed"] == 6
    assert [Path(d["path"]).name for d in report.dropped_images] == names[:2]
    assert "not an image" in report.dropped_images[1]["reason"]
    assert report.to_dict()["allow_missing"] is True
    assert "dropped (--allow-missing): 2 images and 10 captions" in report.to_markdown()


def test_exact_metrics_equal_the_stored_vectors_and_a_flat_index(
    tmp_path: Path, flickr_set: Path, tiny_config: Path
) -> None:
    dataset = load_karpathy(flickr_set, tmp_path / "images")
    index_dir = tmp_path / "idx"
    with _engine(index_dir, tiny_config) as engine:
        report = evaluate(dataset, engine, ks=(1, 3, 5), index_spec="Flat")
    assert report.timings["images_encoded"] == 6 and report.timings["texts_encoded"] == 30
    assert report.timings["cached"] is False and report.timings["model_load_s"] is not None
    # The same metrics from vectors read straight out of SQLite, mapped by path and locator.
    images, texts = stored_items(index_dir, "image"), stored_items(index_dir, "text")
    image_vectors, text_vectors = (
        stored_vectors(index_dir, "image"),
        stored_vectors(index_dir, "text"),
    )
    captions = index_dir / "bench-captions-flickr30k-test.json"
    image_emb = np.stack([image_vectors[images[str(p)]] for p in dataset.image_paths])
    text_emb = np.stack([text_vectors[texts[f"{captions}#ann:{row}"]] for row in range(30)])
    expected = retrieval_metrics(image_emb, text_emb, dataset.caption_image, ks=(1, 3, 5))
    assert report.metrics == pytest.approx(
        {k: v for k, v in expected.items() if "queries" not in k and "excluded" not in k}
    )
    # An exact FAISS index gives the same recalls; its MRR is cut at the window.
    assert report.index_spec == "IDMap2,Flat"
    for key, value in report.index_metrics.items():
        if "recall" in key:
            assert value == pytest.approx(report.metrics[key])
    assert report.index_metrics["image_retrieval_mrr@5"] <= report.metrics["image_retrieval_mrr"]

    with _engine(index_dir, tiny_config) as engine:  # a second run encodes nothing
        again = evaluate(dataset, engine, ks=(1, 3, 5))
        assert not engine.model_loaded  # not even the model was loaded
    assert again.timings["cached"] is True and again.timings["model_load_s"] is None
    assert again.metrics == report.metrics

    # An image gone from disk stays in the store, outside the dataset: index hits on it are
    # skipped, so the exact index still agrees with the exact metrics over the 5 images left.
    gone = dataset.image_paths[2]
    gone.unlink()
    with _engine(index_dir, tiny_config) as engine:
        fewer = evaluate(
            load_karpathy(flickr_set, tmp_path / "images"),
            engine,
            ks=(1, 3, 5),
            index_spec="Flat",
            allow_missing=True,
        )
    assert str(gone) in stored_items(index_dir, "image")
    assert fewer.counts["images"] == 5 and fewer.metrics["image_retrieval_recall@5"] == 1.0
    for key, value in fewer.index_metrics.items():
        if "recall" in key:
            assert value == pytest.approx(fewer.metrics[key]), key


def test_published_figures_beside_ours() -> None:
    report = EvaluationReport(
        model="ViT-B-32",
        pretrained="openai",
        dataset="coco",
        split="test",
        split_source="karpathy",
        index_dir="/tmp/x",
        ks=(1, 5, 10),
        counts={
            "images": 5000,
            "captions": 25010,
            "image_retrieval_queries": 25010,
            "text_retrieval_queries": 5000,
            "text_retrieval_excluded": 0,
        },
        metrics={"image_retrieval_recall@1": 0.3000, "text_retrieval_recall@10": 0.8400},
        timings={"images_encoded": 0, "texts_encoded": 0, "exact_search_s": 1.0},
    )
    assert report.benchmark == "coco-5k"
    out = report.to_dict()["published"]
    assert out["metrics"]["image_retrieval_recall@1"] == 0.3044
    assert out["difference"]["image_retrieval_recall@1"] == pytest.approx(-0.0044)
    assert out["difference"]["text_retrieval_recall@10"] == pytest.approx(0.0048)
    markdown = report.to_markdown()
    assert "| image_retrieval_recall@1 | 0.3000 | 0.3044 | -0.0044 |" in markdown
    assert "| text_retrieval_recall@10 | 0.8400 | 0.8352 | +0.0048 |" in markdown
    # Same data without the Karpathy split, or other weights: nothing to compare with.
    report.split_source = "all"
    assert report.to_dict()["published"] is None and "published" not in report.to_markdown()
    assert published_metrics("ViT-H-14", "laion2b_s32b_b79k", "flickr30k-1k")[
        "text_retrieval_recall@1"
    ] == pytest.approx(0.9070)
    assert published_metrics("ViT-B-32", "none", "coco-5k") == {}


def test_default_bench_dir_is_per_dataset_and_model(tmp_path: Path, tiny_config: Path) -> None:
    dataset = load_flickr8k_tokens(_tokens(tmp_path), tmp_path)
    spec = ModelSpec.from_options("ViT-B-32", "openai")
    assert default_bench_dir(dataset, spec, tmp_path) == (
        tmp_path / "bench" / "flickr8k-all-ViT-B-32-openai"
    )
    tiny = default_bench_dir(dataset, ModelSpec.from_options(model_config=tiny_config), tmp_path)
    assert tiny.name.startswith("flickr8k-all-searchmm-tiny-none-")


def _tokens(folder: Path) -> Path:
    path = folder / "tokens.txt"
    path.write_text("a.jpg#0\tA caption\n")
    return path


# -- the CLI end to end -----------------------------------------------------------------------


@needs_sample
def test_bench_coco_cli_on_the_sample(tmp_path: Path, tiny_config: Path) -> None:
    index_dir, out = tmp_path / "idx", tmp_path / "out"
    common = [
        "bench",
        "coco",
        "--images",
        COCO_SAMPLE / "images",
        "--captions",
        SAMPLE_CAPTIONS,
        "--model-config",
        tiny_config,
        "--index-dir",
        index_dir,
        "--workers",
        "0",
    ]
    first = invoke(*common, "--output", out)
    assert "| image_retrieval_recall@1 |" in first.stdout  # the table on stdout
    report = json.loads((out / "coco-all.json").read_text())
    assert "| text_retrieval_median_rank |" in (out / "coco-all.md").read_text()
    assert (report["model"], report["pretrained"], report["dataset"]) == (
        "searchmm-tiny",
        "none",
        "coco",
    )
    assert report["counts"]["images"] == 100 and report["counts"]["captions"] == 500
    assert report["counts"]["text_retrieval_queries"] == 100
    metrics = report["metrics"]
    reference = _ranks_from_the_store(index_dir)  # brute force over the stored vectors
    for prefix, ranks in reference.items():
        for k in (1, 5, 10):
            assert metrics[f"{prefix}_recall@{k}"] == pytest.approx(np.mean(ranks <= k))
        assert metrics[f"{prefix}_mrr"] == pytest.approx(np.mean(1 / ranks))
        assert metrics[f"{prefix}_median_rank"] == pytest.approx(np.median(ranks))
        assert metrics[f"{prefix}_mean_rank"] == pytest.approx(ranks.mean())
    assert report["timings"]["images_encoded"] == 100 and report["timings"]["images_per_s"] > 0
    assert report["index"] is None and report["published"] is None

    second = json.loads(invoke(*common, "--json", "--index-spec", "HNSW32").stdout)
    assert second["timings"]["images_encoded"] == 0 and second["timings"]["texts_encoded"] == 0
    assert second["timings"]["cached"] is True
    assert second["metrics"] == metrics
    assert "HNSW32" in second["index"]["spec"]
    index_metrics = second["index"]["metrics"]
    assert set(index_metrics) == {
        f"{prefix}_{name}"
        for prefix in ("image_retrieval", "text_retrieval")
        for name in ("recall@1", "recall@5", "recall@10", "mrr@10")
    }
    for prefix, ranks in reference.items():  # HNSW32 over 100 and 500 vectors: near exact
        for k in (1, 5, 10):
            expected = np.mean(ranks <= k)
            assert index_metrics[f"{prefix}_recall@{k}"] == pytest.approx(expected, abs=0.02)
        mrr10 = np.mean(np.where(ranks <= 10, 1 / ranks, 0))
        assert index_metrics[f"{prefix}_mrr@10"] == pytest.approx(mrr10, abs=0.02)


def _ranks_from_the_store(index_dir: Path) -> dict[str, np.ndarray]:
    """Image and text retrieval ranks from the vectors the bench stored, read with sqlite3 (each
    caption's image is in its metadata), ranked by the brute-force reference above."""
    images = stored_vectors(index_dir, "image")
    texts = stored_vectors(index_dir, "text")
    row_of = {item_id: row for row, item_id in enumerate(images)}
    image_ids = {path: item_id for path, item_id in stored_items(index_dir, "image").items()}
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        meta = dict(db.execute("SELECT id, metadata FROM items WHERE kind = 'text'").fetchall())
    owner = np.array([row_of[image_ids[json.loads(meta[t])["file_name"]]] for t in texts])
    image_ranks, text_ranks = _brute_force(
        np.stack(list(images.values())), np.stack(list(texts.values())), owner
    )
    return {
        "image_retrieval": np.array(image_ranks, dtype=np.float64),
        "text_retrieval": np.array(text_ranks, dtype=np.float64),
    }


def test_bench_cli_errors(tmp_path: Path, flickr_set: Path) -> None:
    images = tmp_path / "images"
    (images / sorted(p.name for p in images.iterdir())[0]).unlink()
    result = invoke(
        "bench", "flickr", "--karpathy", flickr_set, "--images", images, "--index-dir",
        tmp_path / "idx", check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("searchmm: error: 1 of the 6 images")
    assert "--allow-missing" in result.stderr and "Traceback" not in result.stderr
    both = invoke(
        "bench", "flickr", "--karpathy", flickr_set, "--token-file", flickr_set,
        "--images", images, check=False,
    )  # fmt: skip
    assert both.returncode == 2 and "one of the two" in both.stderr
