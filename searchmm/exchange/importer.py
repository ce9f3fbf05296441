"""`searchmm import`: vectors another tool made (clip-retrieval, or a `searchmm export`) into a
store, shard by shard in bounded memory, committed in batches.

The model that made the vectors is recorded like an ingest's (later queries encode with it);
a store of another model, or vectors of another dimension, are refused before anything is
written. Images whose files are not on this machine are kept as external items. Rows are
matched to stored items by (kind, path, locator), so importing the same folder again changes
nothing and an interrupted import resumes where its last batch was committed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchmm import defaults
from searchmm.errors import Hint, ModelMismatchError, SearchmmError
from searchmm.exchange.shards import Shard, Source, read_source
from searchmm.model.spec import ModelSpec, spec_of, stored_model
from searchmm.sources.texts import text_digest
from searchmm.store.blobs import DTYPE_KEY
from searchmm.store.records import ImportCounts, ImportedItem, StoredModel
from searchmm.store.store import Store
from searchmm.vocabulary import Kind

URL_SCHEMES = ("http://", "https://", "s3://", "gs://")
NORM_TOLERANCE = 1e-5  # a float32 unit vector's norm is within 1e-7 of 1
# columns of `searchmm export` that become item fields, not metadata
_FIELDS = {
    "id", "image_path", "width", "height", "file_size", "mtime_ns", "content_digest", "metadata",
    "caption", "source", "locator", "path_bytes",
}  # fmt: skip


@dataclass
class ImportSummary:
    source: str
    images: int = 0  # rows read, per kind
    texts: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    external: int = 0  # of the added images: files not on this machine
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def source_spec(
    source: Source, requested: ModelSpec | None, stored: ModelSpec | None = None
) -> ModelSpec:
    """The model that made the vectors: the one named, else the one the folder's model.json
    names (the two must agree), else the store's."""
    described = _described_spec(source.model) if source.model else None
    if requested and described and requested.identity() != described.identity():
        raise ModelMismatchError(
            f"{source.root} holds vectors of {described.describe()} (its model.json), not "
            f"of {requested.describe()}",
            hint=Hint.OTHER_INDEX_DIR,
        )
    spec = requested or described or stored
    if spec is None:
        raise SearchmmError(
            f"{source.root} does not say which model made its vectors: name it with --model "
            "(and --pretrained or --model-config) as for an ingest"
        )
    return spec


def _described_spec(model: dict[str, Any]) -> ModelSpec:
    """The spec a `searchmm export`'s model.json describes."""
    config = model.get("config")
    return ModelSpec(
        name=str(model["name"]),
        pretrained=str(model.get("pretrained") or "none"),
        config_json=json.dumps(config) if config else None,
        checkpoint_digest=model.get("checkpoint_digest"),
        seed=int(model.get("seed") or 0),
    )


def model_record(source: Source, spec: ModelSpec) -> StoredModel:
    """The store's model record for vectors of `spec`, whose dimension must be the folder's."""
    expected = embed_dim(spec)
    if expected is not None and expected != source.dim:
        raise ModelMismatchError(
            f"{source.root} holds {source.dim}-d vectors, but {spec.describe()} makes "
            f"{expected}-d ones: name the model that made them"
        )
    software = {"imported_from": str(source.root)}
    if source.model:
        software.update({str(k): str(v) for k, v in dict(source.model.get("software", {})).items()})
    return stored_model(spec, source.dim, software)


def embed_dim(spec: ModelSpec) -> int | None:
    """The model's vector size from its configuration, read without torch (None if unknown)."""
    if spec.config_json:
        return int(json.loads(spec.config_json)["embed_dim"])
    import importlib.util

    found = importlib.util.find_spec("open_clip")
    for folder in (found.submodule_search_locations or []) if found else []:
        config = Path(folder) / "model_configs" / f"{spec.name}.json"
        if config.is_file():
            return int(json.loads(config.read_text(encoding="utf-8"))["embed_dim"])
    return None


def prepare_import(
    source: str | os.PathLike[str], requested: ModelSpec | None, stored: StoredModel | None
) -> tuple[Source, StoredModel]:
    """The folder, every shard checked, and the model record its vectors need, before any
    store is touched (`SearchmmError` says what is wrong)."""
    folder = read_source(Path(source))
    spec = source_spec(folder, requested, spec_of(stored) if stored else None)
    return folder, model_record(folder, spec)


