"""All of a kind's vectors, read as one snapshot in bounded memory: for building an index of
millions of vectors (a training sample, then batches in id order) without holding them all."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchmm.store.blobs import from_blobs
from searchmm.vocabulary import Kind

CHUNK = 900  # ids per IN (...): below SQLite's bound-parameter limit
BATCH_ROWS = 50_000  # 100 MB of float32 512-d vectors per batch
# CROSS JOIN keeps embeddings the outer table, read in id order: with a plain JOIN SQLite walks
# the items' kind index and sorts every row for each batch (at 1M vectors, 1.38 s against
# 0.15 s per 125k-row batch; bench/results/scale.md's exact batch took 21 s that way).
EMBEDDED_IN_ID_ORDER = (
    "FROM embeddings CROSS JOIN items ON items.id = embeddings.item_id WHERE items.kind = ?"
)


@dataclass
class VectorSnapshot:
    """What one read transaction sees: `seq` (the last change it includes) and `count`
    vectors, which `sample` and `batches` read; valid until the snapshot is closed."""

    db: sqlite3.Connection
    kind: Kind
    dim: int
    seq: int
    count: int

    def sample(self, rows: int, seed: int) -> np.ndarray:
        """`rows` vectors drawn at random with `seed` (all of them when there are no more)."""
        if rows >= self.count:
            return np.vstack([v for _, v in self.batches()] or [np.empty((0, self.dim))])
        ids = np.fromiter(
            (
                r[0]
                for r in self.db.execute(
                    f"SELECT embeddings.item_id {EMBEDDED_IN_ID_ORDER}", (self.kind,)
                )
            ),
            dtype=np.int64,
        )
        chosen = np.random.default_rng(seed).choice(ids, size=rows, replace=False)
        return from_blobs(embeddings_of(self.db, np.sort(chosen).tolist())[1], self.dim)

    def batches(self, rows: int = BATCH_ROWS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, float32 vectors) in id order, `rows` at a time."""
        last = -1
        while True:
            found = self.db.execute(
                f"SELECT embeddings.item_id, embeddings.vector {EMBEDDED_IN_ID_ORDER} "
                "AND embeddings.item_id > ? ORDER BY embeddings.item_id LIMIT ?",
                (self.kind, last, rows),
            ).fetchall()
            if not found:
                return
            yield (
                np.fromiter((r[0] for r in found), np.int64, len(found)),
                from_blobs([r[1] for r in found], self.dim),
            )
            last = found[-1][0]


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def embeddings_of(db: sqlite3.Connection, ids: list[int]) -> tuple[list[int], list[bytes]]:
    """(ids found, their blobs) of the given item ids, CHUNK at a time."""
    found_ids: list[int] = []
    blobs: list[bytes] = []
    for chunk in chunks(ids):
        rows = db.execute(
            f"SELECT item_id, vector FROM embeddings WHERE item_id IN ({marks(chunk)})", chunk
        )
        for item_id, blob in rows:
            found_ids.append(item_id)
            blobs.append(blob)
    return found_ids, blobs
