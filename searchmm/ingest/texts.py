"""Carries out the text part of a plan: a changed file's records are diffed, not all re-encoded.

Records whose text is unchanged keep their vectors, new texts are encoded once each (or copied
from identical stored texts), and records that are gone are removed. A file's rows say
"unfinished" until the whole file is committed, so a crash half way is resumed, not taken as done.
"""

from __future__ import annotations

import os
from contextlib import closing

import numpy as np

from searchmm.errors import SourceError
from searchmm.ingest.encoding import TextEncoding, text_encoding
from searchmm.ingest.plan import Encode, FilePlan, RecordTodo, diff_records
from searchmm.ingest.run import IngestRun
from searchmm.ingest.summary import Failure
from searchmm.sources.files import FILE_CHANGED, file_state
from searchmm.sources.texts import TextRecord, read_text_collection
from searchmm.store.records import EncodedText
from searchmm.vocabulary import Kind


class TextExecutor:
    """Moves, re-reads, encodes and removes text collection files as a `FilePlan` says."""

    encoding: TextEncoding  # set for the length of `execute`

    def __init__(self, run: IngestRun) -> None:
        self.run, self.store, self.summary = run, run.store, run.summary

    def execute(self, plan: FilePlan) -> None:
        with closing(text_encoding(self.run)) as self.encoding:
            self._execute(plan)

    def _execute(self, plan: FilePlan) -> None:
        moves = [*plan.touched, *plan.renamed]
        self.store.move_files([([i.id for i in m.stored.items], m.file) for m in moves])
        self.summary.unchanged += sum(len(m.stored.items) for m in plan.touched)
        self.summary.renamed += sum(len(m.stored.items) for m in plan.renamed)
        readable: list[tuple[Encode, list[TextRecord]]] = []
        for todo in plan.encode:
            if self.run.stopping():
                return
            records = self._read(todo)
            if records is not None:
                readable.append((todo, records))
        for todo, records in readable:
            if self.run.stopping():
                return
            self._update_file(todo, records)
        self.summary.removed += self.store.delete_items(i.id for f in plan.remove for i in f.items)

    def _read(self, todo: Encode) -> list[TextRecord] | None:
        """The file's records, or None (reported) when it cannot be used as it is now; what
        was stored from it stays until it can be read again."""
        path = todo.entry.path
        try:
            collection = read_text_collection(path, text_field=self.run.options.text_field)
        except SourceError as exc:
            self.summary.failed.append(Failure(path, str(exc)))
            return None
        if file_state(path) != (todo.entry.size, todo.entry.mtime_ns):
            self.summary.failed.append(Failure(path, FILE_CHANGED))
            return None  # records, digest and stat might each be of another version
        if not collection.records and not collection.problems:
            self.summary.failed.append(Failure(path, "no texts in this file"))
        self.summary.failed.extend(Failure(path, why, loc) for loc, why in collection.problems)
        return collection.records

    def _update_file(self, todo: Encode, records: list[TextRecord]) -> None:
        stored = todo.stored.items if todo.stored is not None else ()
        diff = diff_records(stored, records)
        self.store.update_text_meta([(item.id, record.metadata) for item, record in diff.keep])
        self.summary.unchanged += len(diff.keep)
        self._encode(todo.entry.path, diff.encode)
        if self.run.stopping():
            return  # rows keep an unfinished stat: the next ingest reads this file again
        self.summary.removed += self.store.delete_items(item.id for item in diff.drop)
        self.store.finish_text_file(todo.file)  # only now is the whole file ingested

    def _encode(self, path: str, todo: list[RecordTodo]) -> None:
        reusable = self.store.embedded_ids_by_digest(Kind.TEXT, [t.content_digest for t in todo])
        size = self.run.options.text_batch_size
        chunks = [todo[start : start + size] for start in range(0, len(todo), size)]
        fresh = [_fresh(chunk, reusable) for chunk in chunks]
        encoded = self.encoding.vectors([list(texts.values()) for texts in fresh if texts])
        with self.run.bar(len(todo), f"encoding {os.path.basename(path)}", " text") as bar:
            for chunk, texts in zip(chunks, fresh, strict=True):
                if self.run.stopping():
                    return
                vectors = self._vectors(chunk, reusable, texts, next(encoded) if texts else None)
                self.store.save_texts(
                    path,
                    [
                        EncodedText(
                            t.record.locator,
                            t.record.text,
                            t.content_digest,
                            t.record.metadata,
                            vector,
                            t.item.id if t.item is not None else None,
                        )
                        for t, vector in zip(chunk, vectors, strict=True)
                    ],
                )
                changed = sum(1 for t in chunk if t.item is not None)
                self.summary.changed += changed
                self.summary.new += len(chunk) - changed
                bar.update(len(chunk))

    def _vectors(
        self,
        chunk: list[RecordTodo],
        reusable: dict[str, int],
        fresh: dict[str, str],
        encoded: np.ndarray | None,
    ) -> np.ndarray:
        """Vectors for a chunk: copied for texts already stored, `encoded` for the `fresh` ones
        (each distinct text once)."""
        contents = [t.content_digest for t in chunk]
        copied = [c for c in dict.fromkeys(contents) if c in reusable]
        by_content: dict[str, np.ndarray] = {}
        if copied:
            ids, vectors = self.store.vectors([reusable[c] for c in copied], self.run.dim())
            by_id = dict(zip(ids.tolist(), vectors, strict=True))
            by_content.update((c, by_id[reusable[c]]) for c in copied)
            self.summary.reused += sum(1 for c in contents if c in reusable)
        if fresh:
            assert encoded is not None, "a chunk with fresh texts has their vectors"
            by_content.update(zip(fresh.keys(), encoded, strict=True))
            self.summary.encoded_texts += len(fresh)
        return np.stack([by_content[c] for c in contents])


def _fresh(chunk: list[RecordTodo], reusable: dict[str, int]) -> dict[str, str]:
    """The chunk's texts to encode, once each: content digest -> text."""
    return {t.content_digest: t.record.text for t in chunk if t.content_digest not in reusable}
