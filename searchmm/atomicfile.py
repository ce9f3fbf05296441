"""Atomic file replacement: readers see the old file or the new one, never a part of either.

The data goes to a temporary file in the target's folder (a rename is atomic only within one
file system), is fsynced, renamed over the target, and the folder is fsynced so the rename
survives a power cut. On any failure the temporary file is removed and the target untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".tmp-"


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path`, matched by `leftover_temps(path)`."""
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")


def leftover_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Temporary files of `path` left by a writer killed mid-write (only safe to delete while
    no other writer of `path` can be running)."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.name}{TEMP_MARK}*"))


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary file to write; on a clean exit it replaces `path`, on an exception nothing does.

    The file is created with the usual permissions (0o666 less the umask), like `open`.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_write(path) as f:
        f.write(data)


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable; folders cannot be opened on Windows, where this is skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
