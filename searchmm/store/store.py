"""The SQLite store, the source of truth: model record, items, embeddings and a change log.

FAISS indexes are caches derived from this file. Every change to an item's embedding appends a
row to `changes`, whose sequence number an index records when saved, so that an index that is
behind is caught up on open without re-reading the whole store.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from searchmm.errors import Category, Hint, StoreError
from searchmm.store.schema import (
    ADD,
    FAILED,
    KINDS,
    OK,
    REMOVE,
    TEXT,
    UPDATE,
    Base,
    Change,
    Embedding,
    Item,
    MetaEntry,
    ModelRecord,
)
from searchmm.store.schema import (
    IMAGE as IMAGE,  # re-exported: callers take the kinds and tables from here
)

SCHEMA_VERSION = 1
DB_FILENAME = "searchmm.db"


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions begin (see _on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, and vice versa
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, safe in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_begin(connection: Any) -> None:
    # pysqlite never emits BEGIN before a SELECT; without it, reads in one session are not one
    # snapshot (SQLAlchemy's documented recipe for SQLite transactions).
    connection.exec_driver_sql("BEGIN")


class Store:
    """Opens (or creates) `<index dir>/searchmm.db` and answers the queries the engine needs."""

    def __init__(self, index_dir: Path, *, create: bool) -> None:
        self.path = index_dir / DB_FILENAME
        if not self.path.exists() and not create:
            raise StoreError(
                f"no index at {index_dir}", hint=Hint.INGEST_FIRST, category=Category.INVALID
            )
        index_dir.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._check_schema()
        except (DatabaseError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            raise self.unusable(exc) from exc

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session (one per call: safe across threads) whose database errors become one
        `StoreError` naming the file and what to do, never a traceback or an empty result."""
        try:
            with self._sessions() as s:
                yield s
        except DatabaseError as exc:
            if isinstance(exc, IntegrityError):
                raise  # a broken invariant of ours, not a damaged file
            raise self.unusable(exc) from exc

    def unusable(self, exc: BaseException) -> StoreError:
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        if "locked" in detail or "busy" in detail:
            return StoreError(
                f"{self.path} is locked by another process ({detail}); try again",
                category=Category.BUSY,
            )
        if "malformed" in detail or "not a database" in detail:
            return StoreError(
                f"{self.path} is damaged ({detail}): restore it from a backup, or move it aside "
                "(with any -wal and -shm files) and ingest again to rebuild it"
            )
        return StoreError(f"cannot use {self.path} ({detail}): check the disk and permissions")

    def _check_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        with self.session() as s, s.begin():
            version = s.get(MetaEntry, "schema_version")
            if version is None:
                s.add(MetaEntry(key="schema_version", value=str(SCHEMA_VERSION)))
            elif int(version.value) != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version.value}; this searchmm reads "
                    f"version {SCHEMA_VERSION}: upgrade searchmm or rebuild the index"
                )

    def close(self) -> None:
        self.engine.dispose()

    # -- meta and model --------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.session() as s:
            entry = s.get(MetaEntry, key)
            return entry.value if entry else default

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as s, s.begin():
            s.merge(MetaEntry(key=key, value=value))

    def get_model(self) -> ModelRecord | None:
        with self.session() as s:
            return s.scalar(select(ModelRecord))

    def set_model(self, record: ModelRecord) -> None:
        with self.session() as s, s.begin():
            s.merge(record)

    # -- items -----------------------------------------------------------------------------

    def items_of_kind(self, kind: str) -> list[Item]:
        """Every item of a kind, detached (for diffing a scan against the store)."""
        with self.session() as s:
            return list(s.scalars(select(Item).where(Item.kind == kind)))

    def items_by_id(self, ids: Iterable[int]) -> dict[int, Item]:
        ids = list(ids)
        found: dict[int, Item] = {}
        with self.session() as s:
            for chunk in _chunks(ids, 900):
                found.update((i.id, i) for i in s.scalars(select(Item).where(Item.id.in_(chunk))))
        return found

    def embedded_ids_by_digest(self, kind: str, digests: Iterable[str]) -> dict[str, int]:
        """content digest -> an item id that already has an embedding for that content."""
        digests = list(set(digests))
        found: dict[str, int] = {}
        with self.session() as s:
            for chunk in _chunks(digests, 900):
                rows = s.execute(
                    select(Item.content_digest, Item.id)
                    .join(Embedding, Embedding.item_id == Item.id)
                    .where(Item.kind == kind, Item.content_digest.in_(chunk))
                )
                found.update((d, i) for d, i in rows)
        return found

    def has_items(self, kind: str) -> bool:
        """Whether any item of a kind is searchable (cheap: stops at the first)."""
        with self.session() as s:
            query = select(Item.id).where(Item.kind == kind, Item.status == OK).limit(1)
            return s.scalar(query) is not None

    def counts(self) -> dict[str, dict[str, int]]:
        """Items per kind and status."""
        result = {kind: {OK: 0, FAILED: 0} for kind in KINDS}
        with self.session() as s:
            rows = s.execute(
                select(Item.kind, Item.status, func.count()).group_by(Item.kind, Item.status)
            )
            for kind, status, n in rows:
                result.setdefault(kind, {})[status] = n
        return result

    # -- embeddings ------------------------------------------------------------------------

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have an embedding, their vectors) for the given ids."""
        found_ids: list[int] = []
        blobs: list[bytes] = []
        with self.session() as s:
            for chunk in _chunks(list(ids), 900):
                rows = s.execute(
                    select(Embedding.item_id, Embedding.vector).where(Embedding.item_id.in_(chunk))
                )
                for item_id, blob in rows:
                    found_ids.append(item_id)
                    blobs.append(blob)
        return _as_arrays(found_ids, blobs, dim)

    def snapshot(self, kind: str, dim: int) -> tuple[int, np.ndarray, np.ndarray]:
        """(last change seq, ids, vectors) of every embedding of a kind, read as one snapshot."""
        with self.session() as s, s.begin():
            seq = _last_seq(s)
            rows = s.execute(
                select(Embedding.item_id, Embedding.vector)
                .join(Item, Item.id == Embedding.item_id)
                .where(Item.kind == kind)
                .order_by(Embedding.item_id)
            )
            ids, blobs = [], []
            for item_id, blob in rows:
                ids.append(item_id)
                blobs.append(blob)
        return (seq, *_as_arrays(ids, blobs, dim))

    def delta(self, kind: str, since_seq: int, dim: int) -> Delta:
        """What changed for a kind after `since_seq`, with the current vectors, as one snapshot."""
        with self.session() as s, s.begin():
            seq = _last_seq(s)
            rows = s.execute(
                select(Change.item_id, Change.op).where(
                    Change.kind == kind, Change.seq > since_seq, Change.seq <= seq
                )
            ).all()
            changed = sorted({item_id for item_id, _ in rows})
            replaced = sorted({item_id for item_id, op in rows if op != ADD})
            ids, blobs = [], []
            for chunk in _chunks(changed, 900):
                for item_id, blob in s.execute(
                    select(Embedding.item_id, Embedding.vector).where(Embedding.item_id.in_(chunk))
                ):
                    ids.append(item_id)
                    blobs.append(blob)
            count = s.scalar(
                select(func.count()).select_from(Embedding).join(Item).where(Item.kind == kind)
            )
            pruned = _pruned_seq(s, kind)
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

    def prune_changes(self, kind: str, upto_seq: int) -> None:
        """Forget changes that a saved index already reflects, remembering how far (an index
        older than that must reload or rebuild: it cannot replay what was forgotten)."""
        with self.session() as s, s.begin():
            s.execute(delete(Change).where(Change.kind == kind, Change.seq <= upto_seq))
            if upto_seq > _pruned_seq(s, kind):
                s.merge(MetaEntry(key=f"changes_pruned.{kind}", value=str(upto_seq)))


@dataclass
class Delta:
    """The changes an index must apply to reach `seq`."""

    seq: int
    changed_ids: np.ndarray  # every item touched since the index was saved
    replaced_ids: np.ndarray  # those an older version of the index may hold (updated or removed)
    add_ids: np.ndarray  # those that have a vector now...
    vectors: np.ndarray  # ...and that vector
    count: int  # embeddings of the kind in the store at `seq`
    complete: bool = True  # False: changes after `since_seq` were pruned, this delta lacks them


def _last_seq(session: Session) -> int:
    """The last change number ever given out (AUTOINCREMENT's counter survives pruning)."""
    return session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")) or 0


def _pruned_seq(session: Session, kind: str) -> int:
    entry = session.get(MetaEntry, f"changes_pruned.{kind}")
    return int(entry.value) if entry else 0


def put_embedding(session: Session, item: Item, vector: np.ndarray, *, replaced: bool) -> None:
    """Store an item's vector and log the change, inside the caller's transaction."""
    blob = np.asarray(vector, dtype=np.float32).tobytes()
    if replaced:
        session.merge(Embedding(item_id=item.id, vector=blob))
    else:
        session.add(Embedding(item_id=item.id, vector=blob))
    session.add(Change(kind=item.kind, item_id=item.id, op=UPDATE if replaced else ADD))


def drop_embedding(session: Session, item: Item) -> None:
    """Remove an item's vector (if any) and log it, inside the caller's transaction."""
    result = session.execute(delete(Embedding).where(Embedding.item_id == item.id))
    if result.rowcount:
        session.add(Change(kind=item.kind, item_id=item.id, op=REMOVE))


def delete_items(session: Session, items: Sequence[Item]) -> None:
    """Delete items with their vectors, logging the removals, inside the caller's transaction."""
    for item in items:
        drop_embedding(session, item)
    for chunk in _chunks([i.id for i in items], 900):
        session.execute(delete(Item).where(Item.id.in_(chunk)))


def item_json(item: Item) -> dict[str, Any]:
    """The user-facing fields of an item, for --json output."""
    out: dict[str, Any] = {"id": item.id, "kind": item.kind}
    if item.kind == TEXT:
        out.update(text=item.text, source=item.path, locator=item.locator)
    else:
        out.update(path=item.path, width=item.width, height=item.height)
    out["metadata"] = item.meta or {}
    return out


def _as_arrays(ids: list[int], blobs: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), dim)
    return np.asarray(ids, dtype=np.int64), vectors


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
