"""A token for a server that others can reach: every /api route needs it, the page asks once.

A client sends `Authorization: Bearer TOKEN`; the web page posts the token to /api/session,
which answers with an HttpOnly, same-site cookie, so that its requests (thumbnails and images
too) carry it. Tokens are compared in constant time. Without a token (the loopback default)
nothing is checked.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from searchmm.errors import Hint

from .asgi import send_json

COOKIE = "searchmm_token"
SESSION_PATH = "/api/session"
TOKEN_BYTES = 24


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def matches(given: str | None, token: str) -> bool:
    return given is not None and secrets.compare_digest(given.encode(), token.encode())


def session_cookie(token: str) -> str:
    return f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"


class TokenGuard:
    """ASGI middleware: /api requests without the token get 401 JSON (the page is public)."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or path == SESSION_PATH:
            await self.app(scope, receive, send)
            return
        if self._allowed(dict(scope.get("headers", []))):
            await self.app(scope, receive, send)
            return
        message = "this server needs its token (Authorization: Bearer TOKEN)"
        challenge = (b"www-authenticate", b'Bearer realm="searchmm"')
        await send_json(send, 401, {"error": message, "hint": Hint.TOKEN}, challenge)

    def _allowed(self, headers: dict[bytes, bytes]) -> bool:
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and matches(given.strip(), self.token):
            return True
        for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and matches(value, self.token):
                return True
        return False
