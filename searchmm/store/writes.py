"""Every write the engine and the ingest make, each one transaction over frozen values.

A vector written or dropped appends to the change log in the same transaction, so an index
that replays the log never misses a change and never sees half a batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import CursorResult, delete, insert, null, select, text, update
from sqlalchemy.orm import Session

from searchmm.store.blobs import DEFAULT_DTYPE, DTYPE_KEY, check_dtype, to_blob
from searchmm.store.database import Database
from searchmm.store.reads import pruned_key
from searchmm.store.records import (
    EncodedImage,
    EncodedText,
    FailedImage,
    FileState,
    ImportCounts,
    ImportedItem,
    StoredModel,
)
from searchmm.store.schema import ChangeRow, EmbeddingRow, ItemRow, MetaRow, ModelRow
from searchmm.store.snapshots import chunks
from searchmm.vocabulary import ChangeOp, Kind, Status

UNFINISHED = -1  # file size and mtime of a text row whose file is still being ingested
_RAISE_PRUNED = text(
    "INSERT INTO meta (key, value) VALUES (:key, :seq) ON CONFLICT (key) DO UPDATE "
    "SET value = excluded.value WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)"
)


def under(path: str, roots: Sequence[str]) -> bool:
    """Whether `path` is one of `roots` or inside one (absolute paths)."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class StoreWrites(Database):
    """The writing half of `Store`."""

    def set_meta(self, key: str, value: str) -> None:
        with self.session() as s, s.begin():
            s.merge(MetaRow(key=key, value=value))

    def set_model(self, model: StoredModel, *, embedding_dtype: str | None = None) -> None:
        """Record the model; a new store also records how it keeps vectors (`blobs`)."""
        with self.session() as s, s.begin():
            s.merge(ModelRow.of(model))
            if embedding_dtype is not None:
                s.merge(MetaRow(key=DTYPE_KEY, value=check_dtype(embedding_dtype)))

    def prune_changes(self, kind: Kind, upto_seq: int) -> None:
        """Forget changes that a saved index already reflects, remembering how far (an index
        older than that must reload or rebuild: it cannot replay what was forgotten)."""
        with self.session() as s, s.begin():
            s.execute(delete(ChangeRow).where(ChangeRow.kind == kind, ChangeRow.seq <= upto_seq))
            s.execute(_RAISE_PRUNED, {"key": pruned_key(kind), "seq": str(upto_seq)})
        self.give_back_free_pages()

    def move_files(self, moves: Sequence[tuple[Sequence[int], FileState]]) -> None:
        """Give items a file's new path, stat and digest (same bytes: no vector changes)."""
        if not moves:
            return
        with self.session() as s, s.begin():
            for ids, file in moves:
                for chunk in chunks(list(ids)):
                    s.execute(
                        update(ItemRow)
                        .where(ItemRow.id.in_(chunk))
                        .values(
                            path=file.path,
                            file_size=file.size,
                            file_mtime_ns=file.mtime_ns,
                            file_digest=file.digest,
                        )
                    )

    def save_images(
        self, encoded: Sequence[EncodedImage], failed: Sequence[FailedImage] = ()
    ) -> None:
        """One batch of image results: vectors stored, failures recorded (their vectors gone).
        New images go in as three multi-row inserts: the ORM's flush per row took 0.8 ms an
        image, which bounded an ingest fed by many GPUs."""
        with self.session() as s, s.begin():
            dtype = _dtype(s)
            fresh = [image for image in encoded if image.replaces is None and image.size]
            if fresh:
                first = _next_item_id(s)
                _insert_new(s, [_new_image(first + n, i, dtype) for n, i in enumerate(fresh)])
            for image in encoded:
                if image.replaces is None and image.size:
                    continue  # inserted above
                row = _image_row(s, image.file, image.replaces)
                if image.size is not None:
                    row.width, row.height = image.size
                elif row.width is None:
                    row.width, row.height = _size_of_source(s, image.file.digest)
                row.status, row.error = Status.OK, None
                s.flush()
                _put_embedding(
                    s, row, to_blob(image.vector, dtype), replaced=image.replaces is not None
                )
            for failure in failed:
                row = _image_row(s, failure.file, failure.replaces)
                row.status, row.error = Status.FAILED, failure.reason
                s.flush()
                _drop_embedding(s, row)

    def update_text_meta(self, updates: Sequence[tuple[int, dict[str, Any] | None]]) -> None:
        """New metadata for text records whose text is unchanged."""
        if not updates:
            return
        with self.session() as s, s.begin():
            for item_id, meta in updates:
                row = s.get(ItemRow, item_id)
                if row is not None:
                    row.meta = meta

    def save_texts(self, path: str, encoded: Sequence[EncodedText]) -> None:
        """One batch of a text file's records. Their file stat reads "unfinished" until
        `finish_text_file`: a crash half way through a file is resumed, not taken as done."""
        with self.session() as s, s.begin():
            dtype = _dtype(s)
            fresh = [record for record in encoded if record.replaces is None]
            if fresh:  # as save_images does: three multi-row inserts
                first = _next_item_id(s)
                _insert_new(s, [_new_text(first + n, path, r, dtype) for n, r in enumerate(fresh)])
            for record in encoded:
                if record.replaces is None:
                    continue  # inserted above
                row = s.get(ItemRow, record.replaces)
                if row is None:
                    row = ItemRow(kind=Kind.TEXT, path=path, locator=record.locator)
                    s.add(row)
                row.text, row.content_digest, row.meta = (
                    record.text,
                    record.content_digest,
                    record.meta,
                )
                row.file_size = row.file_mtime_ns = UNFINISHED
                row.file_digest = None
                row.status, row.error = Status.OK, None
                s.flush()
                blob = to_blob(record.vector, dtype)
                _put_embedding(s, row, blob, replaced=record.replaces is not None)

    def finish_text_file(self, file: FileState) -> None:
        """Mark every record of a text file as ingested from this version of it."""
        with self.session() as s, s.begin():
            s.execute(
                update(ItemRow)
                .where(ItemRow.kind == Kind.TEXT, ItemRow.path == file.path)
                .values(file_size=file.size, file_mtime_ns=file.mtime_ns, file_digest=file.digest)
            )

    def delete_items(self, ids: Iterable[int]) -> int:
        """Delete items with their vectors, logging the removals; returns how many."""
        ids = list(ids)
        removed = 0
        if not ids:
            return 0
        with self.session() as s, s.begin():
            for chunk in chunks(ids):
                embedded = s.execute(
                    select(ItemRow.id, ItemRow.kind)
                    .join(EmbeddingRow, EmbeddingRow.item_id == ItemRow.id)
                    .where(ItemRow.id.in_(chunk))
                ).all()
                s.execute(delete(EmbeddingRow).where(EmbeddingRow.item_id.in_(chunk)))
                s.add_all(ChangeRow(kind=k, item_id=i, op=ChangeOp.REMOVE) for i, k in embedded)
                deleted = s.execute(delete(ItemRow).where(ItemRow.id.in_(chunk)))
                removed += _rowcount(deleted)
        return removed

    def import_items(self, rows: Sequence[ImportedItem]) -> ImportCounts:
        """One batch of imported rows, in one transaction. A row whose item (kind, path,
        locator) is stored already (or came earlier in the batch) changes it only if its vector
        differs: the first description of an item wins. A new one keeps its wanted id when the
        store never gave that id out, else gets the next one. So importing the same rows again,
        or resuming after a crash, gives the same store."""
        counts = ImportCounts()
        with self.session() as s, s.begin():
            known = _known_items(s, rows)
            next_id = _next_item_id(s)
            new_items: list[dict[str, Any]] = []
            dtype = _dtype(s)
            for row in rows:
                blob = to_blob(row.vector, dtype)
                key = (row.kind, row.path, row.locator)
                found = known.get(key)
                if found is None:
                    item_id = row.wanted_id if (row.wanted_id or 0) >= next_id else next_id
                    assert item_id is not None
                    next_id = item_id + 1
                    new_items.append({"id": item_id, **_imported_fields(row), "vector": blob})
                    known[key] = (item_id, _PENDING)  # the batch's later rows of it are kept
                    continue
                item_id, stored_blob = found
                if stored_blob in (_PENDING, blob):
                    counts.unchanged += 1
                    continue
                fields = _imported_fields(row)
                s.execute(update(ItemRow).where(ItemRow.id == item_id).values(**fields))
                s.merge(EmbeddingRow(item_id=item_id, vector=blob))
                s.add(ChangeRow(kind=row.kind, item_id=item_id, op=ChangeOp.UPDATE))
                counts.updated += 1
            if new_items:
                _insert_new(s, new_items)
            counts.added = len(new_items)
            counts.external = sum(1 for r in new_items if r["external"] and r["kind"] == Kind.IMAGE)
        return counts

    def remove_under(self, roots: Sequence[str]) -> int:
        """Delete every item (image file or text record) stored at or under the given paths."""
        with self.session() as s:
            rows = s.execute(select(ItemRow.id, ItemRow.path)).all()
        return self.delete_items(i for i, path in rows if under(path, roots))


