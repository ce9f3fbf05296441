"""`searchmm export`: a store's vectors and metadata in clip-retrieval's layout (see `layout`).

Each kind is read from one snapshot of the store, chunk by chunk, into shards of at most
`shard_size` rows: a memory-mapped .npy filled in place and a parquet file written chunk by
chunk, so memory stays bounded whatever the store's size. Every file is written under a
temporary name and renamed once complete; model.json comes last, so a folder that has it is
whole. A failed export removes what it wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from searchmm import defaults
from searchmm.atomicfile import temp_name, write_bytes_atomic
from searchmm.errors import Hint, SearchmmError
from searchmm.exchange.layout import DTYPES, FORMAT, LAYOUT, MODEL_FILE, KindLayout
from searchmm.model.spec import spec_of
from searchmm.sources.files import display_path
from searchmm.store.reads import StoreReads
from searchmm.store.records import Item, StoredModel
from searchmm.vocabulary import Kind


@dataclass
class ExportSummary:
    out: str
    dtype: str
    images: int = 0
    texts: int = 0
    files: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SearchmmError(
            "exporting needs pyarrow (parquet metadata): pip install 'searchmm[exchange]'"
        ) from None
    return pyarrow


def export_embeddings(
    store: StoreReads,
    out: str | os.PathLike[str],
    *,
    shard_size: int = defaults.EXPORT_SHARD_SIZE,
    dtype: str = "float16",
) -> ExportSummary:
    """Write the store's image and text vectors with their metadata under `out` (a new or empty
    folder); nothing is left there if it fails."""
    if shard_size < 1 or dtype not in DTYPES:
        raise SearchmmError(f"need --shard-size >= 1 and --dtype one of {', '.join(DTYPES)}")
    root = Path(out).absolute()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise SearchmmError(f"{root} is not an empty folder: export into a new one")
    pa = _pyarrow()
    model = store.get_model()
    if model is None:
        raise SearchmmError(f"{store.path.parent} has no vectors yet", hint=Hint.INGEST_FIRST)
    started = time.perf_counter()
    summary = ExportSummary(str(root), dtype)
    try:
        for kind, layout in LAYOUT.items():
            writer = _Shards(pa, root, layout, kind, model.dim, shard_size, dtype, summary.files)
            with store.embedded_items(kind, model.dim) as (count, chunks):
                writer.expect(count)
                for items, vectors in chunks:
                    writer.add(items, vectors)
            writer.finish()
            if kind is Kind.IMAGE:
                summary.images = count
            else:
                summary.texts = count
        description = _model_json(model, summary, shard_size)
        write_bytes_atomic(root / MODEL_FILE, json.dumps(description, indent=2).encode() + b"\n")
        summary.files.append(MODEL_FILE)
    except BaseException:
        _remove(root, summary.files)
        raise
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary


class _Shards:
    """The shards of one kind: rows are appended in order; a shard is renamed into place when
    full."""

    def __init__(
        self,
        pa: Any,
        root: Path,
        layout: KindLayout,
        kind: Kind,
        dim: int,
        shard_size: int,
        dtype: str,
        files: list[str],
    ) -> None:
        self.pa, self.root, self.layout, self.kind = pa, root, layout, kind
        self.dim, self.shard_size, self.dtype, self.files = dim, shard_size, dtype, files
        self.left = 0
        self.shard = -1
        self.array: np.memmap[Any, Any] | None = None
        self.row = 0
        self.parquet: Any = None
        self.temps: tuple[Path, Path] = (root, root)
        self.schema = _schema(pa, kind)  # the same for every chunk of every shard

    def expect(self, count: int) -> None:
        self.left = count

    def add(self, items: list[Item], vectors: np.ndarray) -> None:
        start = 0
        while start < len(items):
            if self.array is None:
                self._open()
            assert self.array is not None
            take = min(len(items) - start, len(self.array) - self.row)
            self.array[self.row : self.row + take] = vectors[start : start + take]
            self.parquet.write_table(self._table(items[start : start + take]))
            self.row += take
            start += take
            if self.row == len(self.array):
                self._close()

    def finish(self) -> None:
        if self.array is not None or self.left:  # the count and the rows come from one snapshot
            raise SearchmmError(f"the store's {self.kind} rows did not match their count")

    def _open(self) -> None:
        self.shard += 1
        rows = min(self.shard_size, self.left)
        self.left -= rows
        npy, parquet = self._paths()
        npy.parent.mkdir(parents=True, exist_ok=True)
        parquet.parent.mkdir(parents=True, exist_ok=True)
        self.temps = (temp_name(npy), temp_name(parquet))
        self.files += [str(p.relative_to(self.root)) for p in self.temps]  # removed on failure
        self.array = np.lib.format.open_memmap(
            self.temps[0], mode="w+", dtype=self.dtype, shape=(rows, self.dim)
        )
        self.parquet = self.pa.parquet.ParquetWriter(str(self.temps[1]), self.schema)
        self.row = 0

    def _close(self) -> None:
        assert self.array is not None
        self.array.flush()
        self.array = None
        self.parquet.close()
        for temp, final in zip(self.temps, self._paths(), strict=True):
            with open(temp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(temp, final)
        self.files[-2:] = [str(p.relative_to(self.root)) for p in self._paths()]

    def _paths(self) -> tuple[Path, Path]:
        return (
            self.layout.embedding_file(self.root, self.shard),
            self.layout.metadata_file(self.root, self.shard),
        )

    def _table(self, items: list[Item]) -> Any:
        columns: dict[str, list[Any]] = {
            "id": [i.id for i in items],
            "content_digest": [i.content_digest for i in items],
            "metadata": [
                None if i.meta is None else json.dumps(i.meta, ensure_ascii=False) for i in items
            ],
            "file_size": [i.file_size for i in items],
            "mtime_ns": [i.file_mtime_ns for i in items],
            # parquet strings are UTF-8: a name that is not keeps its exact bytes here
            "path_bytes": [None if _utf8(i.path) else os.fsencode(i.path) for i in items],
        }
        if self.kind is Kind.IMAGE:
            columns.update(
                image_path=[display_path(i.path) for i in items],
                width=[i.width for i in items],
                height=[i.height for i in items],
            )
        else:
            columns.update(
                caption=[i.text for i in items],
                source=[display_path(i.path) for i in items],
                locator=[i.locator for i in items],
                file_digest=[i.file_digest for i in items],  # of the collection file
            )
        return self.pa.table(columns, schema=self.schema)


def _utf8(path: str) -> bool:
    return display_path(path) == path


def _schema(pa: Any, kind: Kind) -> Any:
    common = [
        ("file_size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("content_digest", pa.string()),
        ("metadata", pa.string()),
        ("path_bytes", pa.binary()),
    ]
    if kind is Kind.IMAGE:
        fields = [
            ("id", pa.int64()),
            ("image_path", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            *common,
        ]
    else:
        fields = [
            ("id", pa.int64()),
            ("caption", pa.string()),
            ("source", pa.string()),
            ("locator", pa.string()),
            ("file_digest", pa.string()),
            *common,
        ]
    return pa.schema(fields)


def _model_json(model: StoredModel, summary: ExportSummary, shard_size: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "model": {
            "name": model.name,
            "pretrained": model.pretrained,
            "config": json.loads(model.config_json) if model.config_json else None,
            "checkpoint_digest": model.checkpoint_digest,
            "seed": model.seed,
            "dim": model.dim,
            "software": model.software,
        },
        "identity": spec_of(model).identity(),
        "dtype": summary.dtype,
        "normalised": True,
        "shard_size": shard_size,
        "counts": {"images": summary.images, "texts": summary.texts},
    }


def _remove(root: Path, files: list[str]) -> None:
    for name in files:
        with contextlib.suppress(OSError):
            (root / name).unlink()
    for layout in LAYOUT.values():
        for folder in (layout.embeddings, layout.metadata):
            with contextlib.suppress(OSError):
                (root / folder).rmdir()
