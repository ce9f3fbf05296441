"""The FastAPI application: built by `create_app`, never at import time.

The Engine's model is loaded once, when the app starts (before uvicorn accepts connections),
and shared by every request. Every error answers JSON `{"error": message}` (plus `"hint"`
when the library names what to do), with a status chosen by the error's category.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from searchmm import __version__, defaults
from searchmm.engine.engine import Engine
from searchmm.errors import Category, Hint, SearchmmError

from . import registry
from .auth import SESSION_PATH, TokenGuard, matches, session_cookie
from .context import ServerContext
from .routes import api_router
from .uploads import UploadLimit

log = logging.getLogger("searchmm.server")

# The status each kind of library error answers with (see searchmm.errors).
STATUS_BY_CATEGORY = {
    Category.INVALID: 400,
    Category.NOT_FOUND: 404,
    Category.CONFLICT: 409,
    Category.DAMAGED: 500,
    Category.BUSY: 503,
    Category.UNAVAILABLE: 503,
}
STATIC_DIR = Path(__file__).resolve().parent / "static"
UPLOAD_PATHS = frozenset({"/api/search/image"})
# The page loads nothing from elsewhere; a browser enforcing this proves it.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def create_app(
    engine_or_index_dir: Engine | str | os.PathLike[str] | None,
    *,
    device: str | None = None,
    backend: str | None = None,
    max_upload_bytes: int = defaults.MAX_UPLOAD_BYTES,
    allowed_hosts: Sequence[str] | None = None,
    warm: bool = True,
    announce_url: str | None = None,
    token: str | None = None,
) -> FastAPI:
    """An app serving one index directory (or a given Engine, which the caller keeps and closes).

    `allowed_hosts`: Host header values accepted (None: any). A server on 127.0.0.1 should accept
    only loopback names, so that a web page elsewhere cannot reach it by DNS rebinding.
    `warm`: load the model when the app starts; without it, call `app.state.searchmm.warm_up()`
    first (or the first query loads it).
    `announce_url`: while the app runs, record in the index directory that it answers there, so
    that `searchmm query` sends its queries to it (client mode).
    `token`: every /api route then needs it (`Authorization: Bearer`, or the page's cookie).
    """
    if isinstance(engine_or_index_dir, Engine):
        ctx = ServerContext(engine_or_index_dir, max_upload_bytes)
    else:
        engine = Engine(engine_or_index_dir, device=device, backend=backend)
        ctx = ServerContext(engine, max_upload_bytes, owns_engine=True)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if warm:
            ctx.warm_up()  # blocking on purpose: no connection is accepted before it is done
        if announce_url is not None:
            registry.announce(
                ctx.engine.index_dir, registry.ServerRecord(os.getpid(), announce_url, token)
            )
        try:
            yield
        finally:
            if announce_url is not None:
                registry.withdraw(ctx.engine.index_dir, os.getpid())
            if ctx.owns_engine:
                ctx.engine.close()

    app = FastAPI(
        title="searchmm",
        version=__version__,
        description="Cross-modal search over one searchmm index: text or image queries, "
        'images or texts as results. Every error is JSON `{"error": message}`, '
        'with a machine-readable `"hint"` when there is something to do about it.',
        lifespan=lifespan,
    )
    app.state.searchmm = ctx
    _add_error_handlers(app)
    _add_session(app, token)
    app.include_router(api_router(ctx))
    _add_page(app)
    app.add_middleware(UploadLimit, paths=UPLOAD_PATHS, max_bytes=max_upload_bytes)
    if token is not None:
        app.add_middleware(TokenGuard, token=token)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app


def _error(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    hint: str | None = None,
) -> JSONResponse:
    body = {"error": message} if hint is None else {"error": message, "hint": hint}
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SearchmmError)
    async def searchmm_error(_request: Request, exc: SearchmmError) -> JSONResponse:
        status = STATUS_BY_CATEGORY[exc.category]
        if status >= 500:
            log.error("%s: %s", exc.category, exc)
        return _error(status, str(exc), hint=exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc.errors()))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}")


def _validation_message(errors: Sequence[Any]) -> str:
    """`k: Input should be greater than or equal to 1` from pydantic's error list."""
    parts = []
    for error in errors:
        where = [
            str(part) for part in error.get("loc", ()) if part not in ("query", "path", "body")
        ]
        parts.append(f"{'.'.join(where) or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


class SessionIn(BaseModel):
    token: str = Field(max_length=1000)


def _add_session(app: FastAPI, token: str | None) -> None:
    """The page trades the token for a cookie once: `<img>` requests cannot send a header."""

    @app.post(SESSION_PATH, status_code=204, summary="Trade the server's token for a cookie")
    def session(body: SessionIn) -> Response:
        if token is None:
            return Response(status_code=204)
        if not matches(body.token, token):
            return _error(401, "that is not this server's token", hint=Hint.TOKEN)
        return Response(status_code=204, headers={"Set-Cookie": session_cookie(token)})


def _add_page(app: FastAPI) -> None:
    """The web page: index.html at /, its script and style under /static/."""

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