def import_source(
    store: Store,
    source: Source,
    record: StoredModel,
    *,
    batch_rows: int = defaults.IMPORT_BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> ImportSummary:
    """Every row of `source` into `store`, a batch per commit; `progress` is told how many
    rows are committed after each batch. A store of another model is refused first."""
    if batch_rows < 1:
        raise SearchmmError("need batch_rows >= 1")
    check_store_model(store, record)
    if store.get_model() is None:  # a new store keeps the shards' type unless told otherwise
        chosen = store.get_meta(DTYPE_KEY) is not None
        store.set_model(record, embedding_dtype=None if chosen else source.dtype)
    started = time.perf_counter()
    summary = ImportSummary(str(source.root))
    done = 0
    for shard in source.shards:
        for batch in _batches(shard, source.split, batch_rows):
            counts = store.import_items(batch)
            _count(summary, counts)
            done += len(batch)
            if progress is not None:
                progress(done)
        if shard.kind is Kind.IMAGE:
            summary.images += shard.rows
        else:
            summary.texts += shard.rows
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary


def check_store_model(store: Store, record: StoredModel) -> None:
    """Refuse a store of another model (or dimension) before anything is written."""
    stored = store.get_model()
    if stored is None:
        return
    if spec_of(stored).identity() != spec_of(record).identity() or stored.dim != record.dim:
        raise ModelMismatchError(
            f"{store.path.parent} holds vectors of {spec_of(stored).describe()}; refusing to "
            f"import vectors of {spec_of(record).describe()}",
            hint=Hint.OTHER_INDEX_DIR,
        )


def _count(summary: ImportSummary, counts: ImportCounts) -> None:
    summary.added += counts.added
    summary.updated += counts.updated
    summary.unchanged += counts.unchanged
    summary.external += counts.external


def _batches(shard: Shard, split: bool, batch_rows: int) -> Iterator[list[ImportedItem]]:
    import pyarrow.parquet as pq

    start = 0
    matrix = shard.vector_matrix()
    described = pq.ParquetFile(shard.metadata)
    for table in described.iter_batches(batch_size=batch_rows):
        rows = table.to_pylist()
        vectors = _normalised(np.array(matrix[start : start + len(rows)], dtype=np.float32))
        yield [_item(shard, split, row, vector) for row, vector in zip(rows, vectors, strict=True)]
        start += len(rows)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    """Unit rows, as every stored vector is: rows that are off (float16 files are, a little)
    are divided by their norm; unit float32 rows are kept bit for bit."""
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1) > NORM_TOLERANCE
    vectors[off] /= norms[off, None]
    return vectors


def _item(shard: Shard, split: bool, values: dict[str, Any], vector: Any) -> ImportedItem:
    meta = _meta(values, split)
    if shard.kind is Kind.IMAGE:
        path = _path_of(values, "image_path")
        external = path.startswith(URL_SCHEMES) or not os.path.isfile(path)
        digest = values.get("content_digest") if split else None
        return ImportedItem(
            kind=Kind.IMAGE,
            path=path,
            locator="",
            text=None,
            content_digest=digest,
            file_digest=digest,
            **_file_stat(values, None if external else path),
            width=_int_or_none(values.get("width")),
            height=_int_or_none(values.get("height")),
            meta=meta,
            external=external,
            vector=vector,
            wanted_id=_int_or_none(values.get("id")) if split else None,
        )
    caption = str(values["caption"])
    if split and values.get("source"):  # a record of a text collection, maybe on this machine
        path, locator = _path_of(values, "source"), str(values.get("locator") or "")
        external = not os.path.isfile(path)
    else:  # clip-retrieval: a caption of the pair's image, known by its text (no ingest reads it)
        path = _local_path(str(values.get("image_path") or shard.metadata))
        locator, external = f"caption:{text_digest(caption)[:16]}", True
    return ImportedItem(
        kind=Kind.TEXT,
        path=path,
        locator=locator,
        text=caption,
        content_digest=text_digest(caption),
        file_digest=values.get("file_digest") if split else None,
        **_file_stat(values, None if external else path),
        width=None,
        height=None,
        meta=meta,
        external=external,
        vector=vector,
        wanted_id=_int_or_none(values.get("id")) if split else None,
    )


def _file_stat(values: dict[str, Any], local: str | None) -> dict[str, int]:
    """The file's size and mtime as the export recorded them (so that an ingest sees whether
    it changed since), else as it is now on this machine, else 0."""
    size, mtime = values.get("file_size"), values.get("mtime_ns")
    if (size is None or mtime is None) and local is not None:
        stat = os.stat(local)
        size, mtime = stat.st_size, stat.st_mtime_ns
    return {"file_size": int(size or 0), "file_mtime_ns": int(mtime or 0)}


def _meta(values: dict[str, Any], split: bool) -> dict[str, Any] | None:
    """searchmm's own metadata column, or clip-retrieval's other columns (url, similarity...)."""
    if split:
        stored = values.get("metadata")
        return json.loads(stored) if stored else None
    extra = {k: v for k, v in values.items() if k not in _FIELDS and v is not None}
    return {
        k: (v if isinstance(v, str | int | float | bool) else str(v)) for k, v in extra.items()
    } or None


def _path_of(values: dict[str, Any], column: str) -> str:
    """The row's path: its exact bytes where `searchmm export` kept them (a name that is not
    UTF-8), else the column's text."""
    exact = values.get("path_bytes")
    return os.fsdecode(exact) if exact else _local_path(str(values[column]))


def _local_path(path: str) -> str:
    return path if path.startswith(URL_SCHEMES) else os.path.abspath(os.path.expanduser(path))


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
