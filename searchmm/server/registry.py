"""Which `searchmm serve` is serving an index directory: `<index dir>/.server.json`.

The server writes it once it listens and removes it when it stops; a client (`searchmm query`)
reads it to send its query there instead of loading a model. A record whose process is gone is
stale and ignored. Nothing here imports more than the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from searchmm.processes import alive

RECORD_FILENAME = ".server.json"


@dataclass(frozen=True)
class ServerRecord:
    pid: int
    url: str  # http://127.0.0.1:PORT: a loopback address this machine's clients can reach
    token: str | None = None  # the server's token, if it has one (the file is then 0600)


def record_path(index_dir: Path) -> Path:
    return index_dir / RECORD_FILENAME


def announce(index_dir: Path, record: ServerRecord) -> None:
    """Best effort: without a record (no index yet, a read-only folder) clients answer locally."""
    from searchmm.atomicfile import write_bytes_atomic

    data = (json.dumps(asdict(record)) + "\n").encode()
    with contextlib.suppress(OSError):
        write_bytes_atomic(record_path(index_dir), data)
        if record.token is not None:
            os.chmod(record_path(index_dir), 0o600)


def withdraw(index_dir: Path, pid: int) -> None:
    """Remove the record if it is this process's (another server may have announced since)."""
    found = _read(index_dir)
    if found is not None and found.pid == pid:
        with contextlib.suppress(OSError):
            record_path(index_dir).unlink()


def running_server(index_dir: Path) -> ServerRecord | None:
    """The server announced for `index_dir`, if its process is alive."""
    found = _read(index_dir)
    return found if found is not None and alive(found.pid) else None


def _read(index_dir: Path) -> ServerRecord | None:
    try:
        data = json.loads(record_path(index_dir).read_text(encoding="utf-8"))
        token = data.get("token")
        return ServerRecord(int(data["pid"]), str(data["url"]), str(token) if token else None)
    except (OSError, ValueError, KeyError, TypeError):
        return None
