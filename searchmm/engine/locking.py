"""One writer per index directory: a lock file that dies with its holder.

The lock is an OS file lock (flock), so a writer that is killed (SIGKILL, out of memory) leaves
nothing to clean up: the next writer gets the lock at once. filelock 4 detaches the lock's
descriptor in forked children, so decode workers that outlive a killed ingest for a few seconds
do not keep it (tests/test_reliability_crashes.py restarts at once after each kill).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from searchmm.errors import Hint, LockedError

LOCK_FILENAME = ".write.lock"


@contextlib.contextmanager
def write_lock(index_dir: Path, wait: float = 0.0) -> Iterator[None]:
    """Hold the write lock, waiting up to `wait` seconds for another writer, else refuse."""
    from filelock import FileLock, Timeout

    index_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(index_dir / LOCK_FILENAME)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise LockedError(
            f"another searchmm process is writing to {index_dir}; wait for it to finish",
            hint=Hint.WAIT_FOR_LOCK,
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def write_lock_if_free(index_dir: Path) -> Iterator[bool]:
    """Hold the write lock only if nobody does (a reader saving an index it caught up)."""
    from filelock import FileLock, Timeout

    lock = FileLock(index_dir / LOCK_FILENAME)
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
