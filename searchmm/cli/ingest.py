"""`searchmm ingest`: new and changed files in, gone ones out; Ctrl-C stops after a batch."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from searchmm import defaults
from searchmm.errors import SearchmmError

from .errors import user_errors
from .options import (
    DEFAULT_DEVICE,
    DEFAULT_WORKERS,
    BackendName,
    BatchSize,
    Device,
    EmbeddingDtype,
    IndexDir,
    JsonFlag,
    MemoryBudget,
    ModelConfig,
    ModelName,
    Pretrained,
    Wait,
    Workers,
    model_spec,
    open_engine,
    workers_or_default,
)
from .output import emit_json, print_summary

if TYPE_CHECKING:
    from searchmm.ingest.ray_encoding import RayOptions


@user_errors
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image folders or files, text collections")],
    index_dir: IndexDir = None,
    model: ModelName = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    batch_size: BatchSize = defaults.BATCH_SIZE,
    workers: Workers = DEFAULT_WORKERS,
    device: Device = DEFAULT_DEVICE,
    backend: BackendName = None,
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also walk hidden files")
    ] = False,
    texts: Annotated[
        bool, typer.Option("--texts", help="Also ingest .txt/.jsonl/.csv/.json found in folders")
    ] = False,
    text_field: Annotated[str, typer.Option(help="Text field/column of .jsonl and .csv")] = "text",
    embedding_dtype: EmbeddingDtype = None,
    memory_budget: MemoryBudget = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where images are decoded and encoded: local, or ray (a Ray cluster whose "
            "workers read the same paths; pip install 'searchmm[ray]')",
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="The Ray cluster", show_default="$RAY_ADDRESS, else local"
        ),
    ] = None,
    actors: Annotated[
        int | None,
        typer.Option(
            "--actors", help="Encoders on the cluster", show_default="one per GPU, else one"
        ),
    ] = None,
    cpu_decode: Annotated[
        bool,
        typer.Option(
            "--cpu-decode",
            help="Decode JPEGs on the CPU even when the model runs on a GPU (which decodes "
            "and resizes them itself by default)",
        ),
    ] = False,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Add new and changed files to the index, drop the ones that are gone."""
    ray = ray_options(executor, ray_address, actors)
    spec = model_spec(model, pretrained, model_config)
    engine = open_engine(
        index_dir,
        device,
        spec,
        backend,
        embedding_dtype=embedding_dtype,
        memory_budget=memory_budget,
    )
    # Ray prints its cluster's errors on stdout: they go with the progress, not into --json
    quiet = contextlib.redirect_stdout(sys.stderr) if ray else contextlib.nullcontext()
    with engine, first_ctrl_c_stops() as stop, quiet:
        summary = engine.ingest(
            paths,
            batch_size=batch_size,
            workers=workers_or_default(workers),
            include_hidden=include_hidden,
            texts_in_folders=texts,
            text_field=text_field,
            progress=not as_json and sys.stderr.isatty(),
            wait=wait,
            stop=stop,
            ray=ray,
            gpu_decode=not cpu_decode,
        )
    if as_json:
        emit_json(summary.to_dict())
    else:
        print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)
    stored = summary.new + summary.changed + summary.unchanged + summary.renamed
    if summary.failed and stored == 0:
        raise typer.Exit(1)  # nothing could be ingested


def ray_options(executor: str, address: str | None, actors: int | None) -> RayOptions | None:
    if executor not in ("local", "ray"):
        raise SearchmmError(f"--executor must be local or ray, got {executor!r}")
    if executor == "local":
        if address is not None or actors is not None:
            raise SearchmmError("--ray-address and --actors need --executor ray")
        return None
    from searchmm.ingest.ray_encoding import RayOptions

    return RayOptions(address, actors)


@contextlib.contextmanager
def first_ctrl_c_stops(
    what: str = "stopping after the current batch",
) -> Iterator[threading.Event]:
    """The first Ctrl-C lets the batch in flight finish and be committed, then the ingest stops
    and prints its summary (exit 130); a second one aborts at once, dropping that batch. `what`
    says what the first one does (fine-tuning stops at once, keeping the last epoch)."""
    stop = threading.Event()
    message = f"searchmm: {what} (Ctrl-C again to abort)\n".encode()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # os.write: a handler must not re-enter a buffered stream (progress bars)
        os.write(2, message)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
