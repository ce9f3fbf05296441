"""The SQLite connection: WAL mode, one snapshot per read transaction, errors that name the file."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPICursor
from sqlalchemy.exc import DatabaseError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from searchmm.errors import Category, Hint, StoreError
from searchmm.store.connections import DB_FILENAME, unusable

# New stores only (SQLite fixes it when the file is made). A row of one float32 512-d vector
# is 2 kB: with 4 kB pages each took a page of its own (4,106 bytes a row), with 16 kB 2,342
# (float16: 1,369 and 1,093); writes and scans ran 1.2-1.6x faster and a random read of 80
# rows took the same 0.07 ms; 64 kB pages made that read 7x slower (`bench/scale.py
# --storage-rows`, bench/results/scale.md).
PAGE_SIZE = 16_384


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy, not pysqlite, decide where transactions begin (see _on_begin).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")  # these two take effect in a new file only
    cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")  # pruned change-log pages can be freed
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, and vice versa
    cursor.execute("PRAGMA synchronous=NORMAL")  # durable at each checkpoint, safe in WAL mode
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_begin(connection: Any) -> None:
    # pysqlite never emits BEGIN before a SELECT; without it, reads in one session are not one
    # snapshot (SQLAlchemy's documented recipe for SQLite transactions).
    connection.exec_driver_sql("BEGIN")


class Database:
    """`<index dir>/searchmm.db`, opened with the pragmas and transaction rules searchmm needs."""

    def __init__(self, index_dir: Path, *, create: bool) -> None:
        self.path = index_dir / DB_FILENAME
        if not self.path.exists() and not create:
            raise StoreError(
                f"no index at {index_dir}", hint=Hint.INGEST_FIRST, category=Category.INVALID
            )
        index_dir.mkdir(parents=True, exist_ok=True)
        try:  # an empty file is an empty database, which the reads can open
            self.path.touch(exist_ok=False)
        except FileExistsError:
            pass
        except OSError as exc:
            raise unusable(self.path, exc) from exc
        self.engine: Engine = create_engine(f"sqlite:///{self.path}")
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

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
            raise unusable(self.path, exc) from exc

    @contextlib.contextmanager
    def immediate(self) -> Iterator[DBAPICursor]:
        """One write transaction taken with `BEGIN IMMEDIATE` (so that two writers never both
        read an old state and then act on it), committed at the end, rolled back on any error."""
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
        finally:
            raw.close()

    def give_back_free_pages(self) -> None:
        """Shrink the file by its free pages (a pruned change log: 318 MB after importing 10M
        vectors); a store made before incremental auto-vacuum keeps them for reuse instead.
        sqlite3's executescript steps the pragma to the end, where execute frees one page."""
        raw = self.engine.raw_connection()
        try:
            cast(sqlite3.Connection, raw.driver_connection).executescript(
                "PRAGMA incremental_vacuum;"
            )
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc
        finally:
            raw.close()

    def close(self) -> None:
        self.engine.dispose()
