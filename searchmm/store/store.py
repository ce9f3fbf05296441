"""The SQLite store, the source of truth: model record, items, embeddings and a change log.

FAISS indexes are caches derived from this file. Every change to an item's embedding appends a
row to `changes`, whose sequence number an index records when saved, so that an index that is
behind is caught up on open without re-reading the whole store. Reads live in `reads` (plain
sqlite3, so that a query needs no SQLAlchemy), writes in `writes`; both hand out and take the
frozen values of `records`.
"""

from __future__ import annotations

from pathlib import Path

from searchmm.store.connections import DB_FILENAME as DB_FILENAME
from searchmm.store.migrations import SCHEMA_VERSION as SCHEMA_VERSION
from searchmm.store.migrations import prepare
from searchmm.store.reads import StoreReads
from searchmm.store.writes import StoreWrites


class Store(StoreWrites, StoreReads):
    """Opens (or creates, or upgrades) `<index dir>/searchmm.db` for reading and writing."""

    def __init__(self, index_dir: Path, *, create: bool) -> None:
        StoreWrites.__init__(self, index_dir, create=create)
        StoreReads.__init__(self, index_dir)
        try:
            prepare(self)  # database errors come out of it as a `StoreError` naming the file
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        StoreReads.close(self)
        StoreWrites.close(self)
