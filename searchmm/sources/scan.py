"""Discovering what to index: image files and text collection files on disk.

Nothing here decodes pixels; the ingest diffs these listings against the store, so a root that
is missing must fail loudly rather than look like "everything was deleted".
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from searchmm.errors import SourceError
from searchmm.sources.files import display_path, file_extension, os_reason

IMAGE_EXTENSIONS_BASE = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)
TEXT_EXTENSIONS = frozenset({".txt", ".jsonl", ".csv", ".json"})

# Call `progress` after this many newly found files, so a bar moves without a call per file.
_PROGRESS_EVERY = 256


@functools.cache
def image_extensions() -> frozenset[str]:
    """The base set plus HEIC/HEIF and AVIF when this install can actually decode them."""
    exts = set(IMAGE_EXTENSIONS_BASE)
    try:
        import pillow_heif

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
        ext, entry = file_extension(path), FileEntry(path, st.st_size, st.st_mtime_ns)
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
                self.problems[directory] = os_reason(err)
                continue
            subdirs: list[tuple[str, os.stat_result]] = []
            for entry in entries:
                if not self.include_hidden and entry.name.startswith("."):
                    continue
                self._visit(entry, subdirs)
            # Reverse so the stack pops subdirectories in name order.
            stack.extend(sorted(subdirs, key=lambda d: d[0], reverse=True))

    def _visit(self, entry: os.DirEntry[str], subdirs: list[tuple[str, os.stat_result]]) -> None:
        ext = file_extension(entry.name)
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
            self.problems[entry.path] = os_reason(err)
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
        raise SourceError(f"{shown}: cannot access: {os_reason(err)}") from None
    if stat.S_ISDIR(st.st_mode):
        return abspath, st
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"{shown}: not a regular file or directory")
    ext = file_extension(abspath)
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
