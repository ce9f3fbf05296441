"""`searchmm bench coco|flickr`: retrieval benchmarks through the engine, as a typer sub-app.

Imported on every start of the CLI, so nothing heavy (numpy, torch) is imported at module
level: the loaders, the engine and the runner are imported inside the commands.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from searchmm import defaults

from .errors import user_errors
from .options import (
    DEFAULT_DEVICE,
    DEFAULT_WORKERS,
    BatchSize,
    Device,
    Group,
    JsonFlag,
    ModelConfig,
    ModelName,
    Pretrained,
    Workers,
    model_spec,
    workers_or_default,
)

if TYPE_CHECKING:
    from searchmm.evaluation.datasets import RetrievalDataset

bench_app = typer.Typer(
    help="Retrieval benchmarks (Recall@K, MRR, ranks) on COCO and Flickr, through the engine.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=Group,
)

Images = Annotated[Path, typer.Option("--images", help="Folder holding the dataset's images")]
Ks = Annotated[
    list[int] | None,
    typer.Option(
        "--k", "-k", metavar="K", help="A K of Recall@K; repeat for several: --k 1 --k 5 --k 10"
    ),
]
BenchIndexDir = Annotated[
    Path | None,
    typer.Option(
        "--index-dir",
        help="Where the bench's vectors are kept",
        show_default="<index dir>/bench/<dataset>-<split>-<model>",
    ),
]
IndexSpec = Annotated[
    str | None,
    typer.Option(
        "--index-spec", help="Also measure this faiss index_factory index (e.g. HNSW32) vs exact"
    ),
]
AllowMissing = Annotated[
    bool,
    typer.Option(
        "--allow-missing", help="Leave out images missing on disk or undecodable (and captions)"
    ),
]
Output = Annotated[
    Path | None,
    typer.Option("--output", help="Also write <dataset>-<split>.json and .md into this folder"),
]


@dataclass(frozen=True)
class BenchOptions:
    """The options every benchmark takes; built by `bench_options` from the command line."""

    images: Path
    k: list[int] | None
    index_dir: Path | None
    model: str | None
    pretrained: str | None
    model_config: Path | None
    index_spec: str | None
    allow_missing: bool
    batch_size: int
    workers: int
    device: str
    output: Path | None
    as_json: bool


def bench_options(
    images: Images,
    k: Ks = None,
    index_dir: BenchIndexDir = None,
    model: ModelName = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    index_spec: IndexSpec = None,
    allow_missing: AllowMissing = False,
    batch_size: BatchSize = defaults.BATCH_SIZE,
    workers: Workers = DEFAULT_WORKERS,
    device: Device = DEFAULT_DEVICE,
    output: Output = None,
    as_json: JsonFlag = False,
) -> BenchOptions:
    return BenchOptions(
        images, k, index_dir, model, pretrained, model_config, index_spec, allow_missing,
        batch_size, workers, device, output, as_json,
    )  # fmt: skip


def with_bench_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a benchmark command `bench_options`' parameters, handed to it as `options`.

    Typer reads the signature: --images comes first, then the command's own options, then the
    shared ones, as if each command declared all of them.
    """
    shared = list(inspect.signature(bench_options, eval_str=True).parameters.values())
    own = [
        p
        for name, p in inspect.signature(command, eval_str=True).parameters.items()
        if name != "options"
    ]
    params = [shared[0], *own, *shared[1:]]
    shared_names = {p.name for p in shared}

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        common = {name: kwargs.pop(name) for name in list(kwargs) if name in shared_names}
        command(**kwargs, options=bench_options(**common))

    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


@bench_app.command()
@user_errors
@with_bench_options
def coco(
    captions: Annotated[
        Path, typer.Option("--captions", help="Official captions JSON (captions_val2014.json)")
    ],
    karpathy_split: Annotated[
        Path | None,
        typer.Option("--karpathy-split", help="Karpathy's dataset_coco.json, to pick a split"),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Split of --karpathy-split", show_default="test"),
    ] = None,
    *,
    options: BenchOptions,
) -> None:
    """COCO: the Karpathy 5k test split with all official captions, or a whole captions file."""
    from searchmm.evaluation.datasets import load_coco

    run(load_coco(options.images, captions, karpathy_split=karpathy_split, split=split), options)


@bench_app.command()
@user_errors
@with_bench_options
def flickr(
    karpathy: Annotated[
        Path | None,
        typer.Option("--karpathy", help="dataset_flickr30k.json or dataset_flickr8k.json"),
    ] = None,
    split: Annotated[str, typer.Option(help="Split of --karpathy")] = "test",
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="Flickr8k.token.txt (instead of --karpathy)")
    ] = None,
    test_images: Annotated[
        Path | None,
        typer.Option("--test-images", help="Flickr_8k.testImages.txt, with --token-file"),
    ] = None,
    *,
    options: BenchOptions,
) -> None:
    """Flickr30k/8k: a Karpathy split file, or Flickr8k's token file and image list."""
    from searchmm.evaluation.datasets import load_flickr8k_tokens, load_karpathy

    if (karpathy is None) == (token_file is None):
        raise typer.BadParameter("give --karpathy FILE or --token-file FILE (one of the two)")
    if karpathy is not None and test_images is not None:
        raise typer.BadParameter("--test-images goes with --token-file, not --karpathy")
    if karpathy is not None:
        dataset = load_karpathy(karpathy, options.images, split=split)
    else:
        assert token_file is not None
        dataset = load_flickr8k_tokens(token_file, options.images, test_images=test_images)
    run(dataset, options)


def run(dataset: RetrievalDataset, options: BenchOptions) -> None:
    """Evaluate through an engine, then print (and maybe write) the report."""
    from searchmm.engine.engine import Engine
    from searchmm.evaluation.metrics import DEFAULT_KS
    from searchmm.evaluation.runner import default_bench_dir, evaluate
    from searchmm.model.spec import ModelSpec

    spec = model_spec(options.model, options.pretrained, options.model_config)
    index_dir = options.index_dir
    if index_dir is None:  # a directory per dataset and model, so the spec is always known
        spec = spec or ModelSpec.from_options()
        index_dir = default_bench_dir(dataset, spec)
    # torch: the runtime of the published tables (onnxruntime agrees to cosine 0.99999 only)
    with Engine(index_dir, model=spec, device=options.device, backend="torch") as engine:
        report = evaluate(
            dataset,
            engine,
            ks=options.k or DEFAULT_KS,
            index_spec=options.index_spec,
            batch_size=options.batch_size,
            workers=workers_or_default(options.workers),
            allow_missing=options.allow_missing,
            progress=not options.as_json and sys.stderr.isatty(),
        )
    result = report.to_dict()
    if options.output is not None:
        options.output.mkdir(parents=True, exist_ok=True)
        stem = options.output / f"{dataset.label}"
        Path(f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        Path(f"{stem}.md").write_text(report.to_markdown(), encoding="utf-8")
        typer.echo(f"searchmm: wrote {stem}.json and {stem}.md", err=True)
    if options.as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        typer.echo(report.to_markdown(), nl=False)