_LAST_ITEM_ID = "SELECT seq FROM sqlite_sequence WHERE name = 'items'"


def _next_item_id(s: Session) -> int:
    """The id the store gives out next: above every id it ever gave (ids are FAISS ids)."""
    return int(s.scalar(text(_LAST_ITEM_ID)) or 0) + 1


_PENDING = b""  # the vector of an item this batch inserts (no stored vector is empty)


def _insert_new(s: Session, new_items: list[dict[str, Any]]) -> None:
    """New items (their columns, id included, and "vector"): their rows, vectors, changes."""
    s.execute(insert(ItemRow), [{k: v for k, v in r.items() if k != "vector"} for r in new_items])
    s.execute(
        insert(EmbeddingRow), [{"item_id": r["id"], "vector": r["vector"]} for r in new_items]
    )
    s.execute(
        insert(ChangeRow),
        [{"kind": r["kind"], "item_id": r["id"], "op": ChangeOp.ADD} for r in new_items],
    )


def _new_image(item_id: int, image: EncodedImage, dtype: str) -> dict[str, Any]:
    """The columns of a newly encoded image file, for `_insert_new`."""
    assert image.size is not None, "a copy takes its size from its source"
    return {
        "id": item_id,
        "kind": Kind.IMAGE,
        "path": image.file.path,
        "locator": "",
        "text": None,
        "content_digest": image.file.digest,
        "file_digest": image.file.digest,
        "file_size": image.file.size,
        "file_mtime_ns": image.file.mtime_ns,
        "width": image.size[0],
        "height": image.size[1],
        "status": Status.OK,
        "error": None,
        "meta": null(),
        "external": False,
        "vector": to_blob(image.vector, dtype),
    }


