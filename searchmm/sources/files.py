"""Files as the ingest sees them: content digests, the state a file is in, and why it failed.

Reasons are short human strings, stored with a failed item and shown in a summary; the
transient ones (a file that moved under our feet) are reported but never stored.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

_CHUNK = 1 << 20
# Reasons for a file that moved under our feet: reported, but nothing is stored for them (the
# next ingest sees the file as it is then), unlike a file that is bad and stays bad.
FILE_VANISHED = "file vanished"
FILE_CHANGED = "file changed while it was being read; the next ingest will read it again"
NOT_ON_WORKER = (
    "not readable by the Ray worker that was to decode it, though it is here: the workers "
    "must see the same paths (a shared filesystem)"
)
TRANSIENT_REASONS = frozenset({FILE_VANISHED, FILE_CHANGED, NOT_ON_WORKER})


def display_path(path: str) -> str:
    """A printable form of a path whose name may hold undecodable bytes (surrogate escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def file_extension(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def os_reason(err: OSError) -> str:
    """A short human reason for an OSError met while walking or reading."""
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, FileNotFoundError):
        return FILE_VANISHED
    if err.errno == errno.ELOOP:  # a symlink that (eventually) points at itself
        return "symlink loop"
    return err.strerror or str(err)


def file_state(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file now, None if it is gone: compared with a scan's entry, it
    tells whether what was just read is still the version that was scanned."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def file_digest(path: str) -> str:
    """Content hash, so a renamed or touched-but-unchanged file keeps its embedding."""
    h = _content_hash()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def bytes_digest(data: bytes) -> str:
    """`file_digest` of a file's bytes held in memory."""
    h = _content_hash()
    h.update(data)
    return h.hexdigest()


def _content_hash() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


def digest_files(paths: Sequence[str], threads: int = 4) -> dict[str, str | OSError]:
    """Hash many files in threads (hashing releases the GIL); errors are returned, not raised."""

    def one(path: str) -> str | OSError:
        try:
            return file_digest(path)
        except OSError as err:
            return err

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))
