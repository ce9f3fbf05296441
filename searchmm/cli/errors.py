"""Errors to exit codes and one line on stderr, with each hint worded as the CLI's flags."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from searchmm.errors import Hint, SearchmmError

F = TypeVar("F", bound=Callable[..., Any])

# `{message}` is the library's message; the rest says which flag or command helps.
CLI_HINTS: dict[Hint, str] = {
    Hint.INGEST_FIRST: "{message}: run `searchmm ingest PATH` first",
    Hint.OTHER_INDEX_DIR: "{message}: use another --index-dir, or leave out the model options",
    Hint.OWN_INDEX_DIR: "{message} (--index-dir)",
    Hint.WAIT_FOR_LOCK: "{message} or pass --wait SECONDS",
    Hint.PASS_PRETRAINED: "{message}: pass --pretrained TAG|PATH|none",
    Hint.PASS_PRETRAINED_FILE: "{message}, or pass --pretrained /path/to/weights.safetensors",
    Hint.PASS_PRETRAINED_COPY: (
        "{message} or pass --pretrained PATH to a copy with the same content"
    ),
    Hint.PASS_MODEL_CONFIG: "{message} or pass --model-config FILE",
    Hint.ALLOW_MISSING: "{message}, or pass --allow-missing to evaluate without them",
    Hint.BATCH_OPTIONS: "--batch-size must be at least 1 and --workers at least 0",
    Hint.DROP_MODEL_NAME: "{message}: leave out --model (--model-config names the model)",
    Hint.PASS_SPLIT_FILE: "{message}: --split needs --karpathy-split",
    Hint.TOKEN: "{message}: the token is printed when `searchmm serve` starts",
    Hint.USE_TORCH_BACKEND: "{message}: ingest with --backend auto first, or use --backend torch",
    Hint.PASS_RESUME: "{message}: pass --resume to continue it, or delete it to start afresh",
}


def cli_message(exc: SearchmmError) -> str:
    """The error's message, with its hint in the CLI's words."""
    if exc.hint is None:
        return str(exc)
    return CLI_HINTS[exc.hint].replace("{message}", str(exc))


def user_errors(command: F) -> F:
    """User errors become one line on stderr and exit 1; Ctrl-C exits 130 without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        log_to_stderr()
        try:
            return command(*args, **kwargs)
        except SearchmmError as exc:
            typer.echo(f"searchmm: error: {cli_message(exc)}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("searchmm: interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def log_to_stderr() -> None:
    """Our own messages (index rebuilt, and so on) to stderr; libraries' chatter stays off."""
    import logging
    import sys

    log = logging.getLogger("searchmm")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("searchmm: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
