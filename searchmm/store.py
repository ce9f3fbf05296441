"""The SQLite store, the source of truth: model record, items, embeddings and a change log.

FAISS indexes are caches derived from this file. Every change to an item's embedding appends a
row to `changes`, whose sequence number an index records when saved, so that an index that is
behind is caught up on open without re-reading the whole store.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from .errors import StoreError

SCHEMA_VERSION = 1
DB_FILENAME = "searchmm.db"
IMAGE = "image"
TEXT = "text"
KINDS = (IMAGE, TEXT)
OK = "ok"
FAILED = "failed"
ADD, UPDATE, REMOVE = "add", "update", "remove"
_FS_BYTES_PREFIX = "fsbytes:"  # an absolute path never starts with this


class FsPath(TypeDecorator[str]):
    """A file path as TEXT; names that are not valid UTF-8 round-trip through a hex form."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is None:
            return None
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return _FS_BYTES_PREFIX + os.fsencode(value).hex()

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and value.startswith(_FS_BYTES_PREFIX):
            return os.fsdecode(bytes.fromhex(value[len(_FS_BYTES_PREFIX) :]))
        return value


class Base(DeclarativeBase):
    pass


class MetaEntry(Base):
    """Key/value facts about the store: schema version, chosen index spec per kind."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRecord(Base):
    """The one model whose vectors this store holds."""

    __tablename__ = "model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    pretrained: Mapped[str] = mapped_column(String)
    config_json: Mapped[str | None] = mapped_column(Text)
    checkpoint_digest: Mapped[str | None] = mapped_column(String)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    dim: Mapped[int] = mapped_column(Integer)
    software: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Item(Base):
    """An image file, or one text record of a text collection file."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("kind", "path", "locator"),
        Index("ix_items_content", "kind", "content_digest"),
        Index("ix_items_file", "kind", "file_digest"),
        {"sqlite_autoincrement": True},  # ids are FAISS ids: never reuse one
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    path: Mapped[str] = mapped_column(FsPath)
    locator: Mapped[str] = mapped_column(String, default="")  # "" for images, "line:3" for texts
    text: Mapped[str | None] = mapped_column(Text)
    content_digest: Mapped[str | None] = mapped_column(String)
    file_digest: Mapped[str | None] = mapped_column(String)
    file_size: Mapped[int] = mapped_column(Integer)
    file_mtime_ns: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, default=OK)
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)


class Embedding(Base):
    """An item's vector as a float32 blob, so indexes rebuild without re-encoding."""

    __tablename__ = "embeddings"
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class Change(Base):
    """One embedding added, replaced or removed; indexes replay these to catch up."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_kind_seq", "kind", "seq"), {"sqlite_autoincrement": True})
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    item_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String)


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
            raise StoreError(f"no index at {index_dir}: run `searchmm ingest PATH` first")
        index_dir.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._check_schema()
        except (DatabaseError, OperationalError, sqlite3.DatabaseError) as exc:
            self.engine.dispose()
            raise StoreError(
                f"{self.path} is not a readable searchmm database ({exc.orig or exc}); "
                "move it aside and ingest again, or restore it from a backup"
            ) from exc

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
        add_ids, vectors = _as_arrays(ids, blobs, dim)
        return Delta(
            seq,
            np.asarray(changed, np.int64),
            np.asarray(replaced, np.int64),
            add_ids,
            vectors,
            count or 0,
        )

    def change_seq(self) -> int:
        """The last change number given out: equal numbers mean nothing changed in between."""
        with self.session() as s:
            return _last_seq(s)

    def prune_changes(self, kind: str, upto_seq: int) -> None:
        """Forget changes that a saved index already reflects."""
        with self.session() as s, s.begin():
            s.execute(delete(Change).where(Change.kind == kind, Change.seq <= upto_seq))


@dataclass
class Delta:
    """The changes an index must apply to reach `seq`."""

    seq: int
    changed_ids: np.ndarray  # every item touched since the index was saved
    replaced_ids: np.ndarray  # those an older version of the index may hold (updated or removed)
    add_ids: np.ndarray  # those that have a vector now...
    vectors: np.ndarray  # ...and that vector
    count: int  # embeddings of the kind in the store at `seq`


def _last_seq(session: Session) -> int:
    """The last change number ever given out (AUTOINCREMENT's counter survives pruning)."""
    return session.scalar(text("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")) or 0


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
