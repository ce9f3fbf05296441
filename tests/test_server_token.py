"""A server with a token: every /api route needs it, the page asks for it once, client mode
brings it along, and an address other machines can reach never goes without one."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from helpers.cli import run_cli
from helpers.server import Served, ServerProcess
from searchmm.cli.serve import token_for
from searchmm.server.registry import record_path, running_server

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

pytest.importorskip("fastapi", reason="the server extra is not installed")

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    from searchmm.server import create_app

    app = create_app(served.index_dir, device="cpu", token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_every_api_route_needs_the_token(client: TestClient, served: Served) -> None:
    item = served.images["chelsea.jpg"]
    routes = ["/api/search?q=a+cat", "/api/health", "/api/stats", f"/api/items/{item}/thumbnail"]
    for route in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = client.get(route, headers=headers)
            assert refused.status_code == 401, (route, headers)
            assert refused.json()["hint"] == "token"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        allowed = client.get(route, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200, route
    page = client.get("/")
    assert page.status_code == 200 and "token-dialog" in page.text


def test_the_page_trades_the_token_for_a_cookie(client: TestClient, served: Served) -> None:
    wrong = client.post("/api/session", json={"token": "guess"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    right = client.post("/api/session", json={"token": TOKEN})
    assert right.status_code == 204
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    item = served.images["coffee.jpg"]
    thumb = client.get(f"/api/items/{item}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    client.cookies.clear()


def test_an_address_others_can_reach_gets_a_token() -> None:
    for loopback in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert token_for(loopback, None) is None
    made = {token_for(host, None) for host in ("0.0.0.0", "::", "192.168.1.20", "example.org")}
    assert len(made) == 4 and all(token and len(token) >= 32 for token in made)
    assert token_for("0.0.0.0", TOKEN) == token_for("127.0.0.1", TOKEN) == TOKEN


@pytest.fixture
def token_server(tmp_path: Path, served: Served) -> Iterator[ServerProcess]:
    """A second server, with a token, over a copy of the served index (same photos)."""
    index_dir = tmp_path / "index"
    shutil.copytree(served.index_dir, index_dir, ignore=shutil.ignore_patterns(".server.json"))
    with ServerProcess(
        index_dir, "--device", "cpu", log_path=tmp_path / "server.log", token=TOKEN
    ) as server:
        yield server


def test_client_mode_brings_the_token(token_server: ServerProcess) -> None:
    index_dir = Path(token_server.command[token_server.command.index("--index-dir") + 1])
    assert running_server(index_dir) is not None
    assert stat.S_IMODE(os.stat(record_path(index_dir)).st_mode) == 0o600
    via_server = run_cli("query", "a cat", "--index-dir", index_dir, "--json")
    local = run_cli("query", "a cat", "--index-dir", index_dir, "--json", "--no-server")
    assert via_server.stdout == local.stdout
    assert token_server.log().count('"POST /api/query HTTP/1.1" 200') == 1
