"""Every read of the store, in the standard library's `sqlite3`.

A query process reads a handful of rows; importing SQLAlchemy took 180 ms of a 0.55 s cold
query, so reads never need it: `open_reads` answers them without it when the file is at the
current schema version (else the full `Store` opens it, and upgrades it first). Writes and
migrations keep SQLAlchemy (`writes`, `migrations`). Each thread reads through a connection of
its own; a read of several statements is one snapshot (`BEGIN` ... `COMMIT`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from searchmm.errors import Category, Hint, StoreError
from searchmm.store.blobs import DEFAULT_DTYPE, DTYPE_KEY, from_blobs
from searchmm.store.connections import DB_FILENAME, ReadConnections, unusable
from searchmm.store.fspath import path_from_db, path_to_db
from searchmm.store.migrations import SCHEMA_VERSION, schema_version_of
from searchmm.store.records import Delta, Item, ItemCounts, StoredModel
from searchmm.store.snapshots import (
    EMBEDDED_IN_ID_ORDER,
    VectorSnapshot,
    chunks,
    embeddings_of,
    marks,
)
from searchmm.vocabulary import KINDS, ChangeOp, Kind, Status

if TYPE_CHECKING:
    from searchmm.search.filters import Filters


_ITEM_COLUMNS = (
    "items.id, items.kind, items.path, items.locator, items.text, items.content_digest, "
    "items.file_digest, items.file_size, items.file_mtime_ns, items.width, items.height, "
    "items.status, items.error, items.metadata, items.external"
)
_MODEL_COLUMNS = "id, name, pretrained, config_json, checkpoint_digest, seed, dim, software"
_EMBEDDED_OF_KIND = (
    "FROM embeddings JOIN items ON items.id = embeddings.item_id WHERE items.kind = ?"
)
ChunkedItems = Iterator[tuple[list[Item], np.ndarray]]


def open_reads(index_dir: Path) -> StoreReads:
    """The store at `index_dir` for reading: without SQLAlchemy when its schema is current,
    else the full `Store`, which upgrades an older file (or refuses a newer one) first."""
    if not (index_dir / DB_FILENAME).exists():
        raise StoreError(
            f"no index at {index_dir}", hint=Hint.INGEST_FIRST, category=Category.INVALID
        )
    reads = StoreReads(index_dir)
    if reads.schema_version() == SCHEMA_VERSION:
        return reads
    reads.close()
    from searchmm.store.store import Store

    return Store(index_dir, create=False)


class StoreReads(ReadConnections):
    """Reads of `<index dir>/searchmm.db` (which must exist), answered with frozen `records`
    values."""

    # -- meta and model --------------------------------------------------------------------

    def schema_version(self) -> int:
        """The file's schema version; 0 for a file that has no tables yet."""
        with self._reading() as db:
            return schema_version_of(db)

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._reading() as db:
            return _meta(db, key, default)

    def embedding_dtype(self) -> str:
        """How this store keeps new vectors (float32 in stores older than the choice)."""
        return self.get_meta(DTYPE_KEY, DEFAULT_DTYPE) or DEFAULT_DTYPE

    def get_model(self) -> StoredModel | None:
        with self._reading() as db:
            row = db.execute(f"SELECT {_MODEL_COLUMNS} FROM model LIMIT 1").fetchone()
        if row is None:
            return None
        software = json.loads(row[7]) if row[7] is not None else None
        return StoredModel(
            id=row[0],
            name=row[1],
            pretrained=row[2],
            config_json=row[3],
            checkpoint_digest=row[4],
            seed=row[5],
            dim=row[6],
            software=dict(software or {}),
        )

    # -- items -----------------------------------------------------------------------------

    def items_of_kind(self, kind: Kind) -> list[Item]:
        """Every item of a kind (for diffing a scan against the store)."""
        with self._reading() as db:
            rows = db.execute(f"SELECT {_ITEM_COLUMNS} FROM items WHERE kind = ?", (kind,))
            return [_item(row) for row in rows]

    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        found: dict[int, Item] = {}
        with self._reading() as db:
            for chunk in chunks(list(ids)):
                rows = db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM items WHERE id IN ({marks(chunk)})", chunk
                )
                found.update((row[0], _item(row)) for row in rows)
        return found

    def embedded_ids_by_digest(self, kind: Kind, digests: Iterable[str]) -> dict[str, int]:
        """content digest -> an item id that already has an embedding for that content."""
        found: dict[str, int] = {}
        with self._reading() as db:
            for chunk in chunks(list(set(digests))):
                rows = db.execute(
                    "SELECT items.content_digest, items.id "
                    f"{_EMBEDDED_OF_KIND} AND items.content_digest IN ({marks(chunk)})",
                    (kind, *chunk),
                )
                found.update((d, i) for d, i in rows if d is not None)
        return found

    def has_items(self, kind: Kind) -> bool:
        """Whether any item of a kind is searchable (cheap: stops at the first)."""
        with self._reading() as db:
            row = db.execute(
                "SELECT id FROM items WHERE kind = ? AND status = ? LIMIT 1", (kind, Status.OK)
            ).fetchone()
        return row is not None

    def counts(self) -> ItemCounts:
        """Items per kind and status."""
        result: ItemCounts = {kind: {Status.OK: 0, Status.FAILED: 0} for kind in KINDS}
        with self._reading() as db:
            rows = db.execute("SELECT kind, status, count(*) FROM items GROUP BY kind, status")
            for kind, status, n in rows:
                result.setdefault(Kind(kind), {})[Status(status)] = n
        return result

    def allowed_ids(self, kind: Kind, filters: Filters) -> np.ndarray:
        """Ids of the searchable items of a kind that pass every filter, ascending."""
        where = ["kind = ?", "status = ?"]
        values: list[Any] = [kind, Status.OK]
        if filters.path_glob:
            where.append("path GLOB ?")
            values.append(path_to_db(filters.path_glob))
        if filters.modified_after:
            where.append("file_mtime_ns > ?")
            values.append(_ns(filters.modified_after.timestamp()))
        if filters.modified_before:
            where.append("file_mtime_ns < ?")
            values.append(_ns(filters.modified_before.timestamp()))
        if filters.min_width:
            where.append("width >= ?")
            values.append(filters.min_width)
        if filters.min_height:
            where.append("height >= ?")
            values.append(filters.min_height)
        for key, value in filters.where:
            where.append("CAST(json_extract(metadata, ?) AS VARCHAR) = ?")
            values += ['$."' + key.replace('"', '""') + '"', value]
        sql = f"SELECT id FROM items WHERE {' AND '.join(where)} ORDER BY id"
        with self._reading() as db:
            return np.fromiter((row[0] for row in db.execute(sql, values)), dtype=np.int64)

    # -- embeddings ------------------------------------------------------------------------

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have an embedding, their vectors) for the given ids."""
        with self._reading() as db:
            found_ids, blobs = embeddings_of(db, list(ids))
        return _as_arrays(found_ids, blobs, dim)

    def snapshot(self, kind: Kind, dim: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(last change seq, ids, vectors) of every embedding of a kind, read as one snapshot."""
        with self._reading(snapshot=True) as db:
            seq = _last_seq(db)
            rows = db.execute(
                f"SELECT embeddings.item_id, embeddings.vector {EMBEDDED_IN_ID_ORDER} "
                "ORDER BY embeddings.item_id",
                (kind,),
            ).fetchall()
        return (seq, *_as_arrays([r[0] for r in rows], [r[1] for r in rows], dim))

    @contextlib.contextmanager
    def vector_snapshot(self, kind: Kind, dim: int) -> Iterator[VectorSnapshot]:
        """Every vector of a kind as one snapshot on a connection of its own (`snapshots`)."""
        with self._own_snapshot(kind) as (db, count):
            yield VectorSnapshot(db, kind, dim, _last_seq(db), count)

    def delta(self, kind: Kind, since_seq: int, dim: int) -> Delta:
        """What changed for a kind after `since_seq`, with the current vectors, as one snapshot."""
        with self._reading(snapshot=True) as db:
            seq = _last_seq(db)
            rows = db.execute(
                "SELECT item_id, op FROM changes WHERE kind = ? AND seq > ? AND seq <= ?",
                (kind, since_seq, seq),
            ).fetchall()
            changed = sorted({item_id for item_id, _ in rows})
            replaced = sorted({item_id for item_id, op in rows if op != ChangeOp.ADD})
            ids, blobs = embeddings_of(db, changed)
            count = db.execute(f"SELECT count(*) {_EMBEDDED_OF_KIND}", (kind,)).fetchone()[0]
            pruned = int(_meta(db, pruned_key(kind), "0") or 0)
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
        with self._reading() as db:
            return _last_seq(db)

    @contextlib.contextmanager
    def embedded_items(
        self, kind: Kind, dim: int, chunk: int = 10_000
    ) -> Iterator[tuple[int, ChunkedItems]]:
        """(how many, chunks of (items, their float32 vectors)) in id order: the whole kind in
        bounded memory, read as one snapshot (on a connection of its own, held until the end),
        so that the count and the rows agree even while an ingest writes."""
        with self._own_snapshot(kind) as (db, count):
            yield count, _chunked_items(db, kind, dim, chunk)

    @contextlib.contextmanager
    def _own_snapshot(self, kind: Kind) -> Iterator[tuple[sqlite3.Connection, int]]:
        """(a connection of its own in one read transaction, the kind's embedded count)."""
        connection = self._connect()
        try:
            with contextlib.closing(connection):
                connection.execute("BEGIN")
                count = connection.execute(
                    f"SELECT count(*) {_EMBEDDED_OF_KIND}", (kind,)
                ).fetchone()[0]
                yield connection, int(count)
                connection.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc


