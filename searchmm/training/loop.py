"""The fine-tuning run: epochs of contrastive steps, a held-out evaluation after each, the best
weights kept, and everything needed to resume saved at each epoch's end.

A `stop` (the CLI's first Ctrl-C) ends the run at the next step: the epoch in flight is dropped,
and the files hold the last completed one. Nothing here touches a store: the new weights are a
checkpoint, and using them means ingesting into a new index directory.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchmm import defaults
from searchmm.errors import Hint, SearchmmError
from searchmm.model.spec import ModelSpec
from searchmm.sources.images import draft_for
from searchmm.training.checkpoint import (
    RunFiles,
    differences,
    load_state,
    save_state,
    save_weights,
)
from searchmm.training.data import captions_for_epoch, steps_per_epoch, train_batches
from searchmm.training.evaluate import evaluate, mean_recall
from searchmm.training.options import FinetuneOptions
from searchmm.training.pairs import PairSet, split_by_image
from searchmm.training.report import EpochRecord, FinetuneReport
from searchmm.training.schedule import make_optimizer
from searchmm.training.towers import (
    choose_trainable,
    contrastive_loss,
    train_mode,
    train_transform,
    trainable_count,
)

if TYPE_CHECKING:
    from searchmm.model.encoder import TorchEncoder
    from searchmm.sources.loader import DecodedBatch


@dataclass(frozen=True)
class Finetuned:
    """What a run made: its report, and the model as its last epoch left it (in eval mode; the
    checkpoint holds the best epoch, the same one when there is no val split)."""

    report: FinetuneReport
    encoder: TorchEncoder


EpochCallback = Callable[[EpochRecord, bool], None]  # (record, whether it is the best so far)
LOGIT_SCALE_MAX = math.log(100)  # open_clip's clamp: a temperature no lower than 1/100


def finetune(
    pairs: PairSet,
    spec: ModelSpec,
    output: str | Path,
    options: FinetuneOptions | None = None,
    *,
    resume: bool = False,
    stop: threading.Event | None = None,
    on_epoch: EpochCallback | None = None,
    progress: bool = False,
) -> Finetuned:
    """Fine-tune `spec` on `pairs` and write the best epoch's weights to `output` (.safetensors),
    with its report beside it. `resume` continues the interrupted run of the same `output`."""
    options = options or FinetuneOptions()
    if spec.is_hub_model:
        raise SearchmmError(
            f"cannot fine-tune {spec.name}: open_clip loads hf-hub: and local-dir: models with "
            "their own weights only, so nothing could load the new ones; fine-tune the "
            "architecture by its open_clip name, with its weights as the pretrained tag"
        )
    files = RunFiles.beside(output)
    train, val = split_by_image(pairs, options.val_split, options.seed)
    settings = {"model": spec.identity(), "pairs": pairs.digest(), **options.recipe()}
    state = _resume_state(files, settings, resume)
    from searchmm.model.loading import load_encoder

    encoder = load_encoder(spec, options.device)
    trainer = Trainer(encoder, train, val, options, files, stop, progress)
    report = trainer.start(spec, pairs, state)
    del state  # the saved weights and moments are in the model and optimizer now
    started = time.perf_counter()
    elapsed = report.elapsed_s
    if not report.history:
        trainer.baseline(report)
        if on_epoch is not None:
            on_epoch(report.history[0], False)
    for epoch in range(report.epochs_done + 1, options.epochs + 1):
        record = trainer.train_epoch(epoch, report)
        if record is None:
            report.interrupted = True
            break
        best = trainer.finish_epoch(record, report, settings, elapsed + _since(started))
        if on_epoch is not None:
            on_epoch(record, best)
    report.elapsed_s = elapsed + _since(started)
    if not report.interrupted:
        files.resume.unlink(missing_ok=True)
    report.write(files, plot=True)
    encoder.model.eval()
    return Finetuned(report, encoder)


def _since(started: float) -> float:
    return time.perf_counter() - started


def _resume_state(files: RunFiles, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The saved state to continue from, checked against this run's settings; None to start."""
    if not resume:
        if files.resume.exists():
            raise SearchmmError(
                f"an interrupted run of {files.checkpoint.name} left {files.resume}",
                hint=Hint.PASS_RESUME,
            )
        return None
    state = load_state(files.resume)
    changed = differences(state["settings"], settings)
    if changed:
        raise SearchmmError(
            f"cannot resume {files.resume}: the interrupted run had other {', '.join(changed)}"
        )
    return state


