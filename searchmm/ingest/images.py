"""The ingest pipeline: diff a scan against the store, encode only what is new, commit in batches.

Images are handled here; text collections in `ingest_texts`, on the same run and summary.

    scan -> diff (size+mtime, then content digest) -> renames, reuses, encodes, removals
         -> decode in DataLoader workers -> encode in batches -> commit each batch

A crash loses at most the batch in flight; a re-run resumes because unchanged files are
recognised by size, mtime and digest. A file renamed or copied keeps (or reuses) its vector.
A `stop` event ends the run cleanly between batches: what was encoded is committed first.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from searchmm.model.encoder import Encoder
from searchmm.sources.files import TRANSIENT_REASONS, digest_files, os_reason
from searchmm.sources.scan import FileEntry, scan
from searchmm.store.store import (
    FAILED,
    IMAGE,
    OK,
    TEXT,
    Item,
    Store,
    delete_items,
    drop_embedding,
    put_embedding,
)

log = logging.getLogger("searchmm")


@dataclass
class Failure:
    path: str
    reason: str
    locator: str = ""


@dataclass
class IngestSummary:
    """What an ingest did, item by item (an image file, or one record of a text file)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    renamed: int = 0
    removed: int = 0
    reused: int = 0  # new or changed items whose vector was copied from identical content
    encoded_images: int = 0
    encoded_texts: int = 0
    failed: list[Failure] = field(default_factory=list)
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def items_per_s(self) -> float:
        encoded = self.encoded_images + self.encoded_texts
        return encoded / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["items_per_s"] = round(self.items_per_s, 2)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        return out


@dataclass
class IngestOptions:
    batch_size: int = 32
    text_batch_size: int = 256
    workers: int = 0
    include_hidden: bool = False
    texts_in_folders: bool = False
    text_field: str = "text"
    progress: bool = True


@dataclass
class _Pending:
    """An image to encode (or copy a vector for), with the stored item it replaces if any."""

    entry: FileEntry
    item: Item | None
    digest: str


