"""Text collections of every format, cross-modal queries, and bad files among good ones."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import invoke, invoke_json
from helpers.files import COCO_SAMPLE, make_image
from helpers.store import stored_items, stored_vectors


@pytest.fixture
def collections(tmp_path: Path) -> Path:
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "notes.txt").write_text("a red bicycle\n\n   \na lighthouse at dusk\n")
    with (folder / "posts.jsonl").open("w") as f:
        f.write(json.dumps({"text": "a bowl of ramen", "author": "ana", "likes": 3}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"text": "snow on the mountains", "author": "bo"}) + "\n")
    with (folder / "table.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "lang"])
        writer.writerow(["7", "a sailing boat", "en"])
        writer.writerow(["8", "un chat sur un canapé", "fr"])
    coco = {
        "images": [{"id": 42, "file_name": "000000000042.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 42, "caption": "A dog catching a frisbee."},
            {"id": 2, "image_id": 42, "caption": "A dog jumps in a park."},
        ],
    }
    (folder / "captions.json").write_text(json.dumps(coco))
    return folder


def test_every_text_format_and_text_to_text(
    tmp_path: Path, collections: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    summary = invoke_json(
        "ingest", collections, "--texts", "--index-dir", index_dir, "--model-config", tiny_config
    )
    assert summary["new"] == summary["encoded_texts"] == 8
    assert [(f["locator"], f["reason"][:14]) for f in summary["failed"]] == [
        ("line:2", "malformed JSON")
    ]

    hits = invoke_json(
        "query", "a bowl of ramen", "--target", "texts", "--index-dir", index_dir, "-k", "8"
    )
    top = hits[0]
    assert top["text"] == "a bowl of ramen" and top["score"] == pytest.approx(1.0, abs=1e-5)
    assert top["metadata"] == {"author": "ana", "likes": 3}
    assert top["source"] == str(collections / "posts.jsonl") and top["locator"] == "line:1"
    by_text = {h["text"]: h for h in hits}
    assert set(by_text) == {
        "a red bicycle", "a lighthouse at dusk", "a bowl of ramen", "snow on the mountains",
        "a sailing boat", "un chat sur un canapé",
        "A dog catching a frisbee.", "A dog jumps in a park.",
    }  # fmt: skip
    assert by_text["un chat sur un canapé"]["metadata"] == {"id": "8", "lang": "fr"}
    assert by_text["A dog jumps in a park."]["metadata"] == {
        "image_id": 42, "file_name": "000000000042.jpg", "annotation_id": 2,
    }  # fmt: skip

    # Editing one line re-encodes that line only; removing a file removes its records.
    (collections / "notes.txt").write_text("a red bicycle\na green tram\n")
    (collections / "table.csv").unlink()
    again = invoke_json("ingest", collections, "--texts", "--index-dir", index_dir)
    assert (again["encoded_texts"], again["unchanged"], again["removed"]) == (1, 5, 3)


def test_image_to_text_matches_brute_force(
    tmp_path: Path, collections: Path, photo_dir: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, collections / "notes.txt", collections / "posts.jsonl",
            "--index-dir", index_dir, "--model-config", tiny_config)  # fmt: skip
    query_image = photo_dir / "chelsea.jpg"
    hits = invoke_json(
        "query", "--image", query_image, "--target", "texts", "--index-dir", index_dir
    )
    texts = stored_vectors(index_dir, "text")
    image_vector = stored_vectors(index_dir, "image")[
        stored_items(index_dir, "image")[str(query_image)]
    ]
    ids = np.array(list(texts))
    scores = np.stack(list(texts.values())) @ image_vector
    assert [h["id"] for h in hits] == ids[np.argsort(-scores)].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], np.sort(scores)[::-1], atol=1e-5)


@pytest.mark.skipif(
    not COCO_SAMPLE.exists(), reason="the COCO sample is only in CI and dev checkouts"
)
def test_real_coco_captions_file(tmp_path: Path, tiny_config: Path) -> None:
    captions = COCO_SAMPLE / "captions_val2017_sample.json"
    summary = invoke_json(
        "ingest", captions, "--index-dir", tmp_path / "idx", "--model-config", tiny_config
    )
    assert summary["new"] == 500 and summary["failed"] == []
    annotation = json.loads(captions.read_text())["annotations"][0]
    hits = invoke_json(
        "query",
        annotation["caption"],
        "--target",
        "texts",
        "--index-dir",
        tmp_path / "idx",
        "-k",
        "1",
    )
    assert hits[0]["metadata"]["image_id"] == annotation["image_id"]
    assert hits[0]["metadata"]["file_name"] == f"{annotation['image_id']:012d}.jpg"


def test_bad_files_among_good_ones(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    bad = photo_dir / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("this is not an image")
    (bad / "noise.png").write_bytes(np.random.default_rng(0).bytes(2048))
    good_jpeg = (photo_dir / "chelsea.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 3])
    good = {str(p) for p in photo_dir.rglob("*") if p.is_file() and p.parent != bad}

    index_dir = tmp_path / "idx"
    result = invoke(
        "ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config, "--json"
    )
    summary = json.loads(result.stdout)
    assert result.returncode == 0 and summary["new"] == len(good)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert set(reasons) == {"empty.jpg", "notes.jpg", "noise.png", "truncated.jpg"}
    assert "empty" in reasons["empty.jpg"] and "not an image" in reasons["notes.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert set(stored_items(index_dir, "image")) == good

    # Bad files are retried on the next run (a permission may have been fixed), good ones are not.
    make_image(bad / "fixed.png", seed=9)
    again = invoke_json("ingest", photo_dir, "--index-dir", index_dir)
    assert (again["encoded_images"], again["unchanged"], len(again["failed"])) == (1, len(good), 4)

    only_bad = tmp_path / "only-bad"
    only_bad.mkdir()
    (only_bad / "empty.jpg").write_bytes(b"")
    failed = invoke(
        "ingest",
        only_bad,
        "--index-dir",
        tmp_path / "idx2",
        "--model-config",
        tiny_config,
        check=False,
    )
    assert failed.returncode == 1 and "empty.jpg" in failed.stdout
