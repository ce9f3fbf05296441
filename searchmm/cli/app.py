"""The `searchmm` command: the typer app, assembled from one module per group of commands.

Results go to stdout (a table, or one JSON document with --json); progress and messages go to
stderr. Exit codes: 0 success, 1 user error (one line, no traceback), 2 usage error, 130 Ctrl-C.
Help and usage errors are click's plain text (`rich_markup_mode=None`): rendering them with
rich costs more than importing typer itself, and `--help` should answer at once.
"""

from __future__ import annotations

import os
import sys

import typer

from .bench import bench_app
from .exchange import export, import_
from .finetune import finetune
from .ingest import ingest
from .manage import dupes, reindex, remove, stats
from .models import models
from .options import Group
from .query import query
from .serve import serve

app = typer.Typer(
    help="Search photos and texts with CLIP models: ingest folders, then query by text or image.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=Group,
)

for command in (ingest, query, dupes, stats, remove, reindex, export, finetune, models, serve):
    app.command()(command)
app.command("import")(import_)
app.add_typer(bench_app, name="bench", help="Retrieval benchmarks: COCO and Flickr Recall@K, MRR")


def run() -> int:
    """Run the command line in `sys.argv`; its exit status."""
    try:
        app()
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    return 0


def main() -> None:
    """The console command. It leaves without the interpreter's teardown: everything it wrote
    is closed and flushed by then, and after torch was loaded, teardown takes seconds."""
    code = run()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
