"""Ingest of text collections: a file's records are diffed by locator and text, not re-read.

An unchanged file (size, mtime, then digest) is skipped; a renamed one keeps its items; in a
changed one, records whose text is unchanged keep their vectors, new texts are encoded once
each (or copied from identical stored texts), and records that are gone are removed.
"""

from __future__ import annotations

import os

import numpy as np
from sqlalchemy import update

from searchmm.errors import SourceError
from searchmm.ingest.images import Failure, Ingestor, under
from searchmm.sources.files import FILE_CHANGED, digest_files, file_state, os_reason
from searchmm.sources.scan import FileEntry
from searchmm.sources.texts import TextRecord, read_text_collection, text_digest
from searchmm.store.store import OK, TEXT, Item, put_embedding

UNFINISHED = -1  # file size and mtime of a text row whose file is still being ingested


class TextIngest:
    """The text half of one `Ingestor` run (same store, options, encoder and summary)."""

    def __init__(self, ingest: Ingestor) -> None:
        self.ingest = ingest
        self.store, self.summary = ingest.store, ingest.summary

    def run(self, entries: list[FileEntry], roots: list[str]) -> None:
        by_path: dict[str, list[Item]] = {}
        for item in self.store.items_of_kind(TEXT):
            by_path.setdefault(item.path, []).append(item)
        seen = {e.path for e in entries}
        gone = {
            p: items
            for p, items in by_path.items()
            if p not in seen and under(p, roots) and not os.path.lexists(p)
        }
        gone_by_digest = {
            items[0].file_digest: p for p, items in gone.items() if items[0].file_digest
        }
        plans: list[tuple[FileEntry, str, list[Item], list[TextRecord]]] = []
        for entry in entries:
            if self.ingest.stopping():
                return
            rows = by_path.get(entry.path, [])
            if rows and all(
                (r.file_size, r.file_mtime_ns) == (entry.size, entry.mtime_ns) for r in rows
            ):
                self.summary.unchanged += len(rows)
                continue
            digest = digest_files([entry.path])[entry.path]
            if isinstance(digest, OSError):
                self.summary.failed.append(Failure(entry.path, os_reason(digest)))
                continue
            if rows and rows[0].file_digest == digest:
                self._move_texts(rows, entry, digest)
                self.summary.unchanged += len(rows)
            elif not rows and digest in gone_by_digest:
                moved = gone.pop(gone_by_digest.pop(digest))
                self._move_texts(moved, entry, digest)
                self.summary.renamed += len(moved)
            else:
                try:
                    collection = read_text_collection(
                        entry.path, text_field=self.ingest.options.text_field
                    )
                except SourceError as exc:
                    self.summary.failed.append(Failure(entry.path, str(exc)))
                    continue  # what was stored from this file stays until it can be read again
                if file_state(entry.path) != (entry.size, entry.mtime_ns):
                    self.summary.failed.append(Failure(entry.path, FILE_CHANGED))
                    continue  # records, digest and stat might each be of another version
                if not collection.records and not collection.problems:
                    self.summary.failed.append(Failure(entry.path, "no texts in this file"))
                self.summary.failed.extend(
                    Failure(entry.path, why, loc) for loc, why in collection.problems
                )
                plans.append((entry, digest, rows, collection.records))
        for entry, digest, rows, records in plans:
            if self.ingest.stopping():
                return
            self._update_collection(entry, digest, rows, records)
        self.ingest.remove([item for items in gone.values() for item in items])

    def _move_texts(self, rows: list[Item], entry: FileEntry, digest: str) -> None:
        with self.store.session() as s, s.begin():
            for item in rows:
                row = s.get(Item, item.id)
                row.path, row.file_size, row.file_mtime_ns, row.file_digest = (
                    entry.path,
                    entry.size,
                    entry.mtime_ns,
                    digest,
                )

    def _update_collection(
        self, entry: FileEntry, digest: str, rows: list[Item], records: list[TextRecord]
    ) -> None:
        """Keep records whose text is unchanged, encode new texts, drop records that are gone."""
        by_locator = {r.locator: r for r in rows}
        todo: list[tuple[TextRecord, Item | None, str]] = []
        keep: list[tuple[Item, TextRecord]] = []
        for record in records:
            item = by_locator.pop(record.locator, None)
            content = text_digest(record.text)
            if item is not None and item.content_digest == content:
                keep.append((item, record))
            else:
                todo.append((record, item, content))
        with self.store.session() as s, s.begin():
            for item, record in keep:
                s.get(Item, item.id).meta = record.metadata
        self.summary.unchanged += len(keep)
        self._encode_texts(entry, todo)
        if self.ingest.stopping():
            return  # rows keep an unfinished stat: the next ingest reads this file again
        self.ingest.remove(list(by_locator.values()))
        with self.store.session() as s, s.begin():  # only now is the whole file ingested
            s.execute(
                update(Item)
                .where(Item.kind == TEXT, Item.path == entry.path)
                .values(file_size=entry.size, file_mtime_ns=entry.mtime_ns, file_digest=digest)
            )

    def _encode_texts(
        self, entry: FileEntry, todo: list[tuple[TextRecord, Item | None, str]]
    ) -> None:
        """Encode in committed batches; each row's file stat says "unfinished" until the whole
        file is done, so that a crash half way through a file is resumed, not taken as done."""
        reusable = self.store.embedded_ids_by_digest(TEXT, [c for _, _, c in todo])
        batch_size = self.ingest.options.text_batch_size
        with self.ingest.bar(len(todo), f"encoding {os.path.basename(entry.path)}", " text") as bar:
            for start in range(0, len(todo), batch_size):
                if self.ingest.stopping():
                    return
                chunk = todo[start : start + batch_size]
                vectors = self._text_vectors(chunk, reusable)
                with self.store.session() as s, s.begin():
                    for (record, item, content), vector in zip(chunk, vectors, strict=True):
                        row = s.get(Item, item.id) if item is not None else None
                        if row is None:
                            row = Item(kind=TEXT, path=entry.path, locator=record.locator)
                            s.add(row)
                        row.text, row.content_digest, row.meta = (
                            record.text,
                            content,
                            record.metadata,
                        )
                        row.file_size = row.file_mtime_ns = UNFINISHED
                        row.file_digest = None
                        row.status, row.error = OK, None
                        s.flush()
                        put_embedding(s, row, vector, replaced=item is not None)
                        if item is None:
                            self.summary.new += 1
                        else:
                            self.summary.changed += 1
                bar.update(len(chunk))

    def _text_vectors(
        self, chunk: list[tuple[TextRecord, Item | None, str]], reusable: dict[str, int]
    ) -> np.ndarray:
        """Vectors for a chunk: copied for texts already stored, encoded once per distinct text."""
        contents = [c for _, _, c in chunk]
        copied = [c for c in dict.fromkeys(contents) if c in reusable]
        fresh = {c: r.text for r, _, c in chunk if c not in reusable}
        by_content: dict[str, np.ndarray] = {}
        if copied:
            ids, vectors = self.store.vectors([reusable[c] for c in copied], self.ingest.dim())
            by_id = dict(zip(ids.tolist(), vectors, strict=True))
            by_content.update((c, by_id[reusable[c]]) for c in copied)
            self.summary.reused += sum(1 for c in contents if c in reusable)
        if fresh:
            encoded = self.ingest.encoder.encode_texts(list(fresh.values()))
            by_content.update(zip(fresh.keys(), encoded, strict=True))
            self.summary.encoded_texts += len(fresh)
        return np.stack([by_content[c] for c in contents])
