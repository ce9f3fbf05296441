"""Rows of a Ray Dataset into a store (`Engine.ingest_dataset`), for images and texts that live
in parquet, webdataset or object stores and are read with Ray's own readers
(`ray.data.read_parquet`, `read_webdataset`, `read_binary_files(include_paths=True)`).

A row is known by its key column (a URL, an object key, a path). Its image (the bytes of an
image file) and its text become items at that path, external (no folder ingest removes them;
`searchmm remove` does), decoded as files are decoded, encoded on the cluster's actors
(`ray_encoding`) and committed a batch at a time as an import commits. A key already stored is
skipped before anything is decoded, so a re-run, or a run after a crash, encodes only what is
missing: a key is taken to name the same content for good (to encode a changed row again,
remove it first). A row whose image fails is reported, not stored; a re-run tries it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypedDict

import numpy as np

from searchmm import defaults
from searchmm.errors import SearchmmError
from searchmm.ingest.ray_encoding import (
    TASK_CPUS,
    RayOptions,
    Transit,
    connected,
    decoded_columns,
    on_actors,
)
from searchmm.ingest.summary import Failure, StageTimes, summary_dict
from searchmm.model.encoder import Encoder
from searchmm.sources.files import bytes_digest
from searchmm.sources.images import draft_for, load_image_bytes
from searchmm.sources.loader import Decoded, preprocessed
from searchmm.sources.texts import text_digest
from searchmm.store.records import ImportedItem
from searchmm.store.store import Store
from searchmm.vocabulary import Kind


@dataclass(frozen=True)
class Columns:
    """Which of the dataset's columns name a row, hold its image's bytes, hold its text."""

    key: str
    image: str | None = None
    text: str | None = None

    def check(self, dataset: Any) -> None:
        """Refuse, before anything is written, columns the dataset does not have."""
        if self.image is None and self.text is None:
            raise SearchmmError("name an image_column, a text_column, or both")
        have = list(dataset.columns())
        missing = [column for column in self.names() if column not in have]
        if missing:
            raise SearchmmError(
                f"the dataset has no column {', '.join(map(repr, missing))}; it has "
                f"{', '.join(map(repr, have))}"
            )

    def names(self) -> list[str]:
        return [c for c in (self.key, self.image, self.text) if c is not None]


@dataclass
class DatasetSummary:
    """New items (rows whose key was stored already are not read again), and failures."""

    images: int = 0
    texts: int = 0
    failed: list[Failure] = field(default_factory=list)
    elapsed_s: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)

    def to_dict(self) -> dict[str, Any]:
        return summary_dict(self, self.stages)


class DatasetKwargs(TypedDict, total=False):
    """`Engine.ingest_dataset`'s options: the cluster, and rows per encoder batch."""

    ray: RayOptions
    batch_size: int


def ingest_rows(
    store: Store,
    encoder: Encoder,
    dataset: Any,
    columns: Columns,
    *,
    ray: RayOptions | None = None,
    batch_size: int = defaults.BATCH_SIZE,
) -> DatasetSummary:
    options = ray or RayOptions()
    started = time.perf_counter()
    summary = DatasetSummary()
    transit = Transit.of(encoder)
    decode = {
        "columns": columns,
        "transit": transit,
        "draft": draft_for(encoder.image_size),
        "stored_images": _stored_paths(store, Kind.IMAGE) if columns.image else set(),
        "stored_texts": _stored_paths(store, Kind.TEXT) if columns.text else set(),
    }
    with connected(options.address) as ray:
        decoded = dataset.select_columns(columns.names()).map_batches(
            decode_rows, fn_kwargs=decode, batch_size=batch_size, num_cpus=TASK_CPUS
        )
        for batch in on_actors(
            ray, decoded, encoder.spec, transit, options, batch_size
        ).iter_batches(batch_size=None, batch_format="numpy"):
            commit_started = time.perf_counter()
            items = _items(batch, summary)
            store.import_items(items)
            commit_s = time.perf_counter() - commit_started
            decode_s, encode_s = float(batch["decode_s"].sum()), float(batch["encode_s"].sum())
            summary.stages.record(decode_s, encode_s, commit_s, len(items))
    summary.elapsed_s = time.perf_counter() - started
    return summary


