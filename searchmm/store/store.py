"""The SQLite store, the source of truth: model record, items, embeddings and a change log.

FAISS indexes are caches derived from this file. Every change to an item's embedding appends a
row to `changes`, whose sequence number an index records when saved, so that an index that is
behind is caught up on open without re-reading the whole store. Reads live here, writes in
`writes`; both hand out and take the frozen values of `records`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import String, cast, func, select, text
from sqlalchemy.orm import Session

from searchmm.store.database import DB_FILENAME as DB_FILENAME
from searchmm.store.database import chunks
from searchmm.store.migrations import SCHEMA_VERSION as SCHEMA_VERSION
from searchmm.store.migrations import prepare
from searchmm.store.records import Delta, Item, ItemCounts, StoredModel
from searchmm.store.schema import ChangeRow, EmbeddingRow, ItemRow, MetaRow, ModelRow
from searchmm.store.writes import StoreWrites, pruned_seq
from searchmm.vocabulary import KINDS, ChangeOp, Kind, Status

if TYPE_CHECKING:
    from searchmm.search.filters import Filters


class Store(StoreWrites):
    """Opens (or creates, or upgrades) `<index dir>/searchmm.db`; answers the engine's queries."""

    def __init__(self, index_dir: Path, *, create: bool) -> None:
        super().__init__(index_dir, create=create)
        try:
            prepare(self)  # database errors come out of it as a `StoreError` naming the file
        except BaseException:
            self.close()
            raise

    # -- meta and model --------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.session() as s:
            entry = s.get(MetaRow, key)
            return entry.value if entry else default

    def get_model(self) -> StoredModel | None:
        with self.session() as s:
            row = s.scalar(select(ModelRow))
            return row.record() if row else None

    # -- items -----------------------------------------------------------------------------

    def items_of_kind(self, kind: Kind) -> list[Item]:
        """Every item of a kind (for diffing a scan against the store)."""
        with self.session() as s:
            return [row.record() for row in s.scalars(select(ItemRow).where(ItemRow.kind == kind))]

    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        found: dict[int, Item] = {}
        with self.session() as s:
            for chunk in chunks(list(ids)):
                rows = s.scalars(select(ItemRow).where(ItemRow.id.in_(chunk)))
                found.update((row.id, row.record()) for row in rows)
        return found

    def embedded_ids_by_digest(self, kind: Kind, digests: Iterable[str]) -> dict[str, int]:
        """content digest -> an item id that already has an embedding for that content."""
        found: dict[str, int] = {}
        with self.session() as s:
            for chunk in chunks(list(set(digests))):
                rows = s.execute(
                    select(ItemRow.content_digest, ItemRow.id)
                    .join(EmbeddingRow, EmbeddingRow.item_id == ItemRow.id)
                    .where(ItemRow.kind == kind, ItemRow.content_digest.in_(chunk))
                )
                found.update((d, i) for d, i in rows if d is not None)
        return found

    def has_items(self, kind: Kind) -> bool:
        """Whether any item of a kind is searchable (cheap: stops at the first)."""
        with self.session() as s:
            query = select(ItemRow.id).where(ItemRow.kind == kind, ItemRow.status == Status.OK)
            return s.scalar(query.limit(1)) is not None

    def counts(self) -> ItemCounts:
        """Items per kind and status."""
        result: ItemCounts = {kind: {Status.OK: 0, Status.FAILED: 0} for kind in KINDS}
        with self.session() as s:
            rows = s.execute(
                select(ItemRow.kind, ItemRow.status, func.count()).group_by(
                    ItemRow.kind, ItemRow.status
                )
            )
            for kind, status, n in rows:
                result.setdefault(Kind(kind), {})[Status(status)] = n
        return result

    def allowed_ids(self, kind: Kind, filters: Filters) -> np.ndarray:
        """Ids of the searchable items of a kind that pass every filter, ascending."""
        query = select(ItemRow.id).where(ItemRow.kind == kind, ItemRow.status == Status.OK)
        if filters.path_glob:
            query = query.where(ItemRow.path.op("GLOB")(filters.path_glob))
        if filters.modified_after:
            query = query.where(ItemRow.file_mtime_ns > _ns(filters.modified_after.timestamp()))
        if filters.modified_before:
            query = query.where(ItemRow.file_mtime_ns < _ns(filters.modified_before.timestamp()))
        if filters.min_width:
            query = query.where(ItemRow.width >= filters.min_width)
        if filters.min_height:
            query = query.where(ItemRow.height >= filters.min_height)
        for key, value in filters.where:
            path = '$."' + key.replace('"', '""') + '"'
            query = query.where(cast(func.json_extract(ItemRow.meta, path), String) == value)
        with self.session() as s:
            return np.fromiter(s.scalars(query.order_by(ItemRow.id)), dtype=np.int64)

    # -- embeddings ------------------------------------------------------------------------

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have an embedding, their vectors) for the given ids."""
        found_ids: list[int] = []
        blobs: list[bytes] = []
        with self.session() as s:
            for chunk in chunks(list(ids)):
                rows = s.execute(
                    select(EmbeddingRow.item_id, EmbeddingRow.vector).where(
                        EmbeddingRow.item_id.in_(chunk)
                    )
                )
                for item_id, blob in rows:
                    found_ids.append(item_id)
                    blobs.append(blob)
        return _as_arrays(found_ids, blobs, dim)

    def snapshot(self, kind: Kind, dim: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(last change seq, ids, vectors) of every embedding of a kind, read as one snapshot."""
        with self.session() as s, s.begin():
            seq = _last_seq(s)
            rows = s.execute(
                select(EmbeddingRow.item_id, EmbeddingRow.vector)
                .join(ItemRow, ItemRow.id == EmbeddingRow.item_id)
                .where(ItemRow.kind == kind)
                .order_by(EmbeddingRow.item_id)
            )
            ids, blobs = [], []
            for item_id, blob in rows:
                ids.append(item_id)
                blobs.append(blob)
        return (seq, *_as_arrays(ids, blobs, dim))

    def delta(self, kind: Kind, since_seq: int, dim: int) -> Delta:
        """What changed for a kind after `since_seq`, with the current vectors, as one snapshot."""
        with self.session() as s, s.begin():
            seq = _last_seq(s)
            rows = s.execute(
                select(ChangeRow.item_id, ChangeRow.op).where(
                    ChangeRow.kind == kind, ChangeRow.seq > since_seq, ChangeRow.seq <= seq
                )
            ).all()
            changed = sorted({item_id for item_id, _ in rows})
            replaced = sorted({item_id for item_id, op in rows if op != ChangeOp.ADD})
            ids, blobs = [], []
            for chunk in chunks(changed):
                for item_id, blob in s.execute(
                    select(EmbeddingRow.item_id, EmbeddingRow.vector).where(
                        EmbeddingRow.item_id.in_(chunk)
                    )
                ):
                    ids.append(item_id)
                    blobs.append(blob)
            count = s.scalar(
                select(func.count())
                .select_from(EmbeddingRow)
                .join(ItemRow)
                .where(ItemRow.kind == kind)
            )
            pruned = pruned_seq(s, kind)
        add_ids, vectors = _as_arrays(ids, blobs, dim)
        return Delta(
            seq,
            np.asarray(changed, np.int64),
            np.asarray(replaced, np.int64),
            add_ids,
            vectors,
            count or 0,
            complete=since_seq >= pruned,
        )

    def change_seq(self) -> int:
        """The last change number given out: equal numbers mean nothing changed in between."""
        with self.session() as s:
            return _last_seq(s)


def _last_seq(session: Session) -> int:
    """The last change number ever given out (AUTOINCREMENT's counter survives pruning)."""
    seq = session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'"))
    return int(seq or 0)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _as_arrays(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    return np.asarray(ids, dtype=np.int64), vectors
