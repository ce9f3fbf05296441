"""Every option that more than one command takes, declared once, with its default from
`searchmm.defaults`; and the glue that turns option values into library arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core

from searchmm import defaults

if TYPE_CHECKING:
    from searchmm.engine.engine import Engine
    from searchmm.model.spec import ModelSpec

IndexDir = Annotated[
    Path | None,
    typer.Option(
        "--index-dir", help="Index directory", show_default="$SEARCHMM_INDEX_DIR, else ./indexes"
    ),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
BackendName = Annotated[
    str | None,
    typer.Option(
        "--backend",
        help="What encodes: onnx (the model's verified export), torch, or auto (onnx on the "
        "CPU where the model has an export, else torch)",
        show_default="$SEARCHMM_BACKEND, else auto",
    ),
]
Wait = Annotated[
    float,
    typer.Option("--wait", help="Seconds to wait for another writer's lock", show_default="refuse"),
]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Images per encoder batch")]
Workers = Annotated[
    int, typer.Option("--workers", help="Decode worker processes", show_default="half the cores")
]
ModelName = Annotated[
    str | None,
    typer.Option(
        "--model", help="open_clip architecture or hf-hub:org/repo", show_default=defaults.MODEL
    ),
]
Pretrained = Annotated[
    str | None,
    typer.Option(
        "--pretrained",
        help="Pretrained tag, checkpoint path, or none (random init)",
        show_default="model's default",
    ),
]
ModelConfig = Annotated[
    Path | None, typer.Option("--model-config", help="Custom open_clip architecture JSON")
]
EmbeddingDtype = Annotated[
    str | None,
    typer.Option(
        "--embedding-dtype",
        help="How a new store keeps vectors: float32, or float16 (half the disk, cosine to "
        "float32 >= 0.9999)",
        show_default="float32 (import: the shards' own)",
    ),
]
MemoryBudget = Annotated[
    str | None,
    typer.Option(
        "--memory-budget",
        help="RAM the automatically chosen indexes may take, e.g. 8G (kept for later commands)",
        show_default="no limit",
    ),
]


SHORT_HELP_LIMIT = 200  # characters of a command's first help line shown in its group's list


class Group(typer.core.TyperGroup):
    """A command group whose unused --help is False rather than None: typer coerces a None flag
    through pydantic, an import that costs more than typer itself on every `searchmm COMMAND`."""

    def get_help_option(self, ctx: Any) -> typer.core.TyperOption | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.default = False
        return option

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command's first line whole, wrapped, where click would cut it with '...'."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=SHORT_HELP_LIMIT)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


DEFAULT_DEVICE = "auto"
DEFAULT_WORKERS = -1  # the option's "half the cores"


def model_spec(
    model: str | None, pretrained: str | None, model_config: Path | None
) -> ModelSpec | None:
    """The model the options ask for, or None when none is given (the store's own is used)."""
    if not (model or pretrained or model_config):
        return None
    from searchmm.model.spec import ModelSpec

    return ModelSpec.from_options(model, pretrained, model_config)


def workers_or_default(workers: int) -> int:
    from searchmm.settings import default_workers

    return default_workers() if workers < 0 else workers


def open_engine(
    index_dir: Path | None,
    device: str = DEFAULT_DEVICE,
    model: ModelSpec | None = None,
    backend: str | None = None,
    *,
    quick_start: bool = False,
    embedding_dtype: str | None = None,
    memory_budget: str | None = None,
) -> Engine:
    from searchmm.engine.engine import Engine
    from searchmm.engine.storage import StorageOptions, parse_size

    budget = parse_size(memory_budget) if memory_budget is not None else None
    storage = StorageOptions(embedding_dtype, budget)
    return Engine(
        index_dir,
        model=model,
        device=device,
        backend=backend,
        quick_start=quick_start,
        storage=storage,
    )
