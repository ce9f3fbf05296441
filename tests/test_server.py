"""`searchmm serve` end to end: a real server process over an index built by the real CLI with
the tiny model, spoken to over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from helpers.files import make_image
from helpers.server import MAX_UPLOAD_MB, NOTES, Served, ServerProcess

pytest.importorskip("fastapi", reason="the server extra is not installed")


@pytest.fixture
def client(served: Served) -> Iterator[httpx.Client]:
    with served.client() as c:
        yield c


def raw_get(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """GET a path exactly as written (no client-side normalisation of `..` or `%2e`)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("content-type", ""), response.read().decode()
    finally:
        conn.close()


def ids(page: dict) -> list[int]:
    return [hit["id"] for hit in page["hits"]]


def test_health_stats_and_page(client: httpx.Client, served: Served) -> None:
    health = client.get("/api/health").json()
    assert health == {
        "status": "ok",
        "ready": True,
        "indexed": True,
        "model": "searchmm-tiny",
        "items": {"image": 10, "text": 5},
        "max_upload_bytes": MAX_UPLOAD_MB * 1_000_000,
    }
    stats = client.get("/api/stats").json()
    assert stats["model"]["name"] == "searchmm-tiny"
    assert stats["indexes"]["image"]["vectors"] == 10
    assert stats["indexes"]["text"]["vectors"] == 5

    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'id="query"' in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


def test_openapi_schema_documents_every_endpoint(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) >= {
        "/api/search",
        "/api/search/image",
        "/api/items/{item_id}",
        "/api/items/{item_id}/similar",
        "/api/items/{item_id}/image",
        "/api/items/{item_id}/thumbnail",
        "/api/stats",
        "/api/health",
    }
    search_params = {p["name"] for p in paths["/api/search"]["get"]["parameters"]}
    assert search_params == {"q", "target", "k", "offset"}
    upload = paths["/api/search/image"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"413", "415"} <= set(upload["responses"])
    assert "/" not in paths  # the page is not part of the API
    assert client.get("/docs").status_code == 200