def pruned_key(kind: Kind) -> str:
    """The meta key saying up to which seq a kind's changes were forgotten."""
    return f"changes_pruned.{kind}"


def _chunked_items(db: sqlite3.Connection, kind: Kind, dim: int, chunk: int) -> ChunkedItems:
    last = 0
    while True:
        rows = db.execute(
            f"SELECT {_ITEM_COLUMNS}, embeddings.vector {EMBEDDED_IN_ID_ORDER} "
            "AND embeddings.item_id > ? ORDER BY embeddings.item_id LIMIT ?",
            (kind, last, chunk),
        ).fetchall()
        if not rows:
            return
        items = [_item(row) for row in rows]
        yield items, from_blobs([row[-1] for row in rows], dim)
        last = items[-1].id


def _item(row: Sequence[Any]) -> Item:
    return Item(
        id=row[0],
        kind=Kind(row[1]),
        path=path_from_db(row[2]),
        locator=row[3],
        text=row[4],
        content_digest=row[5],
        file_digest=row[6],
        file_size=row[7],
        file_mtime_ns=row[8],
        width=row[9],
        height=row[10],
        status=Status(row[11]),
        error=row[12],
        meta=json.loads(row[13]) if row[13] is not None else None,
        external=bool(row[14]),
    )


def _meta(db: sqlite3.Connection, key: str, default: str | None) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return str(row[0]) if row else default


def _last_seq(db: sqlite3.Connection) -> int:
    """The last change number ever given out (AUTOINCREMENT's counter survives pruning)."""
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _as_arrays(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(ids, dtype=np.int64), from_blobs(blobs, dim)
