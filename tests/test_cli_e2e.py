"""End to end through the real CLI: ingest in one process, query in others."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import cli_json, invoke, invoke_json, run_cli
from helpers.files import COCO_SAMPLE
from helpers.model import bare_open_clip_text_vector
from helpers.store import stored_items, stored_vectors

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

# Runs in a fresh interpreter: every ingested image, queried by itself, must come back first.
SELF_QUERY_SCRIPT = """
import json, sys
from searchmm import Engine
index_dir, paths = sys.argv[1], json.loads(sys.stdin.read())
with Engine(index_dir) as engine:
    out = {p: [(h.path, h.score) for h in engine.search_image(p, k=2)] for p in paths}
print(json.dumps(out))
"""


def _self_query(index_dir: Path, paths: list[str]) -> dict[str, list[tuple[str, float]]]:
    result = subprocess.run(
        [sys.executable, "-c", SELF_QUERY_SCRIPT, str(index_dir)],
        input=json.dumps(paths),
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(result.stdout)


def _images_under(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _assert_each_image_finds_itself(index_dir: Path, folder: Path) -> None:
    paths = _images_under(folder)
    results = _self_query(index_dir, paths)
    for path in paths:
        top_path, top_score = results[path][0]
        assert top_path == path, f"{path} found {results[path]}"
        assert top_score == pytest.approx(1.0, abs=1e-4)


@pytest.fixture
def gallery(photo_dir: Path) -> Path:
    """Real scikit-image photos, generated images and, when present, the COCO sample."""
    if COCO_SAMPLE.exists():
        shutil.copytree(COCO_SAMPLE / "images", photo_dir / "coco")
    return photo_dir


def test_ingest_then_query_every_image_in_a_new_process(
    tmp_path: Path, gallery: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    summary = cli_json("ingest", gallery, "--index-dir", index_dir, "--model-config", tiny_config)
    expected = len(_images_under(gallery))
    assert summary["new"] == summary["encoded_images"] == expected
    assert summary["failed"] == []
    assert set(stored_items(index_dir, "image")) == set(_images_under(gallery))
    _assert_each_image_finds_itself(index_dir, gallery)

    hits = cli_json(
        "query", "--image", gallery / "chelsea.jpg", "--index-dir", index_dir, "-k", "3"
    )
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(gallery / "chelsea.jpg")
    assert hits[0]["kind"] == "image" and hits[0]["width"] == 451 and hits[0]["height"] == 300


def test_text_query_ranking_equals_brute_force(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    run_cli("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    query = "a cat on a couch"
    hits = cli_json("query", query, "--index-dir", index_dir, "-k", "10")

    stored = stored_vectors(index_dir, "image")
    ids = np.array(list(stored))
    scores = np.stack(list(stored.values())) @ bare_open_clip_text_vector(tiny_config, query)
    order = np.argsort(-scores, kind="stable")
    assert len(hits) == min(10, len(ids))
    assert [h["id"] for h in hits] == ids[order][: len(hits)].tolist()
    np.testing.assert_allclose([h["score"] for h in hits], scores[order][: len(hits)], atol=1e-5)


def test_table_output_and_text_target(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    table = invoke("query", "a rocket", "--index-dir", index_dir, "-k", "2").stdout
    lines = [line for line in table.splitlines() if line.strip()]
    assert lines[0].split() == ["rank", "score", "path"] and len(lines) == 3
    assert str(photo_dir) in lines[1]

    no_texts = invoke(
        "query", "a rocket", "--target", "texts", "--index-dir", index_dir, check=False
    )
    assert no_texts.returncode == 1 and "holds no texts" in no_texts.stderr

    stats = invoke_json("stats", "--index-dir", index_dir)
    assert stats["items"]["image"]["ok"] == len(_images_under(photo_dir))
    assert stats["model"]["name"] == "searchmm-tiny" and stats["model"]["dim"] == 64
    assert stats["indexes"]["image"]["vectors"] == len(_images_under(photo_dir))


def test_query_on_missing_index_and_usage_errors(tmp_path: Path) -> None:
    missing = invoke("query", "anything", "--index-dir", tmp_path / "nowhere", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"searchmm: error: no index at {tmp_path / 'nowhere'}: run `searchmm ingest PATH` first"
    ]
    nothing = invoke("query", "--index-dir", tmp_path, check=False)
    assert nothing.returncode == 2 and "give a query TEXT" in nothing.stderr
    missing_path = invoke(
        "ingest", tmp_path / "no-such-folder", "--index-dir", tmp_path / "i", check=False
    )
    assert missing_path.returncode == 1 and "no such file or directory" in missing_path.stderr
    assert "Traceback" not in missing.stderr + missing_path.stderr


@pytest.mark.slow
@pytest.mark.skipif(
    not COCO_SAMPLE.exists(), reason="the COCO sample is only in CI and dev checkouts"
)
def test_vit_b_32_random_init_on_the_coco_sample(tmp_path: Path) -> None:
    """The default architecture at full size, random weights: identical across processes."""
    index_dir = tmp_path / "idx"
    images = COCO_SAMPLE / "images"
    summary = cli_json(
        "ingest", images, "--index-dir", index_dir, "--model", "ViT-B-32", "--pretrained", "none"
    )
    assert summary["new"] == len(_images_under(images)) == 100
    _assert_each_image_finds_itself(index_dir, images)
    hits = cli_json("query", "a man riding a horse", "--index-dir", index_dir, "-k", "5")
    assert len(hits) == 5 and all(-1.0 <= h["score"] <= 1.0 for h in hits)