def test_search_by_text_returns_thumbnails_that_load_and_are_cached(
    client: httpx.Client, served: Served
) -> None:
    response = client.get("/api/search", params={"q": "a cat on a sofa", "k": 10})
    assert re.fullmatch(r"search;dur=\d+\.\d\d", response.headers["server-timing"])
    page = response.json()
    assert page["target"] == "images" and page["offset"] == 0
    hits = page["hits"]
    assert len(hits) == 10
    assert [h["rank"] for h in hits] == list(range(1, 11))
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    cache = served.index_dir / "thumbnails"
    for hit in hits:
        assert hit["kind"] == "image"
        assert hit["image_url"] == f"/api/items/{hit['id']}/image"
        response = client.get(hit["thumbnail_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(response.content))
        assert thumb.format == "JPEG"
        width, height = hit["width"], hit["height"]
        assert max(thumb.size) == min(256, max(width, height))  # never enlarged
        assert abs(thumb.size[0] / thumb.size[1] - width / height) < 0.02
        cached = list(cache.glob(f"{hit['id']}-256-*.jpg"))
        assert len(cached) == 1 and cached[0].read_bytes() == response.content

    # Asked again: the same file is served, not made again.
    first = hits[0]
    (cached,) = cache.glob(f"{first['id']}-256-*.jpg")
    made, files = cached.stat().st_mtime_ns, sorted(cache.glob("*.jpg"))
    again = client.get(first["thumbnail_url"])
    assert again.content == cached.read_bytes()
    assert cached.stat().st_mtime_ns == made
    assert sorted(cache.glob("*.jpg")) == files  # the browser tests share this cache

    small = client.get(f"/api/items/{first['id']}/thumbnail", params={"size": 64})
    assert max(Image.open(io.BytesIO(small.content)).size) == 64


def test_a_changed_file_gets_a_new_thumbnail(client: httpx.Client, served: Served) -> None:
    path = served.photos / "generated" / "gen-3.png"
    item_id = served.images["gen-3.png"]
    url = f"/api/items/{item_id}/thumbnail?size=128"
    cache = served.index_dir / "thumbnails"
    before = client.get(url).content
    (old,) = cache.glob(f"{item_id}-128-*.jpg")
    original, st = path.read_bytes(), path.stat()
    try:
        make_image(path, seed=99, size=(120, 80))  # other content, not ingested again
        after = client.get(url)
        assert after.status_code == 200 and after.content != before
        assert Image.open(io.BytesIO(after.content)).size == (120, 80)
        (new,) = cache.glob(f"{item_id}-128-*.jpg")  # the stale one is gone
        assert new != old
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert client.get(url).content == before


def test_image_endpoint_serves_the_original_file(client: httpx.Client, served: Served) -> None:
    for name, media_type in (("chelsea.jpg", "image/jpeg"), ("astronaut.png", "image/png")):
        response = client.get(f"/api/items/{served.images[name]}/image")
        assert response.status_code == 200
        assert response.headers["content-type"] == media_type
        assert response.content == (served.photos / name).read_bytes()


def test_search_by_uploaded_image_ranks_that_image_first(
    client: httpx.Client, served: Served
) -> None:
    for name in ("chelsea.jpg", "retina.png"):
        data = (served.photos / name).read_bytes()
        response = client.post(
            "/api/search/image", files={"file": (name, data, "application/octet-stream")}
        )
        assert response.status_code == 200, response.text
        top = response.json()["hits"][0]
        assert top["id"] == served.images[name]
        assert top["score"] == pytest.approx(1.0, abs=1e-3)
    texts = client.post(
        "/api/search/image",
        params={"target": "texts", "k": 3},
        files={"file": ("q.jpg", (served.photos / "coffee.jpg").read_bytes(), "image/jpeg")},
    ).json()
    assert texts["target"] == "texts"
    assert [h["kind"] for h in texts["hits"]] == ["text"] * 3


def test_more_like_this_ranks_the_item_first(client: httpx.Client, served: Served) -> None:
    image_id = served.images["rocket.png"]
    page = client.get(f"/api/items/{image_id}/similar", params={"k": 4}).json()
    assert page["target"] == "images" and len(page["hits"]) == 4
    assert page["hits"][0]["id"] == image_id
    assert page["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)

    text_id = served.texts[NOTES[0]["text"]]
    page = client.get(f"/api/items/{text_id}/similar", params={"k": 2}).json()
    assert page["target"] == "texts" and ids(page)[0] == text_id

    across = client.get(f"/api/items/{image_id}/similar", params={"target": "texts"}).json()
    assert {h["kind"] for h in across["hits"]} == {"text"} and len(across["hits"]) == 5


def test_item_metadata(client: httpx.Client, served: Served) -> None:
    image_id = served.images["coffee.jpg"]
    item = client.get(f"/api/items/{image_id}").json()
    assert item == {
        "id": image_id,
        "kind": "image",
        "path": str(served.photos / "coffee.jpg"),
        "width": 600,
        "height": 400,
        "metadata": {},
        "thumbnail_url": f"/api/items/{image_id}/thumbnail?size=256",
        "image_url": f"/api/items/{image_id}/image",
    }
    text_id = served.texts[NOTES[1]["text"]]
    item = client.get(f"/api/items/{text_id}").json()
    assert item["kind"] == "text" and item["text"] == NOTES[1]["text"]
    assert item["metadata"] == {"author": "bo", "year": 2003}
    assert item["locator"] == "line:2" and item["source"].endswith("notes.jsonl")
    assert "thumbnail_url" not in item and "image_url" not in item


def test_offset_pages_add_up_to_one_longer_page(client: httpx.Client) -> None:
    params = {"q": "a photo of something", "target": "images"}
    full = client.get("/api/search", params={**params, "k": 10}).json()
    pages = [
        client.get("/api/search", params={**params, "k": 3, "offset": offset}).json()
        for offset in (0, 3, 6, 9)
    ]
    assert [i for p in pages for i in ids(p)] == ids(full)
    assert [h["rank"] for p in pages for h in p["hits"]] == list(range(1, 11))
    assert [p["has_more"] for p in pages] == [True, True, True, False]
    assert ids(client.get("/api/search", params={**params, "offset": 10}).json()) == []
    texts = client.get("/api/search", params={"q": "galaxies", "target": "texts"}).json()
    assert len(texts["hits"]) == 5 and texts["has_more"] is False


def test_concurrent_queries_all_answer_alike(served: Served) -> None:
    def search(i: int) -> list[int]:
        with served.client() as c:
            q = ("a cat", "a rocket")[i % 2]
            return ids(c.get("/api/search", params={"q": q, "k": 5}).json())

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(search, range(16)))
    assert all(r == results[0] for r in results[0::2])
    assert all(r == results[1] for r in results[1::2])


@pytest.mark.parametrize(
    "path",
    [
        "/api/items/../../etc/passwd",
        "/api/items/%2e%2e/%2e%2e/etc/passwd",
        "/api/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd/image",
        "/api/items/..%2f..%2f..%2fetc%2fpasswd/thumbnail",
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/api/items/abc",
        "/api/items/1.5/image",
        "/api/items/-1/thumbnail",
        "/api/items/0",
        "/api/items/99999999999999999999999/image",
        "/api/items/424242",
        "/api/items/424242/image",
        "/api/items/1/thumbnail?size=100000",
        "/api/search?q=",
        "/api/search?q=cat&k=0",
        "/api/search?q=cat&target=sounds",
        "/api/nothing-here",
    ],
)
def test_bad_paths_and_ids_get_json_4xx(served: Served, path: str) -> None:
    status, content_type, body = raw_get(served.url, path)
    assert 400 <= status < 500, (status, body)
    assert content_type == "application/json"
    assert json.loads(body)["error"]
    assert "root:" not in body


def test_text_items_have_no_image_or_thumbnail(served: Served) -> None:
    text_id = next(iter(served.texts.values()))
    for suffix in ("image", "thumbnail"):
        status, _, body = raw_get(served.url, f"/api/items/{text_id}/{suffix}")
        assert status == 404
        assert json.loads(body) == {"error": f"item {text_id} is a text, not an image"}


def test_only_loopback_host_names_are_served(served: Served) -> None:
    status, _, _ = raw_get(served.url, "/api/health", {"Host": "attacker.example:8000"})
    assert status == 400  # a page elsewhere cannot reach the server by DNS rebinding
    status, _, _ = raw_get(served.url, "/api/health", {"Host": "localhost"})
    assert status == 200


def test_oversize_uploads_are_refused_with_413(client: httpx.Client) -> None:
    blob = os.urandom(MAX_UPLOAD_MB * 1_000_000 + 200_000)
    response = client.post("/api/search/image", files={"file": ("big.jpg", blob, "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == {
        "error": f"the upload is larger than the limit of {MAX_UPLOAD_MB} MB"
    }

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(MAX_UPLOAD_MB + 1):
            yield bytes(1_000_000)
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/api/search/image",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert client.get("/api/health").status_code == 200  # and the server carries on


def test_non_image_uploads_get_json_4xx(client: httpx.Client, served: Served) -> None:
    cat = (served.photos / "chelsea.jpg").read_bytes()
    cases = {
        "notes.txt": (b"just some text\n", 415, "not an image"),
        "empty.jpg": (b"", 415, "empty"),
        "truncated.jpg": (cat[: len(cat) // 3], 422, "truncated or corrupt"),
    }
    for name, (data, status, reason) in cases.items():
        response = client.post("/api/search/image", files={"file": (name, data, "image/jpeg")})
        assert response.status_code == status, (name, response.text)
        assert reason in response.json()["error"]
    missing = client.post("/api/search/image", data={"other": "x"})
    assert missing.status_code == 422 and "file" in missing.json()["error"]


def test_an_empty_index_says_so(tmp_path: Path) -> None:
    empty = tmp_path / "no-index-yet"
    with (
        ServerProcess(empty, "--device", "cpu", log_path=tmp_path / "server.log") as server,
        httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c,
    ):
        health = c.get("/api/health").json()
        assert health["indexed"] is False and health["ready"] is False
        response = c.get("/api/search", params={"q": "a cat"})
        assert response.status_code == 400
        assert response.json()["error"].startswith(f"no index at {empty}")
        assert c.get("/api/items/1").status_code == 400
    assert not (empty / "searchmm.db").exists()  # serving never creates a store


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path, served: Served) -> None:
    server = ServerProcess(served.index_dir, "--device", "cpu", log_path=tmp_path / "log")
    server.start()
    # uvicorn shuts down, then re-raises the signal it caught: killed by SIGTERM, cleanly.
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log()


def test_serve_without_the_server_extra_says_what_to_install(tmp_path: Path) -> None:
    hide = "import sys; sys.modules.update(fastapi=None, python_multipart=None, multipart=None)"
    run = "from searchmm.cli.app import main; sys.argv[0] = 'searchmm'; main()"
    done = subprocess.run(
        [sys.executable, "-c", f"{hide}; {run}", "serve", "--index-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "searchmm: error: the server needs fastapi, python-multipart: "
        "pip install 'searchmm[server]'\n"
    )


def test_wheel_ships_the_web_page(tmp_path: Path) -> None:
    """A non-editable install must carry the static files (package data)."""
    pytest.importorskip("setuptools", reason="building a wheel offline needs setuptools")
    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    shutil.copytree(
        root / "searchmm", source / "searchmm", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("searchmm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for static in ("index.html", "app.js", "style.css"):
        assert f"searchmm/server/static/{static}" in names
