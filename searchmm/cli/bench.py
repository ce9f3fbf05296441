"""`searchmm bench coco|flickr`: retrieval benchmarks through the engine, as a typer sub-app.

Imported by `searchmm.cli` on every start, so nothing heavy (numpy, torch) is imported at
module level here: the loaders, the engine and the runner are imported inside the commands.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE

bench_app = typer.Typer(
    help="Retrieval benchmarks (Recall@K, MRR, ranks) on COCO and Flickr, through the engine.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

Images = Annotated[Path, typer.Option("--images", help="Folder holding the dataset's images")]
Ks = Annotated[
    list[int] | None,
    typer.Option("--k", "-k", help="A K of Recall@K; repeat for several: --k 1 --k 5 --k 10"),
]
IndexDir = Annotated[
    Path | None,
    typer.Option(
        "--index-dir",
        help="Where the bench's vectors are kept",
        show_default="<index dir>/bench/<dataset>-<split>-<model>",
    ),
]
Model = Annotated[str | None, typer.Option(help="open_clip architecture", show_default="ViT-B-32")]
Pretrained = Annotated[
    str | None,
    typer.Option(help="Pretrained tag, checkpoint path, or none", show_default="model's default"),
]
ModelConfig = Annotated[
    Path | None, typer.Option("--model-config", help="Custom open_clip architecture JSON")
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
BatchSize = Annotated[int, typer.Option(help="Images per encoder batch")]
Workers = Annotated[
    int, typer.Option(help="Decode worker processes", show_default="half the cores")
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]
Output = Annotated[
    Path | None,
    typer.Option("--output", help="Also write <dataset>-<split>.json and .md into this folder"),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the report as one JSON document")]


def _user_errors(command: F) -> F:
    """The main CLI's error handling (one line, exit 1), looked up when the command runs."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from searchmm.cli.app import _errors_to_exit_codes

        return _errors_to_exit_codes(command)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@bench_app.command()
@_user_errors
def coco(
    images: Images,
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
    k: Ks = None,
    index_dir: IndexDir = None,
    model: Model = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    index_spec: IndexSpec = None,
    allow_missing: AllowMissing = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    workers: Workers = -1,
    device: Device = "auto",
    output: Output = None,
    as_json: JsonFlag = False,
) -> None:
    """COCO: the Karpathy 5k test split with all official captions, or a whole captions file."""
    from searchmm.evaluation.datasets import load_coco

    dataset = load_coco(images, captions, karpathy_split=karpathy_split, split=split)
    _run(
        dataset,
        k=k,
        index_dir=index_dir,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        index_spec=index_spec,
        allow_missing=allow_missing,
        batch_size=batch_size,
        workers=workers,
        device=device,
        output=output,
        as_json=as_json,
    )


@bench_app.command()
@_user_errors
def flickr(
    images: Images,
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
    k: Ks = None,
    index_dir: IndexDir = None,
    model: Model = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    index_spec: IndexSpec = None,
    allow_missing: AllowMissing = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    workers: Workers = -1,
    device: Device = "auto",
    output: Output = None,
    as_json: JsonFlag = False,
) -> None:
    """Flickr30k/8k: a Karpathy split file, or Flickr8k's token file and image list."""
    from searchmm.evaluation.datasets import load_flickr8k_tokens, load_karpathy

    if (karpathy is None) == (token_file is None):
        raise typer.BadParameter("give --karpathy FILE or --token-file FILE (one of the two)")
    if karpathy is not None and test_images is not None:
        raise typer.BadParameter("--test-images goes with --token-file, not --karpathy")
    if karpathy is not None:
        dataset = load_karpathy(karpathy, images, split=split)
    else:
        assert token_file is not None
        dataset = load_flickr8k_tokens(token_file, images, test_images=test_images)
    _run(
        dataset,
        k=k,
        index_dir=index_dir,
        model=model,
        pretrained=pretrained,
        model_config=model_config,
        index_spec=index_spec,
        allow_missing=allow_missing,
        batch_size=batch_size,
        workers=workers,
        device=device,
        output=output,
        as_json=as_json,
    )


def _run(
    dataset: Any,
    *,
    k: list[int] | None,
    index_dir: Path | None,
    model: str | None,
    pretrained: str | None,
    model_config: Path | None,
    index_spec: str | None,
    allow_missing: bool,
    batch_size: int,
    workers: int,
    device: str,
    output: Path | None,
    as_json: bool,
) -> None:
    from searchmm.engine.engine import Engine
    from searchmm.evaluation.metrics import DEFAULT_KS
    from searchmm.evaluation.runner import default_bench_dir, evaluate
    from searchmm.model.spec import ModelSpec
    from searchmm.settings import default_workers

    spec = None
    if model or pretrained or model_config:
        spec = ModelSpec.from_options(model, pretrained, model_config)
    if index_dir is None:  # a directory per dataset and model, so the spec is always known
        spec = spec or ModelSpec.from_options()
        index_dir = default_bench_dir(dataset, spec)
    with Engine(index_dir, model=spec, device=device) as engine:
        report = evaluate(
            dataset,
            engine,
            ks=k or DEFAULT_KS,
            index_spec=index_spec,
            batch_size=batch_size,
            workers=default_workers() if workers < 0 else workers,
            allow_missing=allow_missing,
            progress=not as_json and sys.stderr.isatty(),
        )
    result = report.to_dict()
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        stem = output / f"{dataset.label}"
        Path(f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        Path(f"{stem}.md").write_text(report.to_markdown(), encoding="utf-8")
        typer.echo(f"searchmm: wrote {stem}.json and {stem}.md", err=True)
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        typer.echo(report.to_markdown(), nl=False)
