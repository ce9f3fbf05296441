"""`searchmm export` and `searchmm import`: vectors and metadata in clip-retrieval's layout,
out for clip-retrieval and autofaiss, in from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .options import (
    EmbeddingDtype,
    IndexDir,
    JsonFlag,
    MemoryBudget,
    ModelConfig,
    ModelName,
    Pretrained,
    Wait,
    model_spec,
    open_engine,
)
from .output import emit_json


@user_errors
def export(
    out: Annotated[Path, typer.Argument(help="A new or empty folder to write into")],
    index_dir: IndexDir = None,
    shard_size: Annotated[
        int, typer.Option("--shard-size", help="Rows per .npy and .parquet file")
    ] = defaults.EXPORT_SHARD_SIZE,
    dtype: Annotated[str, typer.Option("--dtype", help="float16 or float32")] = "float16",
    as_json: JsonFlag = False,
) -> None:
    """Write the stored vectors and their metadata as clip-retrieval and autofaiss read them:
    img_emb/*.npy with img_metadata/*.parquet, text_emb/*.npy with text_metadata/*.parquet,
    and model.json (the model that made them). Works on bench stores too (--index-dir)."""
    with open_engine(index_dir) as engine:
        summary = engine.export_embeddings(out, shard_size=shard_size, dtype=dtype)
    if as_json:
        emit_json(summary.to_json())
    else:
        typer.echo(
            f"{summary.images} image and {summary.texts} text vectors ({summary.dtype}) "
            f"written to {summary.out} ({len(summary.files)} files, {summary.elapsed_s:.1f} s)"
        )


@user_errors
def import_(
    source: Annotated[Path, typer.Argument(help="A folder of img_emb/, text_emb/ and metadata")],
    index_dir: IndexDir = None,
    model: ModelName = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    batch_rows: Annotated[
        int, typer.Option("--batch-rows", help="Rows per commit (a rerun resumes after one)")
    ] = defaults.IMPORT_BATCH_ROWS,
    embedding_dtype: EmbeddingDtype = None,
    memory_budget: MemoryBudget = None,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Import vectors made elsewhere: clip-retrieval's img_emb/*.npy, text_emb/*.npy and
    metadata/*.parquet, or what `searchmm export` writes. --model names the model that made
    them (default: the folder's model.json, else the store's). Images whose files are not on
    this machine are kept as external items; importing the same folder again changes nothing,
    and an interrupted import resumes."""
    from tqdm import tqdm

    spec = model_spec(model, pretrained, model_config)
    engine = open_engine(
        index_dir, model=spec, embedding_dtype=embedding_dtype, memory_budget=memory_budget
    )
    with (
        engine,
        tqdm(unit="rows", disable=as_json or None, desc="import") as bar,
    ):

        def advance(done: int) -> None:
            bar.update(done - bar.n)

        summary = engine.import_embeddings(
            source, batch_rows=batch_rows, wait=wait, progress=advance
        )
    if as_json:
        emit_json(summary.to_json())
    else:
        typer.echo(
            f"{summary.images} image and {summary.texts} text rows from {summary.source}: "
            f"{summary.added} added ({summary.external} external images), {summary.updated} "
            f"updated, {summary.unchanged} unchanged in {summary.elapsed_s:.1f} s"
        )
