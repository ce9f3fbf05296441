"""Discovering what to index: image files on disk, text collections, and content fingerprints.

Nothing here decodes pixels; the ingest diffs these listings against the store, so a root that
is missing must fail loudly rather than look like "everything was deleted".
"""

from __future__ import annotations

import csv
import errno
import functools
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from searchmm.errors import SearchmmError, SourceError

IMAGE_EXTENSIONS_BASE = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
TEXT_EXTENSIONS = frozenset({".txt", ".jsonl", ".csv", ".json"})

_CHUNK = 1 << 20
# Call `progress` after this many newly found files, so a bar moves without a call per file.
_PROGRESS_EVERY = 256


@functools.cache
def image_extensions() -> frozenset[str]:
    """The base set plus HEIC/HEIF and AVIF when this install can actually decode them."""
    exts = set(IMAGE_EXTENSIONS_BASE)
    try:
        import pillow_heif  # type: ignore[import-not-found]

        pillow_heif.register_heif_opener()
        exts.update({".heic", ".heif"})
    except Exception:  # not installed, or a broken build: simply not offered
        pass
    try:
        from PIL import Image, features

        if features.check("avif") and ".avif" in Image.registered_extensions():
            exts.add(".avif")
    except Exception:
        pass
    return frozenset(exts)


def display_path(path: str) -> str:
    """A printable form of a path whose name may hold undecodable bytes (surrogate escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class FileEntry:
    """One file found on disk; size and mtime let the ingest skip unchanged files cheaply."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """What a scan found, plus the paths it could not use and why (never an exception)."""

    images: list[FileEntry]
    texts: list[FileEntry]
    problems: list[tuple[str, str]]


def _ext(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _os_reason(err: OSError) -> str:
    """A short human reason for an OSError met while walking or reading."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return "vanished while scanning"
    if err.errno == errno.ELOOP:  # a symlink that (eventually) points at itself
        return "symlink loop"
    return err.strerror or str(err)


class _Walker:
    """One scan's state: what was found, what went wrong, and which directories were entered."""

    def __init__(
        self,
        include_hidden: bool,
        texts_in_folders: bool,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.include_hidden = include_hidden
        self.texts_in_folders = texts_in_folders
        self.progress = progress
        self.images: dict[str, FileEntry] = {}
        self.texts: dict[str, FileEntry] = {}
        self.problems: dict[str, str] = {}
        self.visited: set[tuple[int, int]] = set()
        self.image_exts = image_extensions()
        self._reported = 0

    def tick(self, final: bool = False) -> None:
        n = len(self.images) + len(self.texts)
        if self.progress is not None and (n - self._reported >= _PROGRESS_EVERY or final):
            self._reported = n
            self.progress(n)

    def add_file(self, path: str, st: os.stat_result) -> None:
        ext, entry = _ext(path), FileEntry(path, st.st_size, st.st_mtime_ns)
        if ext in self.image_exts:
            self.images.setdefault(path, entry)
        elif ext in TEXT_EXTENSIONS:
            self.texts.setdefault(path, entry)
        self.tick()

    def walk(self, root: str, root_stat: os.stat_result) -> None:
        """Depth-first walk following symlinks, entering each (device, inode) directory once.

        A directory reachable by several paths is listed under the first path met.
        """
        stack = [(root, root_stat)]
        while stack:
            directory, dst = stack.pop()
            key = (dst.st_dev, dst.st_ino)
            if key in self.visited:
                continue
            self.visited.add(key)
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError as err:
                self.problems[directory] = _os_reason(err)
                continue
            subdirs = []
            for entry in entries:
                if not self.include_hidden and entry.name.startswith("."):
                    continue
                self._visit(entry, subdirs)
            # Reverse so the stack pops subdirectories in name order.
            stack.extend(sorted(subdirs, key=lambda d: d[0], reverse=True))

    def _visit(self, entry: os.DirEntry[str], subdirs: list[tuple[str, os.stat_result]]) -> None:
        ext = _ext(entry.name)
        wanted = ext in self.image_exts or (self.texts_in_folders and ext in TEXT_EXTENSIONS)
        try:
            is_link = entry.is_symlink()
            # Plain files of no interest are skipped without a stat call.
            if not is_link and not wanted and not entry.is_dir(follow_symlinks=False):
                return
            st = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            if entry.is_symlink():
                self.problems[entry.path] = "broken symlink"
            return  # else: deleted between listing and stat, nothing to report
        except OSError as err:
            self.problems[entry.path] = _os_reason(err)
            return
        if stat.S_ISDIR(st.st_mode):
            subdirs.append((entry.path, st))
        elif wanted:
            if stat.S_ISREG(st.st_mode):
                self.add_file(entry.path, st)
            else:
                self.problems[entry.path] = "not a regular file"


def check_root(path: str | os.PathLike[str]) -> tuple[str, os.stat_result]:
    """Resolve one given path to (abspath, stat) or raise, before anything is scanned."""
    given = os.fsdecode(os.fspath(path))
    shown = display_path(given)
    abspath = os.path.abspath(given)
    try:
        st = os.stat(abspath)
    except FileNotFoundError:
        raise SourceError(f"{shown}: no such file or directory") from None
    except OSError as err:
        raise SourceError(f"{shown}: cannot access: {_os_reason(err)}") from None
    if stat.S_ISDIR(st.st_mode):
        return abspath, st
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{shown}: not a regular file or directory")
    ext = _ext(abspath)
    if ext not in image_extensions() and ext not in TEXT_EXTENSIONS:
        raise SourceError(
            f"{shown}: unsupported file type {ext or '(no extension)'!r}; supported images: "
            f"{', '.join(sorted(image_extensions()))}; text collections: "
            f"{', '.join(sorted(TEXT_EXTENSIONS))}"
        )
    return abspath, st


def scan(
    paths: Sequence[str | os.PathLike[str]],
    *,
    include_hidden: bool = False,
    texts_in_folders: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """List images and text collections under `paths`; unusable entries become `problems`."""
    roots = [check_root(p) for p in paths]  # every root checked before any walking
    walker = _Walker(include_hidden, texts_in_folders, progress)
    for abspath, st in roots:
        if stat.S_ISDIR(st.st_mode):
            walker.walk(abspath, st)
        else:
            walker.add_file(abspath, st)  # explicit files are taken even when hidden
    walker.tick(final=True)
    return ScanResult(
        images=sorted(walker.images.values(), key=lambda e: e.path),
        texts=sorted(walker.texts.values(), key=lambda e: e.path),
        problems=sorted(walker.problems.items()),
    )


def file_digest(path: str) -> str:
    """Content hash, so a renamed or touched-but-unchanged file keeps its embedding."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_files(paths: Sequence[str], threads: int = 4) -> dict[str, str | OSError]:
    """Hash many files in threads (hashing releases the GIL); errors are returned, not raised."""

    def one(path: str) -> str | OSError:
        try:
            return file_digest(path)
        except OSError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))


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
        reason = "file vanished" if isinstance(err, FileNotFoundError) else _os_reason(err)
        raise SourceError(f"{display_path(path)}: cannot read: {reason}") from None
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
    ext = _ext(path)
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
