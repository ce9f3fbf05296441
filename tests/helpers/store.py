"""What an index directory holds, read straight from its SQLite and FAISS files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np


def stored_vectors(index_dir: Path, kind: str) -> dict[int, np.ndarray]:
    """Embeddings read straight from the SQLite file, without searchmm's code."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute(
            "SELECT e.item_id, e.vector FROM embeddings e JOIN items i ON i.id = e.item_id "
            "WHERE i.kind = ?",
            (kind,),
        ).fetchall()
    return {item_id: np.frombuffer(blob, dtype=np.float32) for item_id, blob in rows}


def stored_items(index_dir: Path, kind: str) -> dict[str, int]:
    """path (or 'path#locator' for texts) -> item id, straight from SQLite."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute(
            "SELECT id, path, locator FROM items WHERE kind = ? AND status = 'ok'", (kind,)
        ).fetchall()
    return {(f"{p}#{loc}" if loc else p): i for i, p, loc in rows}


def embedded(index_dir: Path) -> int:
    """How many vectors are committed, read straight from SQLite (0 before the store exists)."""
    try:
        with sqlite3.connect(index_dir / "searchmm.db", timeout=5) as db:
            count: int = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            return count
    except sqlite3.Error:
        return 0


def index_ids(index_dir: Path, kind: str) -> set[int]:
    """The ids in the saved FAISS index file."""
    from searchmm.index.vector_index import VectorIndex

    index, _ = VectorIndex.load(index_dir / f"{kind}s.faiss")
    return set(index.ids().tolist())
