"""What `searchmm stats` reports: counts per kind, the model, each index's type and size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from searchmm.engine.directory import IndexDirectory
from searchmm.index.sync import index_path
from searchmm.model.spec import spec_of
from searchmm.store.connections import DB_FILENAME
from searchmm.vocabulary import KINDS, Kind, Status


@dataclass(frozen=True)
class ModelStats:
    name: str
    pretrained: str
    dim: int
    software: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IndexStats:
    spec: str
    vectors: int
    bytes: int
    file: str


@dataclass(frozen=True)
class Stats:
    """`items[kind][status]` counts items; `indexes` is empty while the store has no model."""

    index_dir: str
    model: ModelStats | None
    items: dict[str, dict[str, int]]
    indexes: dict[Kind, IndexStats]
    store_bytes: int

    def searchable(self, kind: Kind) -> int:
        return self.items.get(kind, {}).get(Status.OK, 0)

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        return {
            "index_dir": self.index_dir,
            "model": (
                {"name": model.name, "pretrained": model.pretrained, "dim": model.dim}
                | model.software
                if model
                else None
            ),
            "items": self.items,
            "indexes": {kind: asdict(index) for kind, index in self.indexes.items()},
            "store_bytes": self.store_bytes,
        }


def collect_stats(directory: IndexDirectory) -> Stats:
    """Counts from the store; the indexes as they are once caught up (not saved: a reader)."""
    store = directory.reads()
    stored = store.get_model()
    store_bytes = sum(
        p.stat().st_size for p in directory.path.glob(DB_FILENAME + "*") if p.is_file()
    )
    model, indexes = None, {}
    if stored is not None:
        spec = spec_of(stored)
        model = ModelStats(spec.name, spec.pretrained, stored.dim, dict(stored.software))
        with directory.lock:
            index_set = directory.indexes()
            for kind in KINDS:
                index = index_set.get(kind, persist=False)
                path = index_path(directory.path, kind)
                size = path.stat().st_size if path.exists() else 0
                indexes[kind] = IndexStats(index.spec, index.ntotal, size, path.name)
    return Stats(str(directory.path), model, store.counts(), indexes, store_bytes)
