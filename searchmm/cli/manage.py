"""`searchmm stats`, `remove`, `reindex` and `dupes`: looking after an index directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .options import IndexDir, JsonFlag, MemoryBudget, Wait, open_engine
from .output import emit_json, print_groups, print_stats


@user_errors
def dupes(
    threshold: Annotated[
        float, typer.Option(help="Minimum similarity (cosine) of near-duplicates")
    ] = defaults.DUPES_THRESHOLD,
    index_dir: IndexDir = None,
    as_json: JsonFlag = False,
) -> None:
    """List groups of near-identical images, largest first."""
    with open_engine(index_dir) as engine:
        groups = engine.duplicates(threshold)
    if as_json:
        emit_json([[hit.to_dict() for hit in group] for group in groups])
    else:
        print_groups(groups, threshold)


@user_errors
def stats(index_dir: IndexDir = None, as_json: JsonFlag = False) -> None:
    """Counts per kind, the model, index types and sizes on disk."""
    with open_engine(index_dir) as engine:
        result = engine.stats().to_dict()
    if as_json:
        emit_json(result)
    else:
        print_stats(result)


@user_errors
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to forget")],
    index_dir: IndexDir = None,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Forget the items stored under the given paths (the files themselves are not touched)."""
    with open_engine(index_dir) as engine:
        removed = engine.remove(paths, wait=wait)
    if as_json:
        emit_json({"removed": removed})
    else:
        typer.echo(f"{removed} items removed")


@user_errors
def reindex(
    index_spec: Annotated[
        str | None, typer.Option("--index-spec", help="faiss index_factory string, or auto")
    ] = None,
    memory_budget: MemoryBudget = None,
    index_dir: IndexDir = None,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild the FAISS indexes from the stored vectors (no re-encoding)."""
    with open_engine(index_dir, memory_budget=memory_budget) as engine:
        specs = engine.reindex(index_spec, wait=wait)
    if as_json:
        emit_json(specs)
    else:
        for kind, spec in specs.items():
            typer.echo(f"{kind}s: {spec}")
