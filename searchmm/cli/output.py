"""What the commands print: one JSON document, or plain lines that survive pipes whole."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer

from searchmm.vocabulary import Kind, Target

if TYPE_CHECKING:
    from searchmm.ingest.summary import IngestSummary
    from searchmm.search.hits import Hit


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def shown(path: str) -> str:
    from searchmm.sources.files import display_path

    return display_path(path)


def print_summary(s: IngestSummary) -> None:
    typer.echo(
        f"{s.new} new, {s.changed} changed, {s.unchanged} unchanged, {s.renamed} renamed, "
        f"{s.removed} removed, {len(s.failed)} failed; encoded {s.encoded_images} images and "
        f"{s.encoded_texts} texts ({s.reused} reused) in {s.elapsed_s:.1f} s, "
        f"{s.items_per_s:.1f} items/s"
    )
    if rates := s.stages.rates():  # which stage bounds the ingest
        per_stage = ", ".join(f"{stage} {rate:,.1f}" for stage, rate in rates.items())
        typer.echo(f"  images/s by stage: {per_stage} (decode: per worker)")
    for failure in s.failed:
        where = f" [{failure.locator}]" if failure.locator else ""
        typer.echo(f"  failed: {shown(failure.path)}{where}: {failure.reason}")
    if s.interrupted:
        typer.echo("interrupted: what was committed is kept; run ingest again to finish")


def print_hits(hits: Sequence[dict[str, Any]], target: str) -> None:
    """Hits as `Hit.to_dict()` gives them (or a server sends them), as plain lines, never
    truncated: paths must survive pipes and narrow terminals whole."""
    texts = Target.parse(target) is Target.TEXTS
    typer.echo(f"{'rank':>4}  {'score':>7}  {'text' if texts else 'path'}")
    for hit in hits:
        what = hit["text"] if hit["kind"] == Kind.TEXT else shown(hit["path"])
        typer.echo(f"{hit['rank']:>4}  {hit['score']:>7.4f}  {what}")


def print_groups(groups: Sequence[Sequence[Hit]], threshold: float) -> None:
    for number, group in enumerate(groups, 1):
        typer.echo(f"group {number}: {len(group)} images")
        for hit in group:
            typer.echo(f"  {hit.score:.4f}  {shown(hit.path)}")
    if not groups:
        typer.echo(f"no near-duplicates at similarity >= {threshold}")


def print_stats(result: dict[str, Any]) -> None:
    typer.echo(f"index directory: {result['index_dir']}")
    model = result["model"]
    typer.echo(
        f"model: {model['name']} ({model['pretrained']}), {model['dim']}-d"
        if model
        else "model: none yet"
    )
    for kind, counts in result["items"].items():
        index = result["indexes"].get(kind, {})
        typer.echo(
            f"{kind}s: {counts.get('ok', 0)} indexed, {counts.get('failed', 0)} failed; "
            f"index {index.get('spec', '-')} with {index.get('vectors', 0)} vectors, "
            f"{index.get('bytes', 0) / 1e6:.1f} MB"
        )
    typer.echo(f"store: {result['store_bytes'] / 1e6:.1f} MB")
