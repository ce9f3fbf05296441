"""Query images sent by users: a size limit enforced before the body is parsed, and decoding
through `searchmm.sources.images.load_image` (the ingest's safe path: decompression bombs,
truncated and non-image files are refused with a reason) from a private temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from fastapi import HTTPException, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from searchmm.sources.images import ImageDecodeError, load_image

from .asgi import send_json

# Room for the multipart envelope (boundaries, part headers, other fields) around the file.
ENVELOPE_BYTES = 64 * 1024
_COPY_CHUNK = 1 << 20
# The check decodes a JPEG at a reduced scale (the search decodes it again for its model).
CHECK_DRAFT_SIZE = 224


def too_large_message(max_bytes: int) -> str:
    return f"the upload is larger than the limit of {max_bytes / 1e6:g} MB"


class UploadLimit:
    """ASGI middleware: refuse request bodies over the limit on upload paths with 413 JSON.

    A declared Content-Length over the limit is refused before parsing. The unread body is first
    drained (up to `drain_cap` bytes, never stored): a server that answers and closes while the
    client is still sending makes most clients report a reset instead of the 413. A body sent
    without a length (chunked) is counted as it arrives.
    """

    def __init__(
        self, app: ASGIApp, *, paths: frozenset[str], max_bytes: int, drain_cap: int | None = None
    ) -> None:
        self.app = app
        self.paths = paths
        self.max_bytes = max_bytes
        self.limit = max_bytes + ENVELOPE_BYTES
        self.drain_cap = drain_cap if drain_cap is not None else max(4 * self.limit, 64 << 20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = _int_or_none(headers.get(b"content-length"))
        if length is not None and length > self.limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive)  # a client waiting for 100 Continue sent nothing
            await self._refuse(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted, send)

    async def _drain(self, receive: Receive) -> None:
        drained = 0
        while drained <= self.drain_cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, send: Send) -> None:
        error = {"error": too_large_message(self.max_bytes)}
        await send_json(send, 413, error, (b"connection", b"close"))


def _int_or_none(value: bytes | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


@contextlib.contextmanager
def received_image(upload: UploadFile, max_bytes: int) -> Iterator[str]:
    """The upload as a temporary file that decodes as an image; removed afterwards.

    Raises HTTPException: 413 over the size limit, 415 not an image, 422 an image that cannot be
    decoded (truncated, corrupt, too many pixels).
    """
    fd, path = tempfile.mkstemp(prefix="searchmm-upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            _copy_limited(upload.file, out, max_bytes)
        try:
            load_image(path, draft_size=CHECK_DRAFT_SIZE)
        except ImageDecodeError as exc:
            reason = str(exc)
            status = 415 if reason.startswith("not an image") or "empty" in reason else 422
            raise HTTPException(
                status, f"the upload cannot be used as an image: {reason}"
            ) from None
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _copy_limited(source: Any, out: Any, max_bytes: int) -> None:
    copied = 0
    source.seek(0)
    while chunk := source.read(_COPY_CHUNK):
        copied += len(chunk)
        if copied > max_bytes:
            raise HTTPException(413, too_large_message(max_bytes))
        out.write(chunk)
    if copied == 0:
        raise HTTPException(415, "the upload is empty")
