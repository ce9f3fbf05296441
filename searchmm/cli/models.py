"""`searchmm models`: the recommended models, their published recall and measured cost."""

from __future__ import annotations

from typing import Any

import typer

from .errors import user_errors
from .options import JsonFlag
from .output import emit_json


@user_errors
def models(as_json: JsonFlag = False) -> None:
    """Recommended models: published COCO and Flickr30k recall (open_clip's table, made with
    CLIP_benchmark), and what each costs on a CPU (measured by bench/models.py with random
    weights, which cost the same compute as trained ones). Use one with --model and
    --pretrained on the first ingest of an index directory."""
    from searchmm.evaluation.catalog import measured, model_table

    recorded = measured()
    rows = model_table(recorded)
    if as_json:
        emit_json({"machine": recorded["machine"], "models": rows})
        return
    typer.echo(
        f"{'model':<27} {'pretrained':<19} {'COCO':>5} {'Flickr':>6} {'dim':>4} {'params':>7} "
        f"{'ms/img':>6} {'ms/query':>8} {'memory':>7}  for"
    )
    for row in rows:
        typer.echo(_line(row))
    machine = recorded["machine"]
    where = f"{machine['cores']} cores, {machine['cpu']}" if machine else "no machine recorded"
    typer.echo(
        "COCO, Flickr: text-to-image Recall@1 (COCO 5k, Flickr30k 1k test), '-' where open_clip's"
        f" table has none; cost measured on {where}, torch fp32"
    )


def _line(row: dict[str, Any]) -> str:
    def recall(figures: dict[str, float]) -> str:
        value = figures.get("image_retrieval_recall@1")
        return f"{value:.3f}" if value is not None else "-"

    cost = row["cost"]
    if "params_m" in cost:
        spent = (
            f"{cost['image_dim']:>4} {cost['params_m']:>6.0f}M {cost['image_ms']:>6.0f} "
            f"{cost['query_ms']:>8.0f} {cost['peak_rss_mb']:>5} MB"
        )
    else:
        spent = f"{'-':>4} {'-':>7} {'-':>6} {'-':>8} {'-':>7}"
    return (
        f"{row['model']:<27} {row['pretrained']:<19} {recall(row['coco_5k']):>5} "
        f"{recall(row['flickr30k_1k']):>6} {spent}  {row['why']}"
    )
