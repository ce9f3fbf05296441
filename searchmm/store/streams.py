"""The whole store in bounded memory: the embedded items of a kind in id order, chunk by chunk,
as one consistent snapshot, for exports of millions of rows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from searchmm.store.records import Item
from searchmm.store.schema import EmbeddingRow, ItemRow
from searchmm.store.store import Store
from searchmm.vocabulary import Kind

Chunks = Iterator[tuple[list[Item], np.ndarray]]


@contextlib.contextmanager
def embedded_items(
    store: Store, kind: Kind, dim: int, chunk: int = 10_000
) -> Iterator[tuple[int, Chunks]]:
    """(how many, chunks of (items, their float32 vectors)), all read in one transaction, so
    the count and the rows agree even while an ingest writes."""
    with store.session() as s, s.begin():
        count = s.scalar(
            select(func.count())
            .select_from(EmbeddingRow)
            .join(ItemRow, ItemRow.id == EmbeddingRow.item_id)
            .where(ItemRow.kind == kind)
        )
        yield int(count or 0), _chunks(s, kind, dim, chunk)


def _chunks(s: Session, kind: Kind, dim: int, chunk: int) -> Chunks:
    last = 0
    while True:
        rows = s.execute(
            select(ItemRow, EmbeddingRow.vector)
            .join(EmbeddingRow, EmbeddingRow.item_id == ItemRow.id)
            .where(ItemRow.kind == kind, ItemRow.id > last)
            .order_by(ItemRow.id)
            .limit(chunk)
        ).all()
        if not rows:
            return
        items = [row.record() for row, _ in rows]
        blob = b"".join(vector for _, vector in rows)
        yield items, np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim)
        last = items[-1].id
