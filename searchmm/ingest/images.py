"""Carries out the image part of a plan: decode in worker processes, encode, commit each batch.

A copy of stored content reuses its vector (by content digest) and is never decoded. A crash
loses at most the batch in flight; a `stop` ends the run between batches, after a commit.
"""

from __future__ import annotations

import time
from contextlib import closing

from searchmm.ingest.plan import Encode, FilePlan
from searchmm.ingest.run import IngestRun
from searchmm.ingest.summary import Failure
from searchmm.sources.files import TRANSIENT_REASONS
from searchmm.store.records import EncodedImage, FailedImage
from searchmm.vocabulary import Kind

_COPY_BATCH = 500


class ImageExecutor:
    """Moves, copies, encodes and removes image files as a `FilePlan` says."""

    def __init__(self, run: IngestRun) -> None:
        self.run, self.store, self.summary = run, run.store, run.summary

    def execute(self, plan: FilePlan) -> None:
        moves = [*plan.touched, *plan.renamed]
        self.store.move_files([([i.id for i in m.stored.items], m.file) for m in moves])
        self.summary.unchanged += len(plan.touched)
        self.summary.renamed += len(plan.renamed)
        self._reuse_or_encode(plan.encode)
        if not self.run.stopping():
            self.summary.removed += self.store.delete_items(
                i.id for f in plan.remove for i in f.items
            )

    def _reuse_or_encode(self, pending: list[Encode]) -> None:
        reusable = self.store.embedded_ids_by_digest(Kind.IMAGE, [p.digest for p in pending])
        to_copy = [p for p in pending if p.digest in reusable]
        for start in range(0, len(to_copy), _COPY_BATCH):
            if self.run.stopping():
                return
            chunk = to_copy[start : start + _COPY_BATCH]
            ids, vectors = self.store.vectors([reusable[p.digest] for p in chunk], self.run.dim())
            by_id = dict(zip(ids.tolist(), vectors, strict=True))
            self.store.save_images(
                [EncodedImage(p.file, by_id[reusable[p.digest]], None, _replaces(p)) for p in chunk]
            )
            self._count_saved(chunk)
            self.summary.reused += len(chunk)
        self._encode([p for p in pending if p.digest not in reusable])

    def _encode(self, pending: list[Encode]) -> None:
        if not pending or self.run.stopping():
            return
        from searchmm.index.faisslib import preload_in_background
        from searchmm.ingest.encoding import encoded_batches

        preload_in_background()  # ready for the index update when encoding ends
        encoder = self.run.load_encoder(len(pending))
        batches = encoded_batches(self.run, encoder, [p.entry for p in pending])
        done: set[int] = set()  # a batch that a cluster computed twice is committed once
        with closing(batches), self.run.bar(len(pending), "encoding images", " img") as bar:
            for computed in batches:
                started = time.perf_counter()
                batch = computed.without(done)
                saved = [pending[index] for index in batch.indices]
                encoded = []
                if batch.vectors is not None:
                    encoded = [
                        EncodedImage(p.file, batch.vectors[row], batch.sizes[row], _replaces(p))
                        for row, p in enumerate(saved)
                    ]
                failed = [self._failure(pending[i], reason) for i, reason in batch.failures]
                self.store.save_images(encoded, [f for f in failed if f is not None])
                done.update(batch.indices, (i for i, _ in batch.failures))
                self._count_saved(saved)
                self.summary.encoded_images += len(batch.indices)
                commit_s = time.perf_counter() - started
                self.summary.stages.record(batch.decode_s, batch.encode_s, commit_s, len(saved))
                bar.update(len(batch.indices) + len(batch.failures))
                if self.run.stopping():
                    break  # this batch is committed; closing `batches` stops the workers

    def _failure(self, p: Encode, reason: str) -> FailedImage | None:
        """Why a file failed, to record; a vanished or changing file, or a stored image whose new
        bytes fail, is only reported: what is stored is never replaced by a failure."""
        if reason in TRANSIENT_REASONS:
            self.summary.failed.append(Failure(p.entry.path, reason))
            return None
        if p.stored is not None and p.stored.ok:
            kept = f"{reason} (the version ingested earlier is kept)"
            self.summary.failed.append(Failure(p.entry.path, kept))
            return None
        self.summary.failed.append(Failure(p.entry.path, reason))
        return FailedImage(p.file, reason, _replaces(p))

    def _count_saved(self, saved: list[Encode]) -> None:
        changed = sum(1 for p in saved if p.stored is not None)
        self.summary.changed += changed
        self.summary.new += len(saved) - changed


def _replaces(p: Encode) -> int | None:
    return p.stored.items[0].id if p.stored is not None else None
