"""Client mode: a query sent to the `searchmm serve` that serves the same index directory.

The server has the model loaded already, so the query costs an HTTP round trip instead of
loading one. It must answer exactly what the local path would: its hits are the CLI's plus the
page's URLs (dropped here), and a user error comes back with the same message and hint. Anything
else (no server, a stale record, a refused or failed request) returns None: the caller then
answers locally, as if no server were there. Only the standard library is imported here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from searchmm.errors import Hint, SearchmmError
from searchmm.server.registry import running_server

TIMEOUT_S = 60.0  # a server busy with another query still answers well inside this
URL_FIELDS = ("thumbnail_url", "image_url")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def query_server(index_dir: Path, query: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The hits of `query` (the body of `POST /api/query`) from the running server, or None."""
    server = running_server(index_dir)
    if server is None:
        return None
    request = urllib.request.Request(
        f"{server.url}/api/query",
        data=json.dumps(query).encode("utf-8"),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Bearer {server.token}"} if server.token else {}),
        },
        method="POST",
    )
    try:
        with _DIRECT.open(request, timeout=TIMEOUT_S) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 400:
            _raise_user_error(exc)
        return None
    except (OSError, ValueError):  # refused, reset, timed out, not JSON: answer locally
        return None
    return [_as_local(hit) for hit in answer["hits"]]


def _as_local(hit: dict[str, Any]) -> dict[str, Any]:
    """A hit as `Hit.to_dict()` has it: rank and score first, then the item, without URLs."""
    rest = {k: v for k, v in hit.items() if k not in (*URL_FIELDS, "rank", "score")}
    return {"rank": hit["rank"], "score": hit["score"], **rest}


def _raise_user_error(exc: urllib.error.HTTPError) -> None:
    """The server's answer to a bad query is the local path's: the same error, the same hint."""
    try:
        body = json.loads(exc.read())
        message, hint = str(body["error"]), body.get("hint")
    except (OSError, ValueError, KeyError, TypeError):
        return
    raise SearchmmError(message, hint=Hint(hint) if hint in tuple(Hint) else None)
