"""The ingest's decisions, as pure functions of what is on disk and what is stored.

One diff serves image files and text files alike: a "file" is a path with its stored items
(one for an image, one per record for a text file). Per file it decides:

    unchanged      same size and mtime (a file that failed before is reported, not re-read)
    touched        new stat, same bytes (digest): only the stat is updated
    renamed        a new path whose digest is that of a stored file now gone: items move
    encode         new or changed bytes: decode and encode (or copy vectors by content)
    remove         stored under a scanned root, not found by the scan, and gone from disk

A text file to encode is then diffed record by record (`diff_records`) by locator and text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from searchmm.sources.files import os_reason
from searchmm.sources.scan import FileEntry
from searchmm.sources.texts import TextRecord, text_digest
from searchmm.store.records import FileState, Item
from searchmm.store.writes import under
from searchmm.vocabulary import Status


@dataclass(frozen=True)
class StoredFile:
    """A path as the store holds it: its items (all from this one file)."""

    path: str
    items: tuple[Item, ...]

    @property
    def digest(self) -> str | None:
        return self.items[0].file_digest

    @property
    def ok(self) -> bool:
        return all(item.status == Status.OK for item in self.items)

    @property
    def error(self) -> str:
        return next((i.error for i in self.items if i.error), None) or "failed before"

    @property
    def external(self) -> bool:
        """Imported, its file on another machine: never taken as gone."""
        return all(item.external for item in self.items)

    def same_stat(self, entry: FileEntry) -> bool:
        return all(
            (i.file_size, i.file_mtime_ns) == (entry.size, entry.mtime_ns) for i in self.items
        )


def stored_files(items: Iterable[Item]) -> dict[str, StoredFile]:
    """Items grouped by the file they came from, by path."""
    by_path: dict[str, list[Item]] = {}
    for item in items:
        by_path.setdefault(item.path, []).append(item)
    return {path: StoredFile(path, tuple(group)) for path, group in by_path.items()}


@dataclass(frozen=True)
class Move:
    """Items that stay as they are, at a new path or stat (same bytes)."""

    stored: StoredFile
    file: FileState


@dataclass(frozen=True)
class Encode:
    """A file whose bytes are new or changed; `stored` is what it replaces, if anything."""

    entry: FileEntry
    stored: StoredFile | None
    digest: str

    @property
    def file(self) -> FileState:
        return FileState(self.entry.path, self.entry.size, self.entry.mtime_ns, self.digest)


@dataclass
class FilePlan:
    unchanged: list[StoredFile] = field(default_factory=list)
    failed_before: list[tuple[FileEntry, str]] = field(default_factory=list)
    unreadable: list[tuple[FileEntry, str]] = field(default_factory=list)
    touched: list[Move] = field(default_factory=list)
    renamed: list[Move] = field(default_factory=list)
    encode: list[Encode] = field(default_factory=list)
    remove: list[StoredFile] = field(default_factory=list)


def needs_digest(entries: Sequence[FileEntry], stored: Mapping[str, StoredFile]) -> list[str]:
    """Paths whose stat differs from the store's: only these are read to compute a digest."""
    return [e.path for e in entries if e.path not in stored or not stored[e.path].same_stat(e)]


def plan_files(
    entries: Sequence[FileEntry],
    stored: Mapping[str, StoredFile],
    roots: Sequence[str],
    digests: Mapping[str, str | OSError],
    exists: Callable[[str], bool],
) -> FilePlan:
    """Decide what to do with each scanned and each stored file.

    `digests` holds (at least) the paths `needs_digest` named; `exists` says whether a stored
    path not found by the scan is still on disk (then it is not gone: it was only not listed).
    """
    plan = FilePlan()
    seen = {e.path for e in entries}
    gone = [
        f
        for p, f in stored.items()
        if p not in seen and under(p, roots) and not f.external and not exists(p)
    ]
    gone_by_digest = {f.digest: f for f in gone if f.ok and f.digest}
    for entry in entries:
        known = stored.get(entry.path)
        if known is not None and known.same_stat(entry):
            if known.ok:
                plan.unchanged.append(known)
            else:
                plan.failed_before.append((entry, known.error))
            continue
        digest = digests[entry.path]
        if isinstance(digest, OSError):
            plan.unreadable.append((entry, os_reason(digest)))
            continue
        state = FileState(entry.path, entry.size, entry.mtime_ns, digest)
        if known is not None and known.ok and known.digest == digest:
            plan.touched.append(Move(known, state))
        elif known is None and digest in gone_by_digest:
            plan.renamed.append(Move(gone_by_digest.pop(digest), state))
        else:
            plan.encode.append(Encode(entry, known, digest))
    moved = {move.stored.path for move in plan.renamed}
    plan.remove = [f for f in gone if f.path not in moved]
    return plan


@dataclass(frozen=True)
class RecordTodo:
    """A text record to encode (or copy a vector for); `item` is the stored record it updates."""

    record: TextRecord
    item: Item | None
    content_digest: str


@dataclass
class RecordPlan:
    keep: list[tuple[Item, TextRecord]] = field(default_factory=list)  # same text: same vector
    encode: list[RecordTodo] = field(default_factory=list)
    drop: list[Item] = field(default_factory=list)  # records no longer in the file


def diff_records(stored: Sequence[Item], records: Sequence[TextRecord]) -> RecordPlan:
    """A changed text file's records against the stored ones, by locator, then text."""
    by_locator = {item.locator: item for item in stored}
    plan = RecordPlan()
    for record in records:
        item = by_locator.pop(record.locator, None)
        content = text_digest(record.text)
        if item is not None and item.content_digest == content:
            plan.keep.append((item, record))
        else:
            plan.encode.append(RecordTodo(record, item, content))
    plan.drop = list(by_locator.values())
    return plan
