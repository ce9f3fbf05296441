"""`searchmm finetune`: contrastive fine-tuning on your own image-caption pairs, to a checkpoint
that `--pretrained` loads everywhere. No store is touched: new weights mean a new store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .ingest import first_ctrl_c_stops
from .options import (
    DEFAULT_DEVICE,
    Device,
    IndexDir,
    JsonFlag,
    ModelConfig,
    ModelName,
    Pretrained,
    model_spec,
    open_engine,
)
from .output import emit_json, shown

if TYPE_CHECKING:
    from searchmm.training.pairs import PairSet
    from searchmm.training.report import EpochRecord, FinetuneReport


@user_errors
def finetune(
    images: Annotated[Path, typer.Option("--images", help="Folder holding the images")],
    captions: Annotated[
        Path,
        typer.Option(
            "--captions", help="COCO captions JSON, or .jsonl/.csv with an image path field"
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", help="The checkpoint to write (.safetensors)")
    ],
    index_dir: IndexDir = None,
    model: ModelName = None,
    pretrained: Pretrained = None,
    model_config: ModelConfig = None,
    epochs: Annotated[int, typer.Option(help="Passes over the pairs")] = defaults.FINETUNE_EPOCHS,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Pairs per step")
    ] = defaults.FINETUNE_BATCH_SIZE,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate")] = defaults.FINETUNE_LR,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay (not on gains and biases)")
    ] = defaults.FINETUNE_WEIGHT_DECAY,
    warmup_steps: Annotated[
        int | None,
        typer.Option("--warmup-steps", help="Steps of linear warm-up", show_default="10% of all"),
    ] = None,
    freeze_image: Annotated[
        bool, typer.Option("--freeze-image", help="Train only the text tower")
    ] = False,
    freeze_text: Annotated[
        bool, typer.Option("--freeze-text", help="Train only the image tower")
    ] = False,
    lock_image_layers: Annotated[
        int,
        typer.Option(
            "--lock-image-layers",
            help="Lock the image tower's patch embedding and first N blocks",
        ),
    ] = 0,
    val_split: Annotated[
        float, typer.Option("--val-split", help="Fraction of the images held out to evaluate")
    ] = defaults.FINETUNE_VAL_SPLIT,
    seed: Annotated[int, typer.Option(help="Seed of the split, the order and augmentation")] = 0,
    text_field: Annotated[
        str, typer.Option(help="Caption field/column of .jsonl and .csv")
    ] = "text",
    image_field: Annotated[
        str, typer.Option(help="Image path field/column of .jsonl and .csv")
    ] = defaults.FINETUNE_IMAGE_FIELD,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run of --output")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Decode worker processes",
            show_default="0 on the CPU, else half the cores",
        ),
    ] = None,
    device: Device = DEFAULT_DEVICE,
    as_json: JsonFlag = False,
) -> None:
    """Fine-tune a model on your image-caption pairs, to a checkpoint that --pretrained loads.

    CLIP's contrastive loss (SigLIP's for SigLIP models). After each epoch it reports held-out
    Recall@1/5/10 and MRR, as `searchmm bench` computes them, and keeps the best epoch in
    --output, with a report beside it. The model is --model/--pretrained/--model-config, else
    the model of --index-dir's store; no store is changed: use the new weights with
    --pretrained OUTPUT in a new --index-dir. Ctrl-C keeps the last completed epoch; --resume
    continues from it."""
    from searchmm.training.loop import finetune as run
    from searchmm.training.options import FinetuneOptions
    from searchmm.training.pairs import read_pairs

    options = FinetuneOptions(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        warmup_steps=warmup_steps, freeze_image=freeze_image, freeze_text=freeze_text,
        lock_image_layers=lock_image_layers, val_split=val_split, seed=seed,
        workers=workers, device=device,
    )  # fmt: skip
    pairs = read_pairs(images, captions, text_field=text_field, image_field=image_field)
    if pairs.missing:
        typer.echo(
            f"searchmm: {len(pairs.missing)} of the {len(pairs) + len(pairs.missing)} images "
            f"that {shown(str(captions))} names are not in {shown(str(images))}: training on "
            f"the other {len(pairs)}",
            err=True,
        )
    spec = model_spec(model, pretrained, model_config)
    if spec is None:
        with open_engine(index_dir) as engine:
            spec = engine.model_spec()

    def on_epoch(record: EpochRecord, best: bool) -> None:
        typer.echo(record.line(epochs) + (" (best)" if best else ""), err=as_json)

    with first_ctrl_c_stops("stopping: the last completed epoch is kept") as stop:
        report = run(
            pairs, spec, output, options, resume=resume, stop=stop, on_epoch=on_epoch,
            progress=not as_json and sys.stderr.isatty(),
        ).report  # fmt: skip
    if as_json:
        emit_json(report.to_dict())
    else:
        print_report(report, pairs, captions)
    if report.interrupted:
        raise typer.Exit(130)


def print_report(report: FinetuneReport, pairs: PairSet, captions: Path) -> None:
    best = report.epoch(report.best_epoch) if report.best_epoch is not None else None
    before = report.epoch(0)
    if best is None:
        typer.echo("no epoch completed: nothing was saved")
    else:
        figures = ""
        if best.mean_recall is not None and before is not None and before.mean_recall is not None:
            figures = f": mean recall {best.mean_recall:.4f} (before: {before.mean_recall:.4f}"
            figures += ", no better)" if best.mean_recall <= before.mean_recall else ")"
        typer.echo(f"best epoch {best.epoch}{figures}; weights in {shown(report.checkpoint)}")
    from searchmm.training.checkpoint import RunFiles

    typer.echo(f"report: {shown(str(RunFiles(Path(report.checkpoint)).report_md))}")
    for locator, reason in pairs.problems:
        typer.echo(f"  failed: {shown(str(captions))} [{locator}]: {reason}")
    for path, reason in sorted(report.skipped.items()):
        typer.echo(f"  skipped: {shown(path)}: {reason}")
    if report.interrupted and best is None:
        typer.echo("interrupted before the first epoch ended: run it again")
    elif report.interrupted:
        typer.echo("interrupted: the last completed epoch is kept; --resume continues the run")
