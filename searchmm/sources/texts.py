"""Text collections: .txt lines, .jsonl and .csv records, COCO captions JSON, read strictly.

A file that cannot be read as a whole raises `SourceError` (what was stored from it stays);
single bad records are returned as problems beside the good ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

from searchmm.errors import SearchmmError, SourceError
from searchmm.sources.files import display_path, file_extension, os_reason
from searchmm.sources.scan import TEXT_EXTENSIONS


def text_digest(text: str) -> str:
    """Hash of a text record, so an unchanged caption is not re-encoded."""
    data = text.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class TextRecord:
    """One text to embed; `locator` says where it sits in its file and is stable while it is."""

    locator: str
    text: str
    metadata: dict[str, Any]


@dataclass
class TextCollection:
    """The records of one file plus the records that could not be used and why."""

    records: list[TextRecord]
    problems: list[tuple[str, str]]


def _read_utf8(path: str) -> str:
    """Whole file as text, strictly UTF-8 (BOM allowed): a wrong guess would corrupt the index."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise SourceError(f"{display_path(path)}: cannot read: {os_reason(err)}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise SourceError(
            f"{display_path(path)}: not valid UTF-8 (byte offset {err.start}, line {line}); "
            "re-save the file as UTF-8"
        ) from None


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) for each non-blank physical line."""
    numbered = enumerate(text.split("\n"), start=1)
    return [(n, line.strip()) for n, line in numbered if line.strip()]


def _read_txt(text: str) -> TextCollection:
    return TextCollection([TextRecord(f"line:{n}", line, {}) for n, line in _lines(text)], [])


def _read_jsonl(text: str, text_field: str) -> TextCollection:
    records: list[TextRecord] = []
    problems: list[tuple[str, str]] = []
    for n, line in _lines(text):
        locator = f"line:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append((locator, f"malformed JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(obj, dict):
            problems.append((locator, f"not a JSON object (got {type(obj).__name__})"))
            continue
        value = obj.pop(text_field, None)
        if value is None:
            problems.append((locator, f"no {text_field!r} field"))
        elif not isinstance(value, str):
            problems.append((locator, f"{text_field!r} is not a string"))
        elif not value.strip():
            problems.append((locator, f"empty {text_field!r}"))
        else:
            records.append(TextRecord(locator, value.strip(), obj))
    return TextCollection(records, problems)


def _read_csv(path: str, text: str, text_field: str) -> TextCollection:
    records: list[TextRecord] = []
    problems: list[tuple[str, str]] = []
    # The default field limit (128 KiB) would reject a long caption; raise it for this read only.
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1))
    reader = csv.DictReader(io.StringIO(text, newline=""), restkey="_extra")
    try:
        if reader.fieldnames is None:
            return TextCollection([], [])  # empty file
        if text_field not in reader.fieldnames:
            raise SourceError(
                f"{display_path(path)}: no {text_field!r} column; columns found: "
                f"{', '.join(reader.fieldnames) or '(none)'}"
            )
        for row_number, row in enumerate(reader, start=1):
            locator = f"row:{row_number}"
            value = row.pop(text_field, None)
            if value is None or not value.strip():
                problems.append((locator, f"empty {text_field!r} cell"))
                continue
            records.append(TextRecord(locator, value.strip(), row))
    except csv.Error as err:
        raise SourceError(
            f"{display_path(path)}: malformed CSV at line {reader.line_num}: {err}"
        ) from None
    finally:
        csv.field_size_limit(old_limit)
    return TextCollection(records, problems)


def _read_coco(path: str, text: str) -> TextCollection:
    expected = (
        "expected COCO captions JSON: an object with 'images' [{id, file_name}] and "
        "'annotations' [{id, image_id, caption}]"
    )
    if not text.strip():
        return TextCollection([], [])
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SourceError(
            f"{display_path(path)}: not valid JSON ({err.msg} at line {err.lineno}, "
            f"column {err.colno}); {expected}"
        ) from None
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("images"), list)
        or not isinstance(doc.get("annotations"), list)
    ):
        raise SourceError(f"{display_path(path)}: {expected}")
    file_names: dict[Any, Any] = {
        img["id"]: img.get("file_name")
        for img in doc["images"]
        if isinstance(img, dict) and isinstance(img.get("id"), (int, str))
    }
    records: list[TextRecord] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for position, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            problems.append((f"annotations[{position}]", "annotation without an 'id'"))
            continue
        locator = f"ann:{ann['id']}"
        caption = ann.get("caption")
        if locator in seen:
            problems.append((locator, "duplicate annotation id"))
        elif "image_id" not in ann:
            problems.append((locator, "no 'image_id' field"))
        elif not isinstance(ann["image_id"], (int, str)):
            problems.append((locator, "'image_id' is not an integer or string"))
        elif caption is None:
            problems.append((locator, "no 'caption' field"))
        elif not isinstance(caption, str) or not caption.strip():
            problems.append((locator, "'caption' is empty or not a string"))
        else:
            seen.add(locator)
            metadata = {
                "image_id": ann["image_id"],
                "file_name": file_names.get(ann["image_id"]),
                "annotation_id": ann["id"],
            }
            records.append(TextRecord(locator, caption.strip(), metadata))
    return TextCollection(records, problems)


def read_text_collection(path: str, *, text_field: str = "text") -> TextCollection:
    """Read one .txt/.jsonl/.csv/COCO .json file; bad records are reported, not fatal."""
    if not isinstance(text_field, str) or not text_field:
        raise SearchmmError("text_field must be a non-empty string")
    ext = file_extension(path)
    if ext not in TEXT_EXTENSIONS:
        raise SourceError(
            f"{display_path(path)}: not a text collection; supported: "
            f"{', '.join(sorted(TEXT_EXTENSIONS))}"
        )
    text = _read_utf8(path)
    if ext == ".txt":
        return _read_txt(text)
    if ext == ".jsonl":
        return _read_jsonl(text, text_field)
    if ext == ".csv":
        return _read_csv(path, text, text_field)
    return _read_coco(path, text)
