"""The `searchmm` command: argument parsing and printing over `searchmm.Engine`.

Results go to stdout (a table, or one JSON document with --json); progress and messages go to
stderr. Exit codes: 0 success, 1 user error (one line, no traceback), 2 usage error, 130 Ctrl-C.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from searchmm.cli.bench import bench_app
from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE
from searchmm.defaults import K as DEFAULT_K
from searchmm.errors import SearchmmError
from searchmm.settings import default_workers

app = typer.Typer(
    help="Search photos and texts with CLIP models: ingest folders, then query by text or image.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

IndexDir = Annotated[
    Path | None,
    typer.Option(
        "--index-dir", help="Index directory", show_default="$SEARCHMM_INDEX_DIR, else ./indexes"
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
Wait = Annotated[
    float,
    typer.Option("--wait", help="Seconds to wait for another writer's lock", show_default="refuse"),
]


def _errors_to_exit_codes(command: F) -> F:
    """User errors become one line on stderr and exit 1; Ctrl-C exits 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _log_to_stderr()
        try:
            return command(*args, **kwargs)
        except SearchmmError as exc:
            typer.echo(f"searchmm: error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("searchmm: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _log_to_stderr() -> None:
    """Our own messages (index rebuilt, and so on) to stderr; libraries' chatter stays off."""
    log = logging.getLogger("searchmm")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("searchmm: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _engine(index_dir: Path | None, device: str = "auto", model: Any = None) -> Any:
    from searchmm.engine.engine import Engine

    return Engine(index_dir, model=model, device=device)


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _shown(path: str) -> str:
    from searchmm.sources.files import display_path

    return display_path(path)


@app.command()
@_errors_to_exit_codes
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Image folders or files, text collections")],
    index_dir: IndexDir = None,
    model: Annotated[
        str | None, typer.Option(help="open_clip architecture or hf-hub:org/repo")
    ] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="Pretrained tag, checkpoint path, or none (random init)")
    ] = None,
    model_config: Annotated[
        Path | None, typer.Option("--model-config", help="Custom open_clip architecture JSON")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per encoder batch")] = DEFAULT_BATCH_SIZE,
    workers: Annotated[
        int, typer.Option(help="Decode worker processes", show_default="half the cores")
    ] = -1,
    device: Device = "auto",
    include_hidden: Annotated[
        bool, typer.Option("--include-hidden", help="Also walk hidden files")
    ] = False,
    texts: Annotated[
        bool, typer.Option("--texts", help="Also ingest .txt/.jsonl/.csv/.json found in folders")
    ] = False,
    text_field: Annotated[str, typer.Option(help="Text field/column of .jsonl and .csv")] = "text",
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Add new and changed files to the index, drop the ones that are gone."""
    from searchmm.model.spec import ModelSpec

    spec = None
    if model or pretrained or model_config:
        spec = ModelSpec.from_options(model, pretrained, model_config)
    engine = _engine(index_dir, device, spec)
    with engine, _first_ctrl_c_stops() as stop:
        summary = engine.ingest(
            paths,
            batch_size=batch_size,
            workers=default_workers() if workers < 0 else workers,
            include_hidden=include_hidden,
            texts_in_folders=texts,
            text_field=text_field,
            progress=not as_json and sys.stderr.isatty(),
            wait=wait,
            stop=stop,
        )
    if as_json:
        _emit_json(summary.to_dict())
    else:
        _print_summary(summary)
    if summary.interrupted:
        raise typer.Exit(130)
    stored = summary.new + summary.changed + summary.unchanged + summary.renamed
    if summary.failed and stored == 0:
        raise typer.Exit(1)  # nothing could be ingested


@contextlib.contextmanager
def _first_ctrl_c_stops() -> Iterator[threading.Event]:
    """The first Ctrl-C lets the batch in flight finish and be committed, then the ingest stops
    and prints its summary (exit 130); a second one aborts at once, dropping that batch."""
    stop = threading.Event()

    def on_sigint(_signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()  # os.write: a handler must not re-enter a buffered stream (progress bars)
        os.write(2, b"searchmm: stopping after the current batch (Ctrl-C again to abort)\n")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_summary(summary: Any) -> None:
    s = summary
    typer.echo(
        f"{s.new} new, {s.changed} changed, {s.unchanged} unchanged, {s.renamed} renamed, "
        f"{s.removed} removed, {len(s.failed)} failed; encoded {s.encoded_images} images and "
        f"{s.encoded_texts} texts ({s.reused} reused) in {s.elapsed_s:.1f} s, "
        f"{s.items_per_s:.1f} items/s"
    )
    for failure in s.failed:
        where = f" [{failure.locator}]" if failure.locator else ""
        typer.echo(f"  failed: {_shown(failure.path)}{where}: {failure.reason}")
    if s.interrupted:
        typer.echo("interrupted: what was committed is kept; run ingest again to finish")


@app.command()
@_errors_to_exit_codes
def query(
    text: Annotated[str | None, typer.Argument(help="Text to search for")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search with this image")] = None,
    like: Annotated[int | None, typer.Option("--like", help="More like this item id")] = None,
    add: Annotated[
        list[str] | None,
        typer.Option("--add", help="Add a term: [WEIGHT=]text:WORDS | image:PATH | item:ID"),
    ] = None,
    sub: Annotated[
        list[str] | None, typer.Option("--sub", help="Subtract a term (same syntax as --add)")
    ] = None,
    target: Annotated[str, typer.Option(help="images or texts")] = "images",
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results")] = DEFAULT_K,
    offset: Annotated[int, typer.Option(help="Skip this many results (paging)")] = 0,
    threshold: Annotated[float | None, typer.Option(help="Drop results scoring below")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only paths matching this glob")
    ] = None,
    after: Annotated[str | None, typer.Option(help="Only files modified after (ISO date)")] = None,
    before: Annotated[
        str | None, typer.Option(help="Only files modified before (ISO date)")
    ] = None,
    min_width: Annotated[int | None, typer.Option(help="Only images at least this wide")] = None,
    min_height: Annotated[int | None, typer.Option(help="Only images at least this tall")] = None,
    where: Annotated[
        list[str] | None, typer.Option("--where", help="Only items whose metadata KEY=VALUE")
    ] = None,
    index_dir: IndexDir = None,
    device: Device = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Search images (or texts) by texts, images and stored items, weighted and filtered.

    TEXT, --image and --like each count with weight 1; --add and --sub take
    [WEIGHT=]text:WORDS, [WEIGHT=]image:PATH or [WEIGHT=]item:ID, e.g.
    searchmm query "golden retriever" --add "image:./my dog.jpg" --sub "2=text:fruit"
    """
    from searchmm.search.filters import Filters, parse_date, parse_where
    from searchmm.search.terms import Term, parse_terms

    terms = [Term("text", text)] if text is not None else []
    terms += [Term("image", str(image))] if image is not None else []
    terms += [Term("item", str(like))] if like is not None else []
    terms += parse_terms(add or (), sub or ())
    if not terms:
        raise typer.BadParameter("give a query TEXT, --image PATH, --like ID or --add TERM")
    filters = Filters(
        path_glob=path,
        modified_after=parse_date(after) if after else None,
        modified_before=parse_date(before) if before else None,
        min_width=min_width,
        min_height=min_height,
        where=tuple(parse_where(w) for w in where or ()),
    )
    with _engine(index_dir, device) as engine:
        hits = engine.search(
            terms, target=target, k=k, offset=offset, threshold=threshold, filters=filters
        )
    if as_json:
        _emit_json([hit.to_dict() for hit in hits])
        return
    # Plain lines, never truncated: paths must survive pipes and narrow terminals whole.
    typer.echo(f"{'rank':>4}  {'score':>7}  {'text' if target.startswith('text') else 'path'}")
    for hit in hits:
        shown = hit.text if hit.item.kind == "text" else _shown(hit.path)
        typer.echo(f"{hit.rank:>4}  {hit.score:>7.4f}  {shown}")


@app.command()
@_errors_to_exit_codes
def dupes(
    threshold: Annotated[
        float, typer.Option(help="Minimum similarity (cosine) of near-duplicates")
    ] = 0.95,
    index_dir: IndexDir = None,
    as_json: JsonFlag = False,
) -> None:
    """List groups of near-identical images, largest first."""
    with _engine(index_dir) as engine:
        groups = engine.duplicates(threshold)
    if as_json:
        _emit_json([[hit.to_dict() for hit in group] for group in groups])
        return
    for number, group in enumerate(groups, 1):
        typer.echo(f"group {number}: {len(group)} images")
        for hit in group:
            typer.echo(f"  {hit.score:.4f}  {_shown(hit.path)}")
    if not groups:
        typer.echo(f"no near-duplicates at similarity >= {threshold}")


@app.command()
@_errors_to_exit_codes
def stats(index_dir: IndexDir = None, as_json: JsonFlag = False) -> None:
    """Counts per kind, the model, index types and sizes on disk."""
    with _engine(index_dir) as engine:
        result = engine.stats().to_dict()
    if as_json:
        _emit_json(result)
        return
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


@app.command()
@_errors_to_exit_codes
def remove(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to forget")],
    index_dir: IndexDir = None,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Forget the items stored under the given paths (the files themselves are not touched)."""
    with _engine(index_dir) as engine:
        removed = engine.remove(paths, wait=wait)
    if as_json:
        _emit_json({"removed": removed})
    else:
        typer.echo(f"{removed} items removed")


@app.command()
@_errors_to_exit_codes
def reindex(
    index_spec: Annotated[
        str | None, typer.Option("--index-spec", help="faiss index_factory string, or auto")
    ] = None,
    index_dir: IndexDir = None,
    wait: Wait = 0.0,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild the FAISS indexes from the stored vectors (no re-encoding)."""
    with _engine(index_dir) as engine:
        specs = engine.reindex(index_spec, wait=wait)
    if as_json:
        _emit_json(specs)
    else:
        for kind, spec in specs.items():
            typer.echo(f"{kind}s: {spec}")


@app.command()
@_errors_to_exit_codes
def serve(
    index_dir: IndexDir = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 opens it to the network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    device: Device = "auto",
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Largest query image accepted, in MB")
    ] = 20.0,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info (one line per request) or warning")
    ] = "info",
) -> None:
    """Serve the HTTP JSON API and the web page (needs the `server` extra)."""
    from searchmm.server import require_server_extra
    from searchmm.server.run import serve as run_server

    require_server_extra()  # one line, before anything is loaded
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"searchmm: loading the model, then serving http://{shown}:{port}/", err=True)
    run_server(
        index_dir,
        host=host,
        port=port,
        device=device,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        log_level=log_level,
    )


app.add_typer(bench_app, name="bench", help="Retrieval benchmarks: COCO and Flickr Recall@K, MRR")


def main() -> None:
    app()
