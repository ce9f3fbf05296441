"""`searchmm models`: every recommended model is a real open_clip model and tag, with open_clip's
published recall and the cost bench/models.py measured."""

from __future__ import annotations

import open_clip

from helpers.cli import invoke, invoke_json
from searchmm.evaluation.catalog import RECOMMENDED, measured


def test_every_recommended_model_is_an_open_clip_model_with_that_tag() -> None:
    for model in RECOMMENDED:
        assert model.name in open_clip.list_models(), model.name
        assert model.pretrained in open_clip.list_pretrained_tags_by_model(model.name), model
    assert any(m.multilingual for m in RECOMMENDED)


def test_the_table_has_published_recall_and_measured_cost() -> None:
    table = invoke_json("models")
    rows = {(r["model"], r["pretrained"]): r for r in table["models"]}
    assert len(rows) == len(RECOMMENDED)
    default = rows[("ViT-B-32", "laion2b_s34b_b79k")]
    assert default["coco_5k"]["image_retrieval_recall@1"] == 0.3934
    assert default["flickr30k_1k"]["text_retrieval_recall@10"] == 0.9830
    assert rows[("ViT-B-16-SigLIP2", "webli")]["coco_5k"] == {}  # not in open_clip's table
    costs = measured()["models"]
    assert table["machine"] is not None and set(costs) == {f"{n}/{p}" for n, p in rows}
    for (name, pretrained), row in rows.items():
        cost = row["cost"]
        assert cost == costs[f"{name}/{pretrained}"]
        assert "not_measured" in cost or (cost["params_m"] > 50 and cost["image_ms"] > 0)
    siglip = rows[("ViT-B-16-SigLIP", "webli")]["cost"]
    clip = default["cost"]
    assert siglip["image_ms"] > clip["image_ms"] and siglip["image_dim"] == 768
    lines = invoke("models").stdout.splitlines()
    assert len(lines) == len(RECOMMENDED) + 2 and lines[1].startswith("ViT-B-32 ")
