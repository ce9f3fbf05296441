"""Connections for reading the store: one per thread, opened on first use, never creating a
file; and database errors as one line that says what to do."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from searchmm.errors import Category, StoreError

DB_FILENAME = "searchmm.db"


class ReadConnections:
    """The per-thread `sqlite3` connections of `<index dir>/searchmm.db`."""

    def __init__(self, index_dir: Path) -> None:
        self.path = index_dir / DB_FILENAME
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._opened_lock = threading.Lock()

    def close(self) -> None:
        with self._opened_lock:
            opened, self._opened, self._local = self._opened, [], threading.local()
        for connection in opened:
            connection.close()

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: a read never creates a missing file; no implicit transactions (see `_reading`)
        uri = self.path.resolve().as_uri() + "?mode=rw"
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=30000")
        return connection

    @contextlib.contextmanager
    def _reading(self, *, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        """This thread's connection, in one transaction when `snapshot`; database errors become
        one `StoreError` naming the file and what to do."""
        try:
            connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
            if connection is None:
                connection = self._connect()
                with self._opened_lock:
                    self._opened.append(connection)
                self._local.connection = connection
            if not snapshot:
                yield connection
                return
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise unusable(self.path, exc) from exc


def unusable(path: Path, exc: BaseException) -> StoreError:
    """A database error as one line that says what to do (SQLAlchemy's keep the driver's
    error in `orig`)."""
    detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    if "locked" in detail or "busy" in detail:
        return StoreError(
            f"{path} is locked by another process ({detail}); try again", category=Category.BUSY
        )
    if "malformed" in detail or "not a database" in detail:
        return StoreError(
            f"{path} is damaged ({detail}): restore it from a backup, or move it aside "
            "(with any -wal and -shm files) and ingest again to rebuild it"
        )
    return StoreError(f"cannot use {path} ({detail}): check the disk and permissions")