def under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class Ingestor:
    """Runs one ingest against a store; the encoder is loaded only if something needs encoding."""

    def __init__(
        self,
        store: Store,
        encoder: Callable[[], Encoder],
        options: IngestOptions,
        stop: threading.Event | None = None,
    ) -> None:
        self.store = store
        self._encoder_factory = encoder
        self.options = options
        self.summary = IngestSummary()
        self._stop = stop

    @property
    def encoder(self) -> Encoder:
        return self._encoder_factory()

    def stopping(self) -> bool:
        """Whether to stop before the next batch (checked only where everything is committed)."""
        if self._stop is not None and self._stop.is_set():
            self.summary.interrupted = True
        return self.summary.interrupted

    def run(self, paths: Sequence[str | os.PathLike[str]]) -> IngestSummary:
        """A KeyboardInterrupt is not caught: it rolls back the batch in flight and propagates."""
        started = time.perf_counter()
        roots = [os.path.abspath(os.fspath(p)) for p in paths]
        found = self._scan(paths)
        if not self.stopping():
            self._ingest_images(found.images, roots)
        if not self.stopping():
            from searchmm.ingest.texts import TextIngest

            TextIngest(self).run(found.texts, roots)
        self.summary.elapsed_s = time.perf_counter() - started
        return self.summary

    def bar(self, total: int | None, desc: str, unit: str) -> tqdm:
        return tqdm(
            total=total, desc=desc, unit=unit, disable=not self.options.progress, leave=False
        )

    def _scan(self, paths: Sequence[str | os.PathLike[str]]) -> Any:
        with self.bar(None, "scanning", " files") as bar:
            found = scan(
                paths,
                include_hidden=self.options.include_hidden,
                texts_in_folders=self.options.texts_in_folders,
                progress=lambda n: bar.update(n - bar.n),
            )
        self.summary.failed.extend(Failure(p, reason) for p, reason in found.problems)
        return found

    # -- images ----------------------------------------------------------------------------

    def _ingest_images(self, entries: list[FileEntry], roots: list[str]) -> None:
        existing = self.store.items_of_kind(IMAGE)
        by_path = {item.path: item for item in existing}
        seen = {e.path for e in entries}
        gone = [i for i in existing if i.path not in seen and under(i.path, roots)]
        gone = [i for i in gone if not os.path.lexists(i.path)]
        suspects: list[tuple[FileEntry, Item | None]] = []
        for entry in entries:
            item = by_path.get(entry.path)
            same = item is not None and (item.file_size, item.file_mtime_ns) == (
                entry.size,
                entry.mtime_ns,
            )
            if same and item.status == OK:
                self.summary.unchanged += 1
            elif same:
                # The same bytes would fail the same way: report, do not decode (or load a model).
                # (Unreadable files never get this far: their digest fails, cheaply, every run.)
                self.summary.failed.append(Failure(entry.path, item.error or "failed before"))
            else:
                suspects.append((entry, item))
        digests = digest_files([e.path for e, _ in suspects]) if suspects else {}
        gone_by_digest = {i.file_digest: i for i in gone if i.status == OK and i.file_digest}
        touched: list[tuple[Item, FileEntry]] = []
        renamed: list[tuple[Item, FileEntry]] = []
        pending: list[_Pending] = []
        for entry, item in suspects:
            digest = digests[entry.path]
            if isinstance(digest, OSError):
                self.summary.failed.append(Failure(entry.path, os_reason(digest)))
            elif item and item.status == OK and item.file_digest == digest:
                touched.append((item, entry))  # touched, same bytes
            elif item is None and digest in gone_by_digest:
                renamed.append((gone_by_digest.pop(digest), entry))
            else:
                pending.append(_Pending(entry, item, digest))
        self._move_images(touched, renamed)
        renamed_ids = {item.id for item, _ in renamed}
        self._reuse_or_encode_images(pending)
        if not self.stopping():
            self.remove([i for i in gone if i.id not in renamed_ids])

    def _move_images(
        self, touched: list[tuple[Item, FileEntry]], renamed: list[tuple[Item, FileEntry]]
    ) -> None:
        """Record new size/mtime (same bytes) and new paths (renames): no vector changes."""
        if not touched and not renamed:
            return
        with self.store.session() as s, s.begin():
            for item, entry in [*touched, *renamed]:
                row = s.get(Item, item.id)
                row.path, row.file_size, row.file_mtime_ns = entry.path, entry.size, entry.mtime_ns
        self.summary.unchanged += len(touched)
        self.summary.renamed += len(renamed)

    def _reuse_or_encode_images(self, pending: list[_Pending]) -> None:
        reusable = self.store.embedded_ids_by_digest(IMAGE, [p.digest for p in pending])
        to_copy = [p for p in pending if p.digest in reusable]
        for start in range(0, len(to_copy), 500):
            if self.stopping():
                return
            chunk = to_copy[start : start + 500]
            ids, vectors = self.store.vectors([reusable[p.digest] for p in chunk], self.dim())
            by_id = dict(zip(ids.tolist(), vectors, strict=True))
            with self.store.session() as s, s.begin():
                for p in chunk:
                    self._save_image(s, p, by_id[reusable[p.digest]], None)
            self.summary.reused += len(chunk)
        self._encode_images([p for p in pending if p.digest not in reusable])

    def _encode_images(self, pending: list[_Pending]) -> None:
        if not pending or self.stopping():
            return
        from searchmm.index.faisslib import preload_in_background
        from searchmm.sources.loader import image_loader

        preload_in_background()  # ready for the index update when encoding ends
        encoder = self.encoder
        loader = image_loader(
            [p.entry.path for p in pending],
            encoder.preprocess,
            batch_size=self.options.batch_size,
            workers=self.options.workers,
            draft_size=encoder.image_size,
            expected=[(p.entry.size, p.entry.mtime_ns) for p in pending],
        )
        with self.bar(len(pending), "encoding images", " img") as bar:
            for batch in loader:
                vectors = encoder.encode_images(batch.pixels) if batch.pixels is not None else None
                with self.store.session() as s, s.begin():
                    for row, index in enumerate(batch.indices):
                        self._save_image(s, pending[index], vectors[row], batch.sizes[row])
                    for index, reason in batch.failures:
                        self._save_failure(s, pending[index], reason)
                self.summary.encoded_images += len(batch.indices)
                bar.update(len(batch.indices) + len(batch.failures))
                if self.stopping():
                    break  # this batch is committed; leaving the loop shuts the workers down

    def _save_image(
        self, s: Any, p: _Pending, vector: np.ndarray, size: tuple[int, int] | None
    ) -> None:
        item = self._image_row(s, p)
        if size is not None:
            item.width, item.height = size
        elif p.item is None or p.item.width is None:
            item.width, item.height = self._size_from_source(s, p)
        item.status, item.error = OK, None
        s.flush()
        put_embedding(s, item, vector, replaced=p.item is not None)
        if p.item is None:
            self.summary.new += 1
        else:
            self.summary.changed += 1

    def _size_from_source(self, s: Any, p: _Pending) -> tuple[int | None, int | None]:
        """A copy of a stored image has the source's pixel size."""
        source = s.query(Item).filter_by(kind=IMAGE, content_digest=p.digest, status=OK).first()
        return (source.width, source.height) if source else (None, None)

    def _save_failure(self, s: Any, p: _Pending, reason: str) -> None:
        """Record why a file failed; a vanished or changing file, or a stored image whose new
        bytes fail, is only reported: what is stored is never replaced by a failure."""
        if reason in TRANSIENT_REASONS:
            self.summary.failed.append(Failure(p.entry.path, reason))
            return
        if p.item is not None and p.item.status == OK:
            kept = f"{reason} (the version ingested earlier is kept)"
            self.summary.failed.append(Failure(p.entry.path, kept))
            return
        item = self._image_row(s, p)
        item.status, item.error = FAILED, reason
        s.flush()
        drop_embedding(s, item)
        self.summary.failed.append(Failure(p.entry.path, reason))

    @staticmethod
    def _image_row(s: Any, p: _Pending) -> Item:
        item = s.get(Item, p.item.id) if p.item is not None else None
        if item is None:
            item = Item(kind=IMAGE, path=p.entry.path, locator="")
            s.add(item)
        item.file_size, item.file_mtime_ns = p.entry.size, p.entry.mtime_ns
        item.file_digest = item.content_digest = p.digest
        return item

    # -- shared ----------------------------------------------------------------------------

    def remove(self, items: Iterable[Item]) -> None:
        items = list(items)
        if not items:
            return
        with self.store.session() as s, s.begin():
            delete_items(s, items)
        self.summary.removed += len(items)

    def dim(self) -> int:
        model = self.store.get_model()
        assert model is not None, "the engine records the model before ingesting"
        return model.dim


def remove_under(store: Store, roots: Sequence[str]) -> int:
    """Delete every item (image file or text record) stored at or under the given paths."""
    doomed = [
        i for kind in (IMAGE, TEXT) for i in store.items_of_kind(kind) if under(i.path, roots)
    ]
    if doomed:
        with store.session() as s, s.begin():
            delete_items(s, doomed)
    return len(doomed)
