"""The JSON shapes of the API, as pydantic models: they are what /openapi.json documents.

Models allow extra fields, so a field that `Hit.to_dict()` gains later passes through unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ItemOut(BaseModel):
    """One stored item: an image file, or one text record of a collection."""

    model_config = ConfigDict(extra="allow")

    id: int
    kind: Literal["image", "text"]
    path: str | None = Field(None, description="image items: the file")
    width: int | None = Field(None, description="image items: displayed width in pixels")
    height: int | None = Field(None, description="image items: displayed height in pixels")
    text: str | None = Field(None, description="text items: the text")
    source: str | None = Field(None, description="text items: the collection file")
    locator: str | None = Field(None, description="text items: where in that file")
    metadata: dict[str, Any] = Field(default_factory=dict)
    thumbnail_url: str | None = Field(None, description="image items: a JPEG thumbnail")
    image_url: str | None = Field(None, description="image items: the original file")


class HitOut(ItemOut):
    """A search result: the item with its rank (from 1, counting skipped results) and score."""

    rank: int
    score: float = Field(description="cosine similarity between the query and the item")


class SearchOut(BaseModel):
    """A page of results: `hits` are ranks offset+1 to offset+k."""

    model_config = ConfigDict(extra="allow")

    target: Literal["images", "texts"]
    k: int
    offset: int
    has_more: bool = Field(description="whether asking for the next page may return more")
    hits: list[HitOut]


class ErrorOut(BaseModel):
    """Every error, whatever its status code."""

    error: str
    hint: str | None = Field(
        None, description="what to do about it, as a name: ingest_first, wait_for_lock, ..."
    )


class HealthOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    ready: bool = Field(description="the model is loaded and warm")
    indexed: bool = Field(description="the index directory holds a store")
    model: str | None
    items: dict[str, int] = Field(description="searchable items per kind")
    max_upload_bytes: int


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "A bad query, or an empty index"},
    404: {"model": ErrorOut, "description": "No such item, or its file is gone"},
    422: {"model": ErrorOut, "description": "A parameter is missing or invalid"},
    500: {"model": ErrorOut, "description": "The store or an index file is damaged"},
    503: {"model": ErrorOut, "description": "The store is locked, or the model cannot be loaded"},
}
UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    413: {"model": ErrorOut, "description": "The upload is over the size limit"},
    415: {"model": ErrorOut, "description": "The upload is not an image"},
    422: {"model": ErrorOut, "description": "The image cannot be decoded, or a bad parameter"},
}
