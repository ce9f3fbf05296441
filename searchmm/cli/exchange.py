"""`searchmm export`: the store's vectors and metadata for clip-retrieval and autofaiss."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .options import IndexDir, JsonFlag, open_engine
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
