"""The ingest plan: the same pure diff decides for image files and text files (no model, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from searchmm.ingest.plan import (
    FilePlan,
    diff_records,
    needs_digest,
    plan_files,
    stored_files,
)
from searchmm.sources.scan import FileEntry
from searchmm.sources.texts import TextRecord, text_digest
from searchmm.store.records import FileState, Item
from searchmm.vocabulary import Kind, Status

ROOT = "/photos"
_ids = iter(range(1, 10_000))


def item(
    path: str,
    kind: Kind,
    *,
    digest: str | None = "d1",
    size: int = 10,
    mtime: int = 100,
    status: Status = Status.OK,
    error: str | None = None,
    locator: str = "",
    text: str | None = None,
) -> Item:
    return Item(
        id=next(_ids), kind=kind, path=path, locator=locator, text=text,
        content_digest=text_digest(text) if text is not None else digest, file_digest=digest,
        file_size=size, file_mtime_ns=mtime, width=None, height=None, status=status,
        error=error, meta=None,
    )  # fmt: skip


def items_of(kind: Kind, path: str, **kw: Any) -> list[Item]:
    """An image file's one item, or a text file's two records."""
    if kind is Kind.IMAGE:
        return [item(path, kind, **kw)]
    return [item(path, kind, locator=f"line:{n}", text=f"text {n}", **kw) for n in (1, 2)]


def plan(
    kind: Kind,
    entries: list[FileEntry],
    stored: list[Item],
    digests: dict[str, str | OSError],
    on_disk: frozenset[str] = frozenset(),
) -> FilePlan:
    assert all(i.kind is kind for i in stored)
    files = stored_files(stored)
    for path in needs_digest(entries, files):
        assert path in digests, f"{path} needs a digest the test did not give"
    return plan_files(entries, files, [ROOT], digests, lambda p: p in on_disk)


@pytest.fixture(params=[Kind.IMAGE, Kind.TEXT])
def kind(request: pytest.FixtureRequest) -> Kind:
    return Kind(request.param)


def test_new_file_is_encoded(kind: Kind) -> None:
    entry = FileEntry(f"{ROOT}/a", 10, 100)
    p = plan(kind, [entry], [], {entry.path: "d1"})
    assert [(e.entry, e.stored, e.digest) for e in p.encode] == [(entry, None, "d1")]
    assert not (p.unchanged or p.touched or p.renamed or p.remove)


def test_unchanged_file_is_not_read(kind: Kind) -> None:
    stored = items_of(kind, f"{ROOT}/a")
    entry = FileEntry(f"{ROOT}/a", 10, 100)
    assert needs_digest([entry], stored_files(stored)) == []
    p = plan(kind, [entry], stored, {})
    assert [f.items for f in p.unchanged] == [tuple(stored)]
    assert not (p.encode or p.touched or p.remove)


def test_touched_file_only_gets_its_new_stat(kind: Kind) -> None:
    stored = items_of(kind, f"{ROOT}/a")
    entry = FileEntry(f"{ROOT}/a", 10, 999)
    p = plan(kind, [entry], stored, {entry.path: "d1"})
    assert [(m.stored.items, m.file) for m in p.touched] == [
        (tuple(stored), FileState(entry.path, 10, 999, "d1"))
    ]
    assert not (p.encode or p.renamed or p.remove)


def test_renamed_file_keeps_its_items(kind: Kind) -> None:
    stored = items_of(kind, f"{ROOT}/old")
    entry = FileEntry(f"{ROOT}/new", 10, 100)
    p = plan(kind, [entry], stored, {entry.path: "d1"})
    assert [(m.stored.path, m.file.path) for m in p.renamed] == [(f"{ROOT}/old", entry.path)]
    assert not (p.encode or p.remove)


def test_copy_of_stored_content_is_encoded_as_new(kind: Kind) -> None:
    """A copy (the original still there) is new: its executor reuses the vector by digest."""
    stored = items_of(kind, f"{ROOT}/a")
    entries = [FileEntry(f"{ROOT}/a", 10, 100), FileEntry(f"{ROOT}/copy", 10, 100)]
    p = plan(kind, entries, stored, {f"{ROOT}/copy": "d1"})
    assert [(e.entry.path, e.stored, e.digest) for e in p.encode] == [(f"{ROOT}/copy", None, "d1")]
    assert len(p.unchanged) == 1 and not p.renamed and not p.remove


def test_changed_file_is_encoded_over_its_items(kind: Kind) -> None:
    stored = items_of(kind, f"{ROOT}/a")
    entry = FileEntry(f"{ROOT}/a", 11, 200)
    p = plan(kind, [entry], stored, {entry.path: "d2"})
    assert [(e.stored.items if e.stored else None, e.digest) for e in p.encode] == [
        (tuple(stored), "d2")
    ]


def test_removed_file_is_removed_only_when_gone_from_disk(kind: Kind) -> None:
    gone = items_of(kind, f"{ROOT}/gone")
    unlisted = items_of(kind, f"{ROOT}/still-there", digest="d2")  # e.g. in an unreadable folder
    elsewhere = items_of(kind, "/other-root/x", digest="d3")  # not under a scanned root
    p = plan(kind, [], gone + unlisted + elsewhere, {}, on_disk=frozenset({f"{ROOT}/still-there"}))
    assert [f.path for f in p.remove] == [f"{ROOT}/gone"]


def test_vanished_root_prefix_is_not_a_parent() -> None:
    """`/photos-old` is not under the root `/photos`: its items are not counted as gone."""
    stored = items_of(Kind.IMAGE, "/photos-old/a")
    assert plan(Kind.IMAGE, [], stored, {}).remove == []


def test_unreadable_file_is_reported_and_kept(kind: Kind) -> None:
    stored = items_of(kind, f"{ROOT}/a")
    entry = FileEntry(f"{ROOT}/a", 11, 200)
    p = plan(kind, [entry], stored, {entry.path: PermissionError(13, "Permission denied")})
    assert [e.path for e, _ in p.unreadable] == [entry.path]
    assert "ermission" in p.unreadable[0][1]
    assert not (p.encode or p.remove)


def test_unchanged_bad_file_is_not_decoded_again() -> None:
    stored = [item(f"{ROOT}/bad.jpg", Kind.IMAGE, status=Status.FAILED, error="not an image")]
    entry = FileEntry(f"{ROOT}/bad.jpg", 10, 100)
    p = plan(Kind.IMAGE, [entry], stored, {})
    assert p.failed_before == [(entry, "not an image")]
    assert not (p.encode or p.unchanged)


def test_changed_bad_file_is_tried_again_and_never_renamed_onto() -> None:
    bad = item(f"{ROOT}/bad.jpg", Kind.IMAGE, status=Status.FAILED, error="not an image")
    gone_bad = item(f"{ROOT}/gone-bad.jpg", Kind.IMAGE, digest="d9", status=Status.FAILED)
    entries = [FileEntry(f"{ROOT}/bad.jpg", 12, 300), FileEntry(f"{ROOT}/new.jpg", 10, 100)]
    p = plan(Kind.IMAGE, entries, [bad, gone_bad], {e.path: "d9" for e in entries})
    assert [e.entry.path for e in p.encode] == [f"{ROOT}/bad.jpg", f"{ROOT}/new.jpg"]
    assert [f.path for f in p.remove] == [f"{ROOT}/gone-bad.jpg"] and not p.renamed


def test_half_ingested_text_file_is_read_again() -> None:
    """Rows of a file a crash interrupted have an unfinished stat and no file digest."""
    stored = [item(f"{ROOT}/t.txt", Kind.TEXT, digest=None, size=-1, mtime=-1, text="x")]
    entry = FileEntry(f"{ROOT}/t.txt", 10, 100)
    p = plan(Kind.TEXT, [entry], stored, {entry.path: "d1"})
    assert [e.entry.path for e in p.encode] == [entry.path]


def test_text_records_are_diffed_by_locator_then_text() -> None:
    same = item("/t.txt", Kind.TEXT, locator="line:1", text="kept")
    edited = item("/t.txt", Kind.TEXT, locator="line:2", text="before")
    dropped = item("/t.txt", Kind.TEXT, locator="line:3", text="dropped")
    records = [
        TextRecord("line:1", "kept", {"a": 1}),
        TextRecord("line:2", "after", {}),
        TextRecord("line:4", "brand new", {}),
    ]
    diff = diff_records([same, edited, dropped], records)
    assert diff.keep == [(same, records[0])]
    assert [(t.record.locator, t.item, t.content_digest) for t in diff.encode] == [
        ("line:2", edited, text_digest("after")),
        ("line:4", None, text_digest("brand new")),
    ]
    assert diff.drop == [dropped]
