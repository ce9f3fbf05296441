"""A checkpoint's content digest, remembered on this machine by the file's path and state.

A model is identified by its checkpoint's content, but hashing a 600 MB file costs 0.7 s on
every command that names it. The digest is kept per file with the (size, mtime, inode) it was
taken at, as ingest does for photos: a file whose state changed is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from searchmm.atomicfile import write_bytes_atomic
from searchmm.settings import cache_dir
from searchmm.sources.files import file_digest


def _state(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _record_path(path: Path) -> Path:
    name = hashlib.blake2b(str(path).encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()
    return cache_dir() / "digests" / f"{name}.json"


def checkpoint_digest(path: Path) -> str:
    """The content digest of the file at `path` (absolute); raises OSError if unreadable."""
    before = _state(path)
    record = _record_path(path)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads(record.read_text(encoding="utf-8"))
        if data["path"] == str(path) and data["state"] == before:
            return str(data["digest"])
    digest = file_digest(str(path))
    if _state(path) == before:  # not remembered if the file changed while it was hashed
        with contextlib.suppress(OSError):
            record.parent.mkdir(parents=True, exist_ok=True)
            entry = {"path": str(path), "state": before, "digest": digest}
            write_bytes_atomic(record, json.dumps(entry).encode("utf-8"))
    return digest
