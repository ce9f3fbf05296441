"""One index directory's store and indexes, opened when first needed and shared by threads.

Readers never wait for a writer: a reader catches a stale index up in memory and saves it only
when no writer holds the lock; writers save what they change. Reading opens the store's light
reads (no SQLAlchemy); the full store opens only for a write.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from searchmm import defaults
from searchmm.engine.locking import write_lock, write_lock_if_free
from searchmm.engine.storage import StorageOptions
from searchmm.errors import Hint, SearchmmError
from searchmm.index.sync import IndexSet
from searchmm.index.vector_index import VectorIndex
from searchmm.store.connections import DB_FILENAME
from searchmm.store.reads import StoreReads, open_reads
from searchmm.vocabulary import KINDS, Kind

if TYPE_CHECKING:
    from searchmm.store.store import Store


class IndexDirectory:
    """The lazily opened store and index set of `path`, and its write lock."""

    def __init__(
        self,
        path: Path,
        exact_threshold: int = defaults.EXACT_THRESHOLD,
        storage: StorageOptions | None = None,
    ) -> None:
        self.path = path
        self.exact_threshold = exact_threshold
        self.storage = storage or StorageOptions()
        self._store: Store | None = None
        self._reads: StoreReads | None = None  # until the full store is open
        self._indexes: IndexSet | None = None
        # Guards opening and the in-memory indexes: catching an index up changes it in place,
        # so searches hold it too (FAISS is fast next to encoding, which is done outside it).
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            for opened in (self._store, self._reads):
                if opened is not None:
                    opened.close()
            self._store = self._reads = None
            self._indexes = None

    def exists(self) -> bool:
        """Whether a store is there (cheap: no database is opened)."""
        return self._store is not None or (self.path / DB_FILENAME).exists()

    def reads(self) -> StoreReads:
        """The store to read; a directory without one is a `SearchmmError`."""
        with self.lock:
            if self._store is not None:
                return self._store
            if self._reads is None:
                self._check_exists()
                self._reads = open_reads(self.path)
            return self._reads

    def store(self, *, create: bool = False) -> Store:
        """The store to write; without `create`, a directory without one is a `SearchmmError`."""
        from searchmm.store.store import Store

        with self.lock:
            if self._store is None:
                if not create:
                    self._check_exists()
                if isinstance(self._reads, Store):
                    self._store, self._reads = self._reads, None  # it upgraded the file
                else:
                    self._store = Store(self.path, create=create)
            return self._store

    def _check_exists(self) -> None:
        if not self.exists():
            raise SearchmmError(f"no index at {self.path}", hint=Hint.INGEST_FIRST)

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[Store]:
        """Hold the directory's write lock (one writer at a time; readers never wait); the
        storage choices asked for are recorded (or refused) first."""
        with write_lock(self.path, wait):
            store = self.store(create=True)
            self.storage.settle(store)
            yield store

    def indexes(self) -> IndexSet:
        """The image and text indexes; an empty store (no model yet) has none."""
        with self.lock:
            store = self.reads()
            if self._indexes is None:
                stored = store.get_model()
                if stored is None:
                    raise SearchmmError(
                        f"the index at {self.path} is empty", hint=Hint.INGEST_FIRST
                    )
                self._indexes = IndexSet(
                    store, self.store, self.path, stored.dim, exact_threshold=self.exact_threshold
                )
            return self._indexes

    def sync(self) -> None:
        """After a write: catch every index up and save it (the caller holds the write lock)."""
        with self.lock:
            indexes = self.indexes()
            for kind in KINDS:
                indexes.get(kind, persist=True)

    def reader_index(self, kind: Kind) -> VectorIndex:
        """The index of a kind, caught up; saved only if no writer is busy. Call with `lock`
        held, and search the index before releasing it."""
        indexes = self.indexes()
        index = indexes.get(kind, persist=False)
        if indexes.dirty(kind):
            with write_lock_if_free(self.path) as held:
                if held:
                    indexes.save(kind)
        return index
