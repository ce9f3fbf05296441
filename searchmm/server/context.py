"""What every request shares: the one Engine (its model loaded once), the limits and the caches."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException

from searchmm import defaults
from searchmm.engine.engine import Engine
from searchmm.errors import SearchmmError
from searchmm.search.hits import Hit
from searchmm.store.records import Item
from searchmm.vocabulary import KINDS, Kind, Status

from .thumbnails import ThumbnailCache

log = logging.getLogger("searchmm.server")

WARM_UP_TEXT = "a photo"


@dataclass
class ServerContext:
    engine: Engine
    max_upload_bytes: int = defaults.MAX_UPLOAD_BYTES
    owns_engine: bool = False
    ready: bool = False
    thumbnails: ThumbnailCache = field(init=False)

    def __post_init__(self) -> None:
        self.thumbnails = ThumbnailCache(self.engine.index_dir)

    def warm_up(self) -> None:
        """Load the model and both indexes now, and run one query of each kind through them,
        so that the first user's query costs what every later one does."""
        started = time.perf_counter()
        try:
            stats = self.engine.stats()
        except SearchmmError as exc:
            log.warning("%s", exc)  # no index yet: searches will say so
            return
        if stats.model is None:
            log.warning(
                "the index at %s is empty: nothing to search until files are ingested",
                stats.index_dir,
            )
            return
        encoder = self.engine.load_model()
        encoder.encode_texts([WARM_UP_TEXT])
        from PIL import Image

        blank = Image.new("RGB", (encoder.image_size, encoder.image_size), (128, 128, 128))
        encoder.encode_pil([blank])
        for kind in KINDS:
            if stats.searchable(kind):
                self.engine.search_text(WARM_UP_TEXT, target=kind.target, k=1)
        self.ready = True
        counts = ", ".join(f"{c.get(Status.OK, 0)} {kind}s" for kind, c in stats.items.items())
        log.info(
            "model %s loaded and warm in %.1f s; %s",
            stats.model.name,
            time.perf_counter() - started,
            counts,
        )

    def item(self, item_id: int) -> Item:
        """A searchable stored item, or 404: ids come from the request, paths never do."""
        item = self.engine.items_by_id([item_id]).get(item_id)
        if item is None or item.status != Status.OK:
            raise HTTPException(404, f"no item {item_id}")
        return item

    def image_item(self, item_id: int) -> Item:
        item = self.item(item_id)
        if item.kind != Kind.IMAGE:
            raise HTTPException(404, f"item {item_id} is a {item.kind}, not an image")
        return item


def item_urls(item: Item) -> dict[str, str]:
    """The URLs the page loads an image item's pictures from (none for texts)."""
    if item.kind != Kind.IMAGE:
        return {}
    return {
        "thumbnail_url": f"/api/items/{item.id}/thumbnail?size={defaults.THUMBNAIL_SIZE}",
        "image_url": f"/api/items/{item.id}/image",
    }


def item_out(item: Item) -> dict[str, Any]:
    return {**item.to_json(), **item_urls(item)}


def hit_out(hit: Hit) -> dict[str, Any]:
    return {**hit.to_dict(), **item_urls(hit.item)}
