"""Keeps each kind's FAISS index in step with the store: load, catch up, rebuild, save.

The store is the truth; an index file is a cache stamped with the change sequence number it
reflects. Opening an index replays the changes it has not seen, or rebuilds it from the stored
vectors when it is missing, unreadable, of the wrong type for its size, or inconsistent.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from searchmm.atomicfile import leftover_temps
from searchmm.errors import IndexFileError, SearchmmError
from searchmm.index.budget import BUDGET_KEY, estimate_bytes
from searchmm.index.file import IndexHeader
from searchmm.index.specs import AUTO, IndexParams, choose_spec, family, nlist_of
from searchmm.index.vector_index import VectorIndex, build_from
from searchmm.store.reads import StoreReads
from searchmm.store.snapshots import BATCH_ROWS
from searchmm.vocabulary import Kind

if TYPE_CHECKING:
    from searchmm.store.store import Store

log = logging.getLogger("searchmm")


def index_path(index_dir: Path, kind: str) -> Path:
    return index_dir / f"{kind}s.faiss"


class IndexSet:
    """The image and text indexes of one index directory. It reads through `store` and opens
    `writable()` only to record what it saved or was told (a query whose index is up to date
    never does, and so never loads SQLAlchemy)."""

    def __init__(
        self,
        store: StoreReads,
        writable: Callable[[], Store],
        index_dir: Path,
        dim: int,
        *,
        exact_threshold: int,
    ) -> None:
        self.store = store
        self.writable = writable
        self.index_dir = index_dir
        self.dim = dim
        self.exact_threshold = exact_threshold
        self._open: dict[str, VectorIndex] = {}
        self._seq: dict[str, int] = {}
        self._saved_seq: dict[str, int | None] = {}  # the seq of the file on disk, None if none
        self._verified: set[str] = set()  # kinds whose index was checked against the store

    def requested_spec(self, kind: str) -> str:
        """`auto`, or the factory string a user chose with `reindex --index-spec`."""
        return self.store.get_meta(f"index_spec.{kind}", AUTO) or AUTO

    def get(self, kind: str, *, persist: bool) -> VectorIndex:
        """The index of a kind, caught up with the store; saved when `persist` (writers only)."""
        index = self._open.get(kind)
        if index is None:
            index = self._load(kind)
        index = self._catch_up(kind, index, persist)
        if persist and self.dirty(kind):
            self.save(kind)
        return index

    def budget(self) -> int | None:
        """The memory budget (bytes) recorded with `--memory-budget`, if any."""
        value = self.store.get_meta(BUDGET_KEY)
        return int(value) if value else None

    def rebuild(self, kind: str, spec: str | None = None, *, persist: bool = True) -> VectorIndex:
        """Build from every stored vector, streamed from one snapshot (a training sample, then
        batches), so memory holds the index and one batch; a given spec is remembered."""
        wanted = spec if spec is not None else self.requested_spec(kind)
        try:
            seq, index = self._build(kind, wanted)
        except SearchmmError:
            if spec is not None or wanted == AUTO:
                raise  # the user's new spec failed: the old index and setting stay as they were
            log.warning("index spec %r no longer builds for %s: using auto", wanted, kind)
            seq, index = self._build(kind, AUTO)
            spec = AUTO
        if spec is not None:
            self.writable().set_meta(f"index_spec.{kind}", spec)
        self._open[kind], self._seq[kind] = index, seq
        self._saved_seq[kind] = None
        if persist:
            self.save(kind)
        return index

    def _build(self, kind: str, spec: str) -> tuple[int, VectorIndex]:
        """Under a budget, the training sample takes at most an eighth of it and a batch a
        sixteenth (as float32): with the index and the process's fixed buffers (about 20 MB:
        SQLite's caches, FAISS's and BLAS's work space) the build's peak stays within it."""
        params, budget, row = IndexParams(), self.budget(), 4 * self.dim
        batch = BATCH_ROWS
        if budget is not None:
            params = dataclasses.replace(
                params, train_sample=min(params.train_sample, budget // (8 * row))
            )
            batch = max(1_000, min(batch, budget // (16 * row)))
        with self.store.vector_snapshot(Kind(kind), self.dim) as snapshot:
            index = build_from(
                self.dim,
                snapshot.count,
                lambda rows: snapshot.sample(rows, params.train_seed),
                snapshot.batches(batch),
                spec,
                exact_threshold=self.exact_threshold,
                budget=budget,
                params=params,
            )
            return snapshot.seq, index

    def _outgrown(self, index: VectorIndex, count: int) -> str | None:
        """Why an auto-chosen index should be built again for `count` vectors, if it should:
        another type suits the size or the budget, its IVF lists are 4x too many or too few
        for it, or its quantiser drifted (`drift`)."""
        budget = self.budget()
        wanted = choose_spec(count, self.dim, exact_threshold=self.exact_threshold, budget=budget)
        if family(wanted) != family(index.spec):
            return f"{count} vectors: switching the index to {wanted}"
        if budget is not None and estimate_bytes(index.spec, count, self.dim) > budget:
            return f"{index.spec} for {count} vectors would exceed the memory budget"
        have, fit = nlist_of(index.spec), nlist_of(wanted)
        if have and fit and not have / 4 < fit < have * 4:
            return f"{count} vectors: {have} IVF lists no longer fit, building {wanted}"
        if index.drift.drifted(count):
            return (
                f"the quantiser drifted: vectors added since training lie "
                f"{index.drift.added_mean:.3f} from their centroids, {index.drift.trained:.3f} "
                "at training; training again"
            )
        return None

    def dirty(self, kind: str) -> bool:
        """Whether the index in memory is ahead of its file."""
        return self._saved_seq.get(kind) != self._seq.get(kind)

    def save(self, kind: str) -> None:
        """Write the index atomically with the seq it reflects, then forget older changes."""
        index, seq = self._open[kind], self._seq[kind]
        path = index_path(self.index_dir, kind)
        for orphan in leftover_temps(path):  # a saver holds the write lock: these were
            orphan.unlink(missing_ok=True)  # left by a writer killed mid-save
        header = IndexHeader(kind=kind, dim=self.dim, spec=index.spec, seq=seq, count=index.ntotal)
        index.save(path, header)
        store = self.writable()
        if self._saved_seq.get(kind, None) is None:
            store.set_meta(f"index_saved.{kind}", "1")
        self._saved_seq[kind] = seq
        store.prune_changes(Kind(kind), seq)

    def _load(self, kind: str) -> VectorIndex:
        path = index_path(self.index_dir, kind)
        try:
            index, header = VectorIndex.load(path)
        except FileNotFoundError:
            if self.store.get_meta(f"index_saved.{kind}"):
                log.warning("%s is missing: rebuilding it from the store", path)
            return self.rebuild(kind, persist=False)
        except IndexFileError as exc:
            log.warning("%s; rebuilding it from the store", exc)
            return self.rebuild(kind, persist=False)
        if header.dim != self.dim or header.kind != kind:
            log.warning("%s does not match the store's model: rebuilding it", path)
            return self.rebuild(kind, persist=False)
        self._open[kind], self._seq[kind] = index, header.seq
        self._saved_seq[kind] = header.seq
        return index

    def _catch_up(self, kind: str, index: VectorIndex, writer: bool) -> VectorIndex:
        if kind in self._verified and self.store.change_seq() == self._seq[kind]:
            return index  # the per-query path: one cheap read when nothing changed
        self._verified.add(kind)
        delta = self.store.delta(Kind(kind), self._seq[kind], self.dim)
        if not delta.complete:
            # Another process saved a newer file and pruned the changes this copy needs: start
            # again from that file (replaying the rest would silently miss adds and removals).
            index = self._load(kind)
            delta = self.store.delta(Kind(kind), self._seq[kind], self.dim)
            if not delta.complete:
                log.info("%s is older than the store's change log: rebuilding it", kind)
                return self.rebuild(kind, persist=False)
        if delta.seq == self._seq[kind] and index.ntotal == delta.count:
            return index
        if len(delta.replaced_ids) and not index.supports_remove:
            return self.rebuild(kind, persist=False)
        if len(delta.changed_ids):
            index.remove(delta.changed_ids)  # idempotent: a changed id is re-added below
            index.add(delta.add_ids, delta.vectors)
        self._seq[kind] = delta.seq
        if index.ntotal != delta.count:
            log.warning(
                "%s holds %d vectors but the store %d: rebuilding it",
                index_path(self.index_dir, kind),
                index.ntotal,
                delta.count,
            )
            return self.rebuild(kind, persist=False)
        # Only a writer rebuilds for a better type: the index a reader has is still correct,
        # and a query must not spend minutes training (the next write does it, and saves it).
        auto = writer and self.requested_spec(kind) == AUTO
        reason = self._outgrown(index, delta.count) if auto else None
        if reason is not None:
            log.info("%s index: %s", kind, reason)
            return self.rebuild(kind, persist=False)
        return index
