"""A search result: rank, score and the stored item it points to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from searchmm.store.records import Item


@dataclass(frozen=True)
class Hit:
    """One result: its rank (from 1, counting skipped results), cosine score and stored item."""

    rank: int
    score: float
    item: Item

    @property
    def path(self) -> str:
        return self.item.path

    @property
    def text(self) -> str | None:
        return self.item.text

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "score": round(self.score, 6), **self.item.to_json()}
