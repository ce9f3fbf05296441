"""What one evaluation found, as JSON (`to_dict`) and as a markdown report (`to_markdown`).

Where open_clip published figures for the same model, weights and benchmark split, they are
shown beside ours with the difference, so a regression (or a wrong preprocessing) shows at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .published import BENCHMARK_TITLES, SOURCE, benchmark_key, published_metrics

DIRECTIONS = (
    ("image_retrieval", "text -> image"),
    ("text_retrieval", "image -> text"),
)


@dataclass
class EvaluationReport:
    """Counts, exact metrics, optional ANN-index metrics and timings of one evaluation."""

    model: str
    pretrained: str
    dataset: str
    split: str
    split_source: str
    index_dir: str
    ks: tuple[int, ...]
    counts: dict[str, int]
    metrics: dict[str, float]
    timings: dict[str, Any]
    allow_missing: bool = False
    dropped_images: list[dict[str, str]] = field(default_factory=list)
    index_spec: str | None = None  # the ANN index evaluated (as built), None for exact only
    index_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def benchmark(self) -> str | None:
        """`coco-5k` or `flickr30k-1k` when the data is the split open_clip's table used."""
        return benchmark_key(self.dataset, self.split, self.split_source)

    @property
    def published(self) -> dict[str, float]:
        return published_metrics(self.model, self.pretrained, self.benchmark)

    def differences(self) -> dict[str, float]:
        """Ours minus published, for every published metric we measured."""
        return {
            key: self.metrics[key] - value
            for key, value in self.published.items()
            if key in self.metrics
        }

    def to_dict(self) -> dict[str, Any]:
        published = self.published
        return {
            "model": self.model,
            "pretrained": self.pretrained,
            "dataset": self.dataset,
            "split": self.split,
            "split_source": self.split_source,
            "benchmark": self.benchmark,
            "index_dir": self.index_dir,
            "ks": list(self.ks),
            "counts": dict(self.counts),
            "metrics": dict(self.metrics),
            "index": (
                {"spec": self.index_spec, "metrics": dict(self.index_metrics)}
                if self.index_spec
                else None
            ),
            "published": (
                {
                    "source": SOURCE,
                    "benchmark": self.benchmark,
                    "metrics": published,
                    "difference": self.differences(),
                }
                if published
                else None
            ),
            "timings": dict(self.timings),
            "allow_missing": self.allow_missing,
            "dropped_images": list(self.dropped_images),
        }

    # -- markdown ---------------------------------------------------------------------------

    def _rows(self) -> list[str]:
        """Metric names in reading order: each direction's recalls, MRR, ranks, index window."""
        names: list[str] = []
        for prefix, _ in DIRECTIONS:
            names += [f"{prefix}_recall@{k}" for k in self.ks]
            names += [f"{prefix}_mrr", f"{prefix}_mean_rank", f"{prefix}_median_rank"]
            names += sorted(k for k in self.index_metrics if k.startswith(f"{prefix}_mrr@"))
        return names

    def to_markdown(self) -> str:
        published, differences = self.published, self.differences()
        title = f"{self.dataset} {self.split}"
        if self.split_source != "all":
            title += f" ({self.split_source} split)"
        lines = [
            f"# Retrieval evaluation: {title}",
            "",
            f"- model: {self.model} ({self.pretrained})",
            f"- images: {self.counts['images']:,}, captions: {self.counts['captions']:,} "
            f"(text -> image queries: {self.counts['image_retrieval_queries']:,}; "
            f"image -> text queries: {self.counts['text_retrieval_queries']:,}, "
            f"{self.counts['text_retrieval_excluded']:,} images without captions left out)",
            f"- index directory: {self.index_dir}",
        ]
        if self.dropped_images:
            shown = ", ".join(d["path"] for d in self.dropped_images[:5])
            lines.append(
                f"- dropped (--allow-missing): {len(self.dropped_images):,} images and "
                f"{self.counts['dropped_captions']:,} captions, e.g. {shown}"
            )
        header = ["metric", "exact"]
        if self.index_spec:
            header.append(f"index {self.index_spec}")
        if published:
            header += ["published", "exact - published"]
        lines += ["", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" + "---:|" * (len(header) - 1))
        for name in self._rows():
            cells = [name, _fmt(name, self.metrics.get(name))]
            if self.index_spec:
                cells.append(_fmt(name, self.index_metrics.get(name)))
            if published:
                cells += [_fmt(name, published.get(name)), _fmt(name, differences.get(name), "+")]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", *self._notes()]
        return "\n".join(lines) + "\n"

    def _notes(self) -> list[str]:
        t = self.timings
        notes = [f"- encoding: {_rate(t, 'images')}; {_rate(t, 'texts')}"]
        if t.get("model_load_s") is not None:
            notes.append(f"- model load: {t['model_load_s']:.1f} s")
        notes.append(f"- exact metrics (full score matrix): {t['exact_search_s']:.2f} s")
        if self.index_spec:
            notes.append(
                f"- index {self.index_spec}: built in {t['index_build_s']:.2f} s, "
                f"{t['index_queries']:,} queries in {t['index_search_s']:.2f} s; its mrr@W "
                "counts hits within the top W only (MRR cut at W)"
            )
        if self.published:
            notes.append(
                f"- published: {SOURCE}, {BENCHMARK_TITLES[self.benchmark or '']}"
                + ("; not strictly comparable: images were dropped" if self.dropped_images else "")
            )
        notes.append(
            "- ranks are 1-based over the whole gallery; a tie with a non-relevant item counts "
            "against the query (pessimistic)"
        )
        return notes


def _fmt(name: str, value: float | None, sign: str = "") -> str:
    if value is None:
        return "-"
    if name.endswith("_rank"):
        return f"{value:{sign}.1f}"
    return f"{value:{sign}.4f}"


def _rate(timings: dict[str, Any], kind: str) -> str:
    encoded = timings.get(f"{kind}_encoded", 0)
    if not encoded:
        return f"{kind}: all cached, none encoded"
    return (
        f"{encoded:,} {kind} in {timings[f'{kind}_ingest_s']:.1f} s "
        f"({timings[f'{kind}_per_s']:.1f}/s)"
    )