def _new_text(item_id: int, path: str, record: EncodedText, dtype: str) -> dict[str, Any]:
    """The columns of a new text record, for `_insert_new` (its file stat is unfinished)."""
    return {
        "id": item_id,
        "kind": Kind.TEXT,
        "path": path,
        "locator": record.locator,
        "text": record.text,
        "content_digest": record.content_digest,
        "file_digest": None,
        "file_size": UNFINISHED,
        "file_mtime_ns": UNFINISHED,
        "width": None,
        "height": None,
        "status": Status.OK,
        "error": None,
        "meta": record.meta,  # as the ORM writes it
        "external": False,
        "vector": to_blob(record.vector, dtype),
    }


def _imported_fields(row: ImportedItem) -> dict[str, Any]:
    """The item columns an imported row sets (all of them, so that a re-import can compare)."""
    return {
        "kind": row.kind,
        "path": row.path,
        "locator": row.locator,
        "text": row.text,
        "content_digest": row.content_digest,
        "file_digest": row.file_digest,
        "file_size": row.file_size,
        "file_mtime_ns": row.file_mtime_ns,
        "width": row.width,
        "height": row.height,
        "status": Status.OK,
        "error": None,
        "meta": row.meta if row.meta is not None else null(),  # SQL NULL, as ingest leaves it
        "external": row.external,
    }


def _known_items(
    s: Session, rows: Sequence[ImportedItem]
) -> dict[tuple[str, str, str], tuple[int, bytes | None]]:
    """The stored items among the rows' (kind, path, locator): their ids and vectors."""
    wanted = {(r.kind, r.path, r.locator) for r in rows}
    found: dict[tuple[str, str, str], tuple[int, bytes | None]] = {}
    for kind in sorted({k for k, _, _ in wanted}):
        # by kind and path: the unique (kind, path, locator) index answers it (by path alone,
        # SQLite scanned the whole index for every batch: quadratic in the store's size)
        paths = sorted({path for k, path, _ in wanted if k == kind})
        for chunk in chunks(paths):
            stored = s.execute(
                select(ItemRow.id, ItemRow.path, ItemRow.locator, EmbeddingRow.vector)
                .outerjoin(EmbeddingRow, EmbeddingRow.item_id == ItemRow.id)
                .where(ItemRow.kind == kind, ItemRow.path.in_(chunk))
            )
            for item_id, path, locator, blob in stored:
                if (kind, path, locator) in wanted:
                    found[(kind, path, locator)] = (item_id, blob)
    return found


def _image_row(s: Session, file: FileState, replaces: int | None) -> ItemRow:
    row = s.get(ItemRow, replaces) if replaces is not None else None
    if row is None:
        row = ItemRow(kind=Kind.IMAGE, path=file.path, locator="")
        s.add(row)
    row.file_size, row.file_mtime_ns = file.size, file.mtime_ns
    row.file_digest = row.content_digest = file.digest
    return row


def _size_of_source(s: Session, digest: str | None) -> tuple[int | None, int | None]:
    """A copy of a stored image has the source's pixel size."""
    source = s.execute(
        select(ItemRow.width, ItemRow.height).where(
            ItemRow.kind == Kind.IMAGE,
            ItemRow.content_digest == digest,
            ItemRow.status == Status.OK,
            ItemRow.width.is_not(None),
        )
    ).first()
    return (source[0], source[1]) if source else (None, None)


def _dtype(s: Session) -> str:
    """How this store keeps vectors, read in the writing transaction."""
    return s.scalar(select(MetaRow.value).where(MetaRow.key == DTYPE_KEY)) or DEFAULT_DTYPE


def _put_embedding(s: Session, row: ItemRow, blob: bytes, *, replaced: bool) -> None:
    if replaced:
        s.merge(EmbeddingRow(item_id=row.id, vector=blob))
    else:
        s.add(EmbeddingRow(item_id=row.id, vector=blob))
    op = ChangeOp.UPDATE if replaced else ChangeOp.ADD
    s.add(ChangeRow(kind=row.kind, item_id=row.id, op=op))


def _drop_embedding(s: Session, row: ItemRow) -> None:
    result = s.execute(delete(EmbeddingRow).where(EmbeddingRow.item_id == row.id))
    if _rowcount(result):
        s.add(ChangeRow(kind=row.kind, item_id=row.id, op=ChangeOp.REMOVE))


def _rowcount(result: object) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0
