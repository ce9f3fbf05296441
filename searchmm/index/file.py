"""The index file format: header, FAISS data and end marker in one file, written atomically.

    MAGIC | header length (4 bytes, little-endian) | header JSON | FAISS index | TRAILER

The header says which store change the index reflects; the end marker is checked before
anything else is trusted, so a truncated file is detected rather than half read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

from searchmm.atomicfile import atomic_write
from searchmm.errors import IndexFileError
from searchmm.index.faisslib import faiss_reason, load_faiss
from searchmm.vocabulary import KINDS

MAGIC = b"SEARCHMM-FAISS\n"
TRAILER = b"SMMEND\x00\x00"
FORMAT = 1


@dataclass
class IndexHeader:
    """What an index file reflects; stored inside the same file so the two cannot drift apart."""

    kind: str
    dim: int
    spec: str
    seq: int
    count: int
    format: int = FORMAT
    # the IVF quantiser's residuals (`drift`); files written before they were kept lack them
    drift_trained: float | None = None
    drift_added_sum: float = 0.0
    drift_added: int = 0

    def __post_init__(self) -> None:
        ints = (self.dim, self.seq, self.count, self.format, self.drift_added)
        if self.kind not in KINDS or not isinstance(self.spec, str):
            kinds = ", ".join(KINDS)
            raise ValueError(f"bad header: kind {self.kind!r} (one of {kinds}), spec {self.spec!r}")
        if not all(type(v) is int and v >= 0 for v in ints):
            raise ValueError(f"bad header: dim/seq/count/format must be ints >= 0, got {ints}")


def write_index_file(path: str | os.PathLike[str], index: Any, header: IndexHeader) -> None:
    """Write atomically (readers see the old or the new file); FAISS streams straight into
    the file, so a large index is never held twice in memory."""
    faiss = load_faiss()
    header = dataclasses.replace(header, format=FORMAT)
    payload = json.dumps(dataclasses.asdict(header), sort_keys=True).encode("utf-8")
    with atomic_write(path) as f:
        f.write(MAGIC + struct.pack("<I", len(payload)) + payload)
        faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))
        f.write(TRAILER)


def read_index_file(path: str | os.PathLike[str]) -> tuple[Any, IndexHeader]:
    """(FAISS index, header); missing: FileNotFoundError; damaged: IndexFileError."""
    load_faiss()  # a missing FAISS is not a damaged file
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            return _read(f)
        except Exception as exc:
            raise IndexFileError(f"{path}: {faiss_reason(exc)}") from exc


def _read(f: Any) -> tuple[Any, IndexHeader]:
    """Parse an open index file, checking the end marker before trusting anything in it."""
    faiss = load_faiss()
    size = os.fstat(f.fileno()).st_size
    data_end = size - len(TRAILER)
    if size < len(MAGIC) + 4 + len(TRAILER):
        raise ValueError(f"truncated ({size} bytes)")
    f.seek(data_end)
    if f.read(len(TRAILER)) != TRAILER:
        raise ValueError("no end marker: truncated, or not a searchmm index file")
    f.seek(0)
    if f.read(len(MAGIC)) != MAGIC:
        raise ValueError("not a searchmm index file (bad magic)")
    (length,) = struct.unpack("<I", f.read(4))
    if len(MAGIC) + 4 + length > data_end:
        raise ValueError("header length runs past the end of the file")
    meta = json.loads(f.read(length).decode("utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"header is not a format-{FORMAT} JSON object")
    header = IndexHeader(**meta)
    remaining = data_end - f.tell()

    def read(n: int) -> bytes:  # FAISS must never read into the end marker
        nonlocal remaining
        chunk: bytes = f.read(min(n, remaining))
        remaining -= len(chunk)
        return chunk

    index = faiss.read_index(faiss.PyCallbackIOReader(read))
    if remaining:
        raise ValueError(f"{remaining} unread bytes after the FAISS data")
    if (index.d, index.ntotal) != (header.dim, header.count):
        raise ValueError(
            f"header says dim {header.dim}, {header.count} vectors; index has "
            f"dim {index.d}, {index.ntotal}"
        )
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError("index does not use inner product")
    return index, header
