"""Finding and checking the shards of an embeddings folder before anything is imported.

Two layouts are read: clip-retrieval's, where `metadata/metadata_N.parquet` describes the pairs
whose vectors are row for row in `img_emb/img_emb_N.npy` and `text_emb/text_emb_N.npy`; and the
split one `searchmm export` writes (`img_metadata/`, `text_metadata/`, and `model.json`). Every
shard is checked first (shapes, dtypes, columns, row counts, finite non-zero vectors), so that a
bad folder is refused with the reason before the store is touched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.exchange.layout import LAYOUT, MODEL_FILE
from searchmm.vocabulary import Kind

SHARED_METADATA = "metadata"  # clip-retrieval: one metadata folder for both kinds
REQUIRED = {Kind.IMAGE: "image_path", Kind.TEXT: "caption"}
CHECK_ROWS = 65_536  # vectors checked at a time, in bounded memory


@dataclass(frozen=True)
class Shard:
    """One .npy file of vectors and the .parquet file that describes its rows."""

    kind: Kind
    number: int
    vectors: Path
    metadata: Path
    rows: int
    dim: int
    dtype: str  # float16 or float32

    def vector_matrix(self) -> np.ndarray:
        """The shard's vectors, memory-mapped (read as they are sliced)."""
        matrix: np.ndarray = np.load(self.vectors, mmap_mode="r")
        return matrix


@dataclass(frozen=True)
class Source:
    """An embeddings folder, checked: its shards per kind and what its model.json says."""

    root: Path
    shards: tuple[Shard, ...]
    model: dict[str, Any] | None  # model.json's "model", when the folder has one
    split: bool  # searchmm's layout (a metadata folder per kind), else clip-retrieval's

    @property
    def dim(self) -> int:
        return self.shards[0].dim

    @property
    def dtype(self) -> str:
        """How a new store keeps these vectors unless told: float16 if every shard is."""
        return "float16" if all(s.dtype == "float16" for s in self.shards) else "float32"

    def rows(self, kind: Kind) -> int:
        return sum(s.rows for s in self.shards if s.kind is kind)


def read_source(root: Path) -> Source:
    """The folder's shards, every one checked; `SearchmmError` naming the first bad one."""
    root = root.absolute()
    if not root.is_dir():
        raise SearchmmError(f"{root} is not a folder of embeddings")
    split = any((root / layout.metadata).is_dir() for layout in LAYOUT.values())
    shards = [shard for kind in LAYOUT for shard in _shards(root, kind, split)]
    if not shards:
        raise SearchmmError(
            f"{root} holds no embeddings: expected img_emb/*.npy or text_emb/*.npy with their "
            "metadata (clip-retrieval's layout, or what `searchmm export` writes)"
        )
    dims = {shard.dim for shard in shards}
    if len(dims) > 1:
        raise SearchmmError(f"{root} mixes vectors of dimensions {sorted(dims)}")
    model = _model_json(root)
    return Source(root, tuple(shards), model, split)


def _model_json(root: Path) -> dict[str, Any] | None:
    path = root / MODEL_FILE
    if not path.exists():
        return None
    try:
        model = json.loads(path.read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SearchmmError(f"{path} is not a model description ({exc})") from exc
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise SearchmmError(f"{path} does not name a model")
    return model


def _shards(root: Path, kind: Kind, split: bool) -> Iterator[Shard]:
    layout = LAYOUT[kind]
    folder = root / layout.embeddings
    numbers = sorted(_numbers(folder, layout.prefix))
    metadata = root / (layout.metadata if split else SHARED_METADATA)
    for number in numbers:
        vectors = layout.embedding_file(root, number)
        described = metadata / f"metadata_{number}.parquet"
        rows, dim, dtype = _check_vectors(vectors)
        _check_metadata(described, kind, rows)
        yield Shard(kind, number, vectors, described, rows, dim, dtype)


def _numbers(folder: Path, prefix: str) -> Iterator[int]:
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.npy")
    if folder.is_dir():
        for path in folder.iterdir():
            if match := pattern.fullmatch(path.name):
                yield int(match.group(1))


def _check_vectors(path: Path) -> tuple[int, int, str]:
    """(rows, dim, dtype) of a float16/float32 matrix whose every row is finite and not zero."""
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise SearchmmError(f"{path} is not a readable .npy file ({exc})") from exc
    if matrix.ndim != 2 or matrix.dtype not in (np.float16, np.float32) or not matrix.shape[1]:
        raise SearchmmError(
            f"{path} holds {matrix.dtype} of shape {matrix.shape}: expected float16 or float32 "
            "rows, one vector each"
        )
    for start in range(0, len(matrix), CHECK_ROWS):
        chunk = np.asarray(matrix[start : start + CHECK_ROWS], dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(chunk).all(axis=1) | ~chunk.any(axis=1))
        if len(bad):
            row = start + int(bad[0])
            raise SearchmmError(f"{path} row {row} is not a usable vector (NaN, inf or zero)")
    return int(matrix.shape[0]), int(matrix.shape[1]), str(matrix.dtype)


def _check_metadata(path: Path, kind: Kind, rows: int) -> None:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise SearchmmError(f"{path} is missing: it describes the rows of its .npy shard")
    try:
        described = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors share no base class of their own
        raise SearchmmError(f"{path} is not a readable parquet file ({exc})") from exc
    columns = set(described.schema_arrow.names)
    if REQUIRED[kind] not in columns:
        raise SearchmmError(f"{path} has no {REQUIRED[kind]!r} column (it has {sorted(columns)})")
    if described.metadata.num_rows != rows:
        raise SearchmmError(
            f"{path} describes {described.metadata.num_rows} rows, but its shard holds {rows} "
            "vectors"
        )
