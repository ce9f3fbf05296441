"""One index directory's store and indexes, opened when first needed and shared by threads.

Readers never wait for a writer: a reader catches a stale index up in memory and saves it only
when no writer holds the lock; writers save what they change.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from searchmm import defaults
from searchmm.engine.locking import write_lock, write_lock_if_free
from searchmm.errors import Hint, SearchmmError
from searchmm.index.sync import IndexSet
from searchmm.index.vector_index import VectorIndex
from searchmm.store.database import DB_FILENAME
from searchmm.store.store import Store
from searchmm.vocabulary import KINDS, Kind


class IndexDirectory:
    """The lazily opened store and index set of `path`, and its write lock."""

    def __init__(self, path: Path, *, exact_threshold: int = defaults.EXACT_THRESHOLD) -> None:
        self.path = path
        self.exact_threshold = exact_threshold
        self._store: Store | None = None
        self._indexes: IndexSet | None = None
        # Guards opening and the in-memory indexes: catching an index up changes it in place,
        # so searches hold it too (FAISS is fast next to encoding, which is done outside it).
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None
            self._indexes = None

    def exists(self) -> bool:
        """Whether a store is there (cheap: no database is opened)."""
        return self._store is not None or (self.path / DB_FILENAME).exists()

    def store(self, *, create: bool = False) -> Store:
        """The store; without `create`, a directory without one is a `SearchmmError`."""
        with self.lock:
            if self._store is None:
                if not create and not self.exists():
                    raise SearchmmError(f"no index at {self.path}", hint=Hint.INGEST_FIRST)
                self._store = Store(self.path, create=create)
            return self._store

    @contextlib.contextmanager
    def writing(self, wait: float = 0.0) -> Iterator[Store]:
        """Hold the directory's write lock (one writer at a time; readers never wait)."""
        with write_lock(self.path, wait):
            yield self.store(create=True)

    def indexes(self) -> IndexSet:
        """The image and text indexes; an empty store (no model yet) has none."""
        with self.lock:
            store = self.store()
            if self._indexes is None:
                stored = store.get_model()
                if stored is None:
                    raise SearchmmError(
                        f"the index at {self.path} is empty", hint=Hint.INGEST_FIRST
                    )
                self._indexes = IndexSet(
                    store, self.path, stored.dim, exact_threshold=self.exact_threshold
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
