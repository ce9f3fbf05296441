"""What a fine-tuning run did, epoch by epoch: JSON and markdown beside the checkpoint, and a
plot of loss and recall when matplotlib is installed (the `finetune` extra).

Epoch 0 is the model before training, evaluated on the same held-out pairs: the baseline that
says whether fine-tuning helped.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from searchmm.atomicfile import write_bytes_atomic
from searchmm.evaluation.metrics import DEFAULT_KS
from searchmm.training.checkpoint import RunFiles

ARROWS = (("image_retrieval", "text->image"), ("text_retrieval", "image->text"))
NO_PLOT = "no plot: matplotlib is not installed (pip install 'searchmm[finetune]')"


@dataclass
class EpochRecord:
    """One epoch: its mean training loss and speed, and the held-out metrics after it."""

    epoch: int
    loss: float | None = None  # None for epoch 0, the model before training
    lr: float | None = None  # the rate at the epoch's end
    pairs: int = 0  # pairs trained on
    train_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # as `retrieval_metrics` names them
    mean_recall: float | None = None  # mean of Recall@1/5/10, both directions

    @property
    def pairs_per_s(self) -> float:
        return self.pairs / self.train_s if self.train_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pairs_per_s": round(self.pairs_per_s, 2)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochRecord:
        return cls(**{k: v for k, v in values.items() if k != "pairs_per_s"})

    def line(self, epochs: int) -> str:
        """`epoch 3/10: loss 1.234, ...`: what the command prints after each epoch."""
        parts = [f"epoch {self.epoch}/{epochs}:"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f},")
        if self.metrics:
            for direction, arrow in ARROWS:
                recalls = " ".join(
                    f"R@{k} {self.metrics[f'{direction}_recall@{k}']:.3f}" for k in DEFAULT_KS
                )
                parts.append(f"{arrow} {recalls} MRR {self.metrics[f'{direction}_mrr']:.3f},")
            parts.append(f"mean recall {self.mean_recall:.4f}")
        if self.loss is not None:
            parts.append(f"({self.pairs_per_s:.1f} pairs/s)")
        return " ".join(parts).rstrip(",")


@dataclass
class FinetuneReport:
    """The run: its model, data and options, every epoch, and the best one (the checkpoint)."""

    model: str
    checkpoint: str
    options: dict[str, Any]
    data: dict[str, Any]  # images and captions: trained, held out, missing, unreadable records
    device: str = "cpu"
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # image path -> why it was skipped
    interrupted: bool = False
    elapsed_s: float = 0.0
    plot: str | None = None  # the PNG, or why there is none

    @property
    def epochs_done(self) -> int:
        return self.history[-1].epoch if self.history else 0

    def epoch(self, number: int) -> EpochRecord | None:
        return next((r for r in self.history if r.epoch == number), None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "history": [r.to_dict() for r in self.history]}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneReport:
        history = [EpochRecord.from_dict(r) for r in values["history"]]
        return cls(**{**values, "history": history})

    def to_markdown(self) -> str:
        ks = "/".join(str(k) for k in DEFAULT_KS)
        lines = [
            f"# Fine-tuning {self.model}",
            "",
            f"- checkpoint: {self.checkpoint} (epoch {self.best_epoch}, the best by mean recall)"
            if self.best_epoch is not None
            else "- checkpoint: none (no epoch completed)",
            f"- data: {', '.join(f'{k} {v}' for k, v in self.data.items())}",
            f"- options: {', '.join(f'{k}={v}' for k, v in self.options.items())}",
            f"- device: {self.device}; {self.elapsed_s:.1f} s"
            + (" (interrupted: run again with --resume)" if self.interrupted else ""),
            "",
            f"| epoch | loss | text->image R@{ks} | MRR | image->text R@{ks} | MRR "
            "| mean recall | pairs/s |",
            "|---:|---:|---|---:|---|---:|---:|---:|",
        ]
        for r in self.history:
            cells = [str(r.epoch) + (" (best)" if r.epoch == self.best_epoch else "")]
            cells.append(f"{r.loss:.4f}" if r.loss is not None else "-")
            for direction, _ in ARROWS:
                if r.metrics:
                    recalls = [f"{r.metrics[f'{direction}_recall@{k}']:.3f}" for k in DEFAULT_KS]
                    cells += [" / ".join(recalls), f"{r.metrics[f'{direction}_mrr']:.3f}"]
                else:
                    cells += ["-", "-"]
            cells.append(f"{r.mean_recall:.4f}" if r.mean_recall is not None else "-")
            cells.append(f"{r.pairs_per_s:.1f}" if r.loss is not None else "-")
            lines.append("| " + " | ".join(cells) + " |")
        if self.skipped:
            lines += ["", f"Skipped {len(self.skipped)} images:", ""]
            lines += [f"- {path}: {reason}" for path, reason in sorted(self.skipped.items())]
        if self.plot:
            lines += ["", f"Plot: {self.plot}"]
        return "\n".join(lines) + "\n"

    def write(self, files: RunFiles, *, plot: bool) -> None:
        """The JSON and markdown reports (and the plot, when asked), each replaced atomically."""
        if plot:
            self.plot = write_plot(self, files)
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        write_bytes_atomic(files.report_json, text.encode("utf-8"))
        write_bytes_atomic(files.report_md, self.to_markdown().encode("utf-8"))


def write_plot(report: FinetuneReport, files: RunFiles) -> str:
    """Loss and held-out recall per epoch as a PNG; its path, or why there is none."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return NO_PLOT
    trained = [r for r in report.history if r.loss is not None]
    evaluated = [r for r in report.history if r.metrics]
    epochs = [r.epoch for r in evaluated]
    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, recall_axes = figure.subplots(1, 2)
    loss_axes.plot([r.epoch for r in trained], [r.loss for r in trained], marker="o")
    loss_axes.set(title="training loss", xlabel="epoch", ylabel="loss")
    for key, label in (
        ("image_retrieval_recall@1", "text->image R@1"),
        ("text_retrieval_recall@1", "image->text R@1"),
    ):
        recall_axes.plot(epochs, [r.metrics[key] for r in evaluated], marker="o", label=label)
    means = [r.mean_recall for r in evaluated]
    recall_axes.plot(epochs, means, marker="s", label="mean recall (R@1/5/10)")
    recall_axes.set(title="held-out retrieval", xlabel="epoch", ylabel="recall", ylim=(0, 1))
    recall_axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(files.plot, buffer.getvalue())
    return str(files.plot)