class Trainer:
    """The model, its optimizer and schedule, and the steps of one epoch."""

    def __init__(
        self,
        encoder: TorchEncoder,
        train: PairSet,
        val: PairSet,
        options: FinetuneOptions,
        files: RunFiles,
        stop: threading.Event | None,
        progress: bool,
    ) -> None:
        import torch

        self.encoder, self.model = encoder, encoder.model
        self.train, self.val, self.options, self.files = train, val, options, files
        self.stop, self.progress = stop, progress
        self.workers = options.decode_workers(encoder.device)
        choose_trainable(self.model, options)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.steps = steps_per_epoch(len(train), options.batch_size)
        self.optimizer, self.schedule = make_optimizer(
            self.model, options, self.steps * options.epochs
        )
        self.loss = contrastive_loss(self.model)
        self.train_transform = train_transform(self.model)
        cuda = encoder.device.startswith("cuda")
        bf16 = cuda and torch.cuda.is_bf16_supported()
        self.autocast: Callable[[], contextlib.AbstractContextManager[Any]] = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16))
            if cuda
            else contextlib.nullcontext
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cuda and not bf16)  # fp16 only

    def start(
        self, spec: ModelSpec, pairs: PairSet, state: dict[str, Any] | None
    ) -> FinetuneReport:
        """A new report, or the interrupted run's, with its weights and optimizer restored."""
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            if state["scaler"]:  # empty unless it ran fp16 on CUDA
                self.scaler.load_state_dict(state["scaler"])
            report = FinetuneReport.from_dict(state["report"])
            report.interrupted, report.device = False, self.encoder.device
            return report
        data = {
            "images": len(pairs),
            "captions": pairs.caption_count,
            "train_images": len(self.train),
            "val_images": len(self.val),
            "val_captions": self.val.caption_count,
            "missing_images": len(pairs.missing),
            "unusable_records": len(pairs.problems),
            "trainable_parameters": trainable_count(self.model),
        }
        return FinetuneReport(
            model=spec.describe(),
            checkpoint=str(self.files.checkpoint),
            options=self.options.recipe(),
            data=data,
            device=self.encoder.device,
        )

    def baseline(self, report: FinetuneReport) -> None:
        """Epoch 0: the model before any step, on the held-out pairs."""
        report.history.append(self.evaluated(EpochRecord(0), report))

    def evaluated(self, record: EpochRecord, report: FinetuneReport) -> EpochRecord:
        if len(self.val):
            self.model.eval()
            batch_size, workers = self.options.batch_size, self.workers
            metrics, failures = evaluate(
                self.encoder, self.val, batch_size=batch_size, workers=workers
            )
            report.skipped.update(failures)
            record.metrics = metrics
            record.mean_recall = mean_recall(metrics) if metrics else None
        return record

    def train_epoch(self, epoch: int, report: FinetuneReport) -> EpochRecord | None:
        """One epoch of steps; None when a stop came before its end (the epoch is dropped)."""
        from tqdm import tqdm

        train_mode(self.model, self.options)
        captions = captions_for_epoch(self.train, self.options.seed, epoch)
        batches = train_batches(
            self.train,
            self.train_transform,
            seed=self.options.seed,
            epoch=epoch,
            batch_size=self.options.batch_size,
            workers=self.workers,
            draft_size=draft_for(self.encoder.image_size),
        )
        losses: list[float] = []
        pairs = 0
        started = time.perf_counter()
        with tqdm(
            total=self.steps,
            desc=f"epoch {epoch}/{self.options.epochs}",
            unit=" step",
            leave=False,
            disable=not self.progress,
        ) as bar:
            for batch in batches:
                if self.stop is not None and self.stop.is_set():
                    return None
                report.skipped.update((self.train.image_paths[i], why) for i, why in batch.failures)
                if batch.pixels is not None and len(batch.indices) >= 2:
                    losses.append(self.step(batch, [captions[i] for i in batch.indices]))
                    pairs += len(batch.indices)
                self.schedule.step()  # by position: a skipped batch does not stretch the schedule
                bar.update()
        loss = float(sum(losses) / len(losses)) if losses else None
        lr = float(self.schedule.get_last_lr()[-1])
        return EpochRecord(epoch, loss, lr, pairs, _since(started))

    def step(self, batch: DecodedBatch, captions: list[str]) -> float:
        import torch

        assert batch.pixels is not None
        device = self.encoder.device
        pixels = torch.from_numpy(batch.pixels).to(device, non_blocking=True)
        tokens = self.encoder.tokenizer(captions).to(device, non_blocking=True)
        with self.autocast():
            loss = self.loss(*self.model(pixels, tokens))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.trainable, defaults.FINETUNE_GRAD_CLIP)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        return float(loss.detach())

    def finish_epoch(
        self, record: EpochRecord, report: FinetuneReport, settings: dict[str, Any], elapsed: float
    ) -> bool:
        """Evaluate, keep the weights if they are the best yet, save the state to resume from;
        whether this epoch is the best."""
        self.evaluated(record, report)
        best = report.epoch(report.best_epoch) if report.best_epoch is not None else None
        is_best = (  # without figures (no val split), the latest epoch is the best
            best is None
            or record.mean_recall is None
            or best.mean_recall is None
            or record.mean_recall > best.mean_recall
        )
        report.history.append(record)
        report.elapsed_s = elapsed
        if is_best:
            report.best_epoch = record.epoch
            metadata = {"epoch": str(record.epoch), "model": report.model}
            save_weights(self.model, self.files.checkpoint, metadata)
        state = {
            "settings": settings,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "report": report.to_dict(),
        }
        save_state(self.files.resume, state)
        report.write(self.files, plot=False)
        return is_best