def decode_rows(
    batch: dict[str, np.ndarray],
    columns: Columns,
    transit: Transit,
    draft: int | None,
    stored_images: set[str],
    stored_texts: set[str],
) -> dict[str, np.ndarray]:
    """A Ray task: the rows that have an item to store, their images decoded and preprocessed
    (a failure is a reason, with zero pixels), their texts as they are."""
    started = time.perf_counter()
    keys = [str(key) for key in batch[columns.key]]
    out: dict[str, np.ndarray] = {"key": np.asarray(keys, dtype=object)}
    keep = np.zeros(len(keys), dtype=bool)
    if columns.image is not None:
        need = np.asarray([key not in stored_images for key in keys], dtype=bool)
        out.update(_decoded_images(batch[columns.image], need, transit, draft))
        out["need_image"] = need
        keep |= need
    if columns.text is not None:
        texts = [t if isinstance(t, str) else "" for t in batch[columns.text]]
        need = np.asarray(
            [k not in stored_texts and bool(t.strip()) for k, t in zip(keys, texts, strict=True)],
            dtype=bool,
        )
        out["text"], out["need_text"] = np.asarray(texts, dtype=object), need
        keep |= need
    out["decode_s"] = np.full(len(keys), (time.perf_counter() - started) / max(1, len(keys)))
    return {name: column[keep] for name, column in out.items()}


def _decoded_images(
    values: np.ndarray,
    need: np.ndarray,
    transit: Transit,
    draft: int | None,
) -> dict[str, np.ndarray]:
    """The wanted rows' image bytes decoded as files are, with their content digests."""
    items: list[Decoded] = []
    digests = [""] * len(values)
    for row, data in enumerate(values):
        item: Decoded = {"index": row, "pixels": None, "size": None, "error": None}
        if need[row] and not isinstance(data, (bytes, bytearray)):
            item["error"] = (
                f"the image column holds {type(data).__name__}, not an image file's bytes"
            )
        elif need[row]:
            data = bytes(data)
            item = preprocessed(
                row, partial(load_image_bytes, data, draft_size=draft), transit.preprocess
            )
            digests[row] = bytes_digest(data) if item["error"] is None else ""
        items.append(item)
    return {**decoded_columns(items, transit), "digest": np.asarray(digests, dtype=object)}


def _items(batch: dict[str, np.ndarray], summary: DatasetSummary) -> list[ImportedItem]:
    """The batch's new items; its images' failures go to the summary."""
    items = []
    for row, key in enumerate(batch["key"]):
        if "need_image" in batch and batch["need_image"][row]:
            if batch["error"][row]:
                summary.failed.append(Failure(str(key), str(batch["error"][row])))
            else:
                width, height = (int(v) for v in batch["size"][row])
                digest = str(batch["digest"][row])
                items.append(
                    _item(Kind.IMAGE, str(key), None, digest, batch["vector"][row], width, height)
                )
                summary.images += 1
        if "need_text" in batch and batch["need_text"][row]:
            text = str(batch["text"][row])
            items.append(
                _item(Kind.TEXT, str(key), text, text_digest(text), batch["text_vector"][row])
            )
            summary.texts += 1
    return items


def _item(
    kind: Kind,
    key: str,
    text: str | None,
    digest: str,
    vector: np.ndarray,
    width: int | None = None,
    height: int | None = None,
) -> ImportedItem:
    return ImportedItem(
        kind=kind,
        path=key,
        locator="",
        text=text,
        content_digest=digest,
        file_digest=digest if kind is Kind.IMAGE else None,
        file_size=0,
        file_mtime_ns=0,
        width=width,
        height=height,
        meta=None,
        external=True,
        vector=np.ascontiguousarray(vector, dtype=np.float32),
    )


def _stored_paths(store: Store, kind: Kind) -> set[str]:
    return {item.path for item in store.items_of_kind(kind)}
