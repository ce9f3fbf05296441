"""The JSON API: search by text or uploaded image, items (metadata, similar, image, thumbnail),
stats and health.

Endpoints are plain `def`s: FastAPI runs them in its thread pool, so queries run concurrently
on the one shared Engine while the event loop keeps accepting connections.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Path, Query, UploadFile
from fastapi.responses import FileResponse, Response

from searchmm import defaults
from searchmm.defaults import K as DEFAULT_K
from searchmm.engine.engine import Engine
from searchmm.errors import SearchmmError
from searchmm.search.hits import Hit
from searchmm.search.options import SearchKwargs
from searchmm.vocabulary import Status, Target

from .context import ServerContext, hit_out, item_out
from .queries import QueryIn
from .schemas import ERROR_RESPONSES, UPLOAD_RESPONSES, HealthOut, ItemOut, SearchOut
from .thumbnails import ThumbnailError
from .uploads import received_image

MAX_K = defaults.MAX_K
MAX_OFFSET = defaults.MAX_OFFSET
MAX_ID = 2**63 - 1  # SQLite's integer range: a larger id is simply not there
TargetName = Literal["images", "texts"]
ItemId = Annotated[int, Path(ge=1, le=MAX_ID, description="the item's id (a hit's `id`)")]
ThumbnailSize = Annotated[int, Query(ge=16, le=1024, description="longer side, pixels")]


@dataclass
class SearchParams:
    """What every search takes besides its query. Filters, when they come, are added here and
    applied in `page`, so that both search endpoints and "more like this" get them at once."""

    target: Target
    k: int
    offset: int


def search_params(
    target: Annotated[TargetName, Query(description="what to search")] = "images",
    k: Annotated[int, Query(ge=1, le=MAX_K, description="results per page")] = DEFAULT_K,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="results to skip (paging)")] = 0,
) -> SearchParams:
    return SearchParams(Target(target), k, offset)


Params = Annotated[SearchParams, Depends(search_params)]


def page(
    run: Callable[[SearchKwargs], list[Hit]], params: SearchParams, response: Response
) -> dict[str, Any]:
    """One page of results, paged by the engine itself (ranks stay global).

    The engine's own time goes out as a `Server-Timing` header, so that a client can tell it
    from the cost of HTTP (bench/server_latency.py reports both)."""
    started = time.perf_counter()
    hits = run({"target": params.target, "k": params.k, "offset": params.offset})
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    response.headers["Server-Timing"] = f"search;dur={elapsed_ms:.2f}"
    return {
        "target": params.target.value,
        "k": params.k,
        "offset": params.offset,
        "has_more": len(hits) >= params.k,
        "hits": [hit_out(hit) for hit in hits],
    }


def _search_image(engine: Engine, path: str, options: SearchKwargs) -> list[Hit]:
    return engine.search_image(path, **options)


def api_router(ctx: ServerContext) -> APIRouter:
    """The /api routes, bound to one server's context."""
    router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)
    engine = ctx.engine

    @router.get(
        "/search",
        response_model=SearchOut,
        response_model_exclude_unset=True,
        summary="Search by text",
    )
    def search_text(
        q: Annotated[str, Query(min_length=1, max_length=2000, description="the query text")],
        params: Params,
        response: Response,
    ) -> dict[str, Any]:
        return page(lambda options: engine.search_text(q, **options), params, response)

    @router.post(
        "/search/image",
        response_model=SearchOut,
        response_model_exclude_unset=True,
        responses=UPLOAD_RESPONSES,
        summary="Search by an uploaded image",
        description=f"A multipart upload (field `file`) of at most {ctx.max_upload_bytes} bytes; "
        "target, k and offset are query parameters.",
    )
    def search_image(
        file: Annotated[UploadFile, File(description="the query image")],
        params: Params,
        response: Response,
    ) -> dict[str, Any]:
        with received_image(file, ctx.max_upload_bytes) as path:
            run = functools.partial(_search_image, engine, path)
            return page(run, params, response)

    @router.post(
        "/query",
        response_model=SearchOut,
        response_model_exclude_unset=True,
        summary="Search with weighted text and item terms, filters and a threshold",
        description="What `searchmm query` asks, as JSON (image terms: upload to /search/image).",
    )
    def query(body: QueryIn, response: Response) -> dict[str, Any]:
        terms, options = body.search_terms(), body.options()
        params = SearchParams(Target(body.target), body.k, body.offset)
        return page(lambda paging: engine.search(terms, **(options | paging)), params, response)

    @router.get(
        "/items/{item_id}",
        response_model=ItemOut,
        response_model_exclude_unset=True,
        summary="An item's metadata",
    )
    def item(item_id: ItemId) -> dict[str, Any]:
        return item_out(ctx.item(item_id))

    @router.get(
        "/items/{item_id}/similar",
        response_model=SearchOut,
        response_model_exclude_unset=True,
        summary="More like this: items nearest to a stored item (itself first)",
    )
    def similar(
        item_id: ItemId,
        response: Response,
        k: Annotated[int, Query(ge=1, le=MAX_K)] = DEFAULT_K,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        target: Annotated[
            TargetName | None, Query(description="default: the item's own kind")
        ] = None,
    ) -> dict[str, Any]:
        found = ctx.item(item_id)
        params = SearchParams(Target(target) if target else found.kind.target, k, offset)
        return page(lambda options: engine.search_item(item_id, **options), params, response)

    @router.get(
        "/items/{item_id}/image",
        response_class=FileResponse,
        responses={200: {"content": {"image/*": {}}, "description": "The original file"}},
        summary="An image item's original file",
    )
    def image(item_id: ItemId) -> FileResponse:
        found = ctx.image_item(item_id)
        if not os.path.isfile(found.path):
            raise HTTPException(404, f"the file of item {item_id} is gone")
        media_type = mimetypes.guess_type(found.path)[0] or "application/octet-stream"
        return FileResponse(found.path, media_type=media_type, headers=_FILE_HEADERS)

    @router.get(
        "/items/{item_id}/thumbnail",
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "A JPEG"}},
        summary="An image item's thumbnail (made once, then cached)",
    )
    def thumbnail(
        item_id: ItemId,
        size: Annotated[
            int, Query(ge=16, le=1024, description="longer side, pixels")
        ] = defaults.THUMBNAIL_SIZE,
    ) -> Response:
        found = ctx.image_item(item_id)
        try:
            thumb = ctx.thumbnails.get(found, size)
        except ThumbnailError as exc:
            raise HTTPException(404 if exc.gone else 422, str(exc)) from None
        if thumb.path is None:
            return Response(thumb.data, media_type="image/jpeg", headers=_FILE_HEADERS)
        return FileResponse(thumb.path, media_type="image/jpeg", headers=_FILE_HEADERS)

    @router.get("/stats", summary="Counts, model, index types and sizes")
    def stats() -> dict[str, Any]:
        return engine.stats().to_dict()

    @router.get("/health", response_model=HealthOut, summary="Liveness and readiness")
    def health() -> dict[str, Any]:
        try:
            stats = engine.stats()
            counts = {kind: c.get(Status.OK, 0) for kind, c in stats.items.items()}
            model, indexed = (stats.model.name if stats.model else None), True
        except SearchmmError:  # no store yet, or one that cannot be read: still alive
            counts, model, indexed = {}, None, False
        return {
            "status": "ok",
            "ready": ctx.ready,
            "indexed": indexed,
            "model": model,
            "items": counts,
            "max_upload_bytes": ctx.max_upload_bytes,
        }

    return router


# The originals and thumbnails may change on disk: let browsers revalidate (ETag) every time.
_FILE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
