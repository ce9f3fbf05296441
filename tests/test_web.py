"""The web page in a real browser: Debian's headless Chromium driven by Python Playwright, against
a real `searchmm serve` process. Screenshots are kept as test artefacts: under
$SEARCHMM_ARTIFACTS/web if that is set, else in each test's tmp_path (their paths are printed).

Chromium is never downloaded (`playwright install` is never run): /usr/bin/chromium is launched
through `executable_path`, with flags that keep it off the network.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from helpers.cli import cli_json
from helpers.server import Served, ServerProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
# Chromium calls Google hosts even headless: these flags stop that (every outside DNS lookup fails).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
# .ci/run sets this once it has installed Chromium: there, a browser that cannot run is a failure.
REQUIRED = os.environ.get("SEARCHMM_REQUIRE_BROWSER") == "1"
TIMEOUT_MS = 30_000
LOADED = "imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0)"
ALL_LOADED = f"sel => ({LOADED})(Array.from(document.querySelectorAll(sel)))"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"browser tests required but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Python Playwright is not installed (pip install playwright)")
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    root = os.environ.get("SEARCHMM_ARTIFACTS")
    folder = Path(root) / "web" if root else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser: Browser, served: Served) -> Iterator[Any]:
    """A fresh page on the server; fails the test on a script or console error, or on a request
    that leaves the server."""
    # Playwright's waits evaluate JavaScript, which the page's own CSP forbids: let them run.
    # That nothing is fetched from elsewhere is checked on every request instead.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    local = (served.url + "/", "blob:", "data:")
    tab.on(
        "request",
        lambda r: r.url.startswith(local) or problems.append(f"request elsewhere: {r.url}"),
    )
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on("console", lambda m: _console_problem(m, problems))
    tab.goto(served.url + "/")
    tab.wait_for_function("document.getElementById('status').textContent.startsWith('Index:')")
    yield tab
    context.close()
    assert not problems, problems


def _console_problem(message: Any, problems: list[str]) -> None:
    """Console errors fail the test, except the browser's own note on a 4xx response: the tests
    that expect one check the page's error message instead."""
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        problems.append(f"console: {message.text}")


def screenshot(page: Page, folder: Path, request: pytest.FixtureRequest, name: str) -> Path:
    path = folder / f"{request.node.name}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def search(page: Page, text: str) -> None:
    page.fill("#query", text)
    page.click("#search-button")
    page.wait_for_function(ALL_LOADED, arg="#results img.thumb")


def first_result_id(page: Page) -> int:
    return int(page.get_attribute("#results > li:first-child", "data-id"))


def test_typing_a_query_shows_thumbnails(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    search(page, "a cat sleeping on a sofa")
    thumbs = page.locator("#results .image-result img.thumb")
    assert thumbs.count() == 10
    widths = thumbs.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert all(0 < w <= 256 for w in widths)
    scores = page.locator("#results .score").all_inner_texts()
    assert [float(s) for s in scores] == sorted((float(s) for s in scores), reverse=True)
    assert page.inner_text("#status") == "10 images for “a cat sleeping on a sofa”"
    assert page.is_hidden("#load-more")
    screenshot(page, shots, request, "grid")


def test_clicking_a_result_shows_the_image_and_its_metadata(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    search(page, "a rocket")
    first = page.locator("#results .image-result").first
    item_id = int(first.get_attribute("data-id"))
    first.locator("button.open").click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("document.getElementById('detail-image').naturalWidth > 0")
    meta = page.inner_text("#detail-meta")
    name = next(n for n, i in served.images.items() if i == item_id)
    assert page.inner_text("#detail-title") == name
    assert str(served.photos) in meta and re.search(r"size\s+\d+ × \d+", meta)
    natural = page.eval_on_selector("#detail-image", "i => [i.naturalWidth, i.naturalHeight]")
    assert max(natural) > 256 or "generated" in meta  # the original, not the thumbnail
    screenshot(page, shots, request, "detail")
    page.click("#detail-close")
    page.wait_for_selector("#detail", state="hidden")


def test_more_like_this_puts_that_item_first(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    search(page, "a cup of coffee")
    third = page.locator("#results .image-result").nth(2)
    item_id = int(third.get_attribute("data-id"))
    third.locator("button.more-like-this").click()
    page.wait_for_function(
        "id => document.getElementById('status').textContent.endsWith(`(#${id})`)", arg=item_id
    )
    page.wait_for_function(ALL_LOADED, arg="#results img.thumb")
    assert first_result_id(page) == item_id
    assert page.inner_text("#results > li:first-child .score") == "1.000"
    screenshot(page, shots, request, "more-like-this")


def test_uploading_an_image_with_the_file_picker(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    page.set_input_files("#upload", str(served.photos / "chelsea.jpg"))
    page.wait_for_function("document.getElementById('status').textContent.includes('chelsea.jpg')")
    page.wait_for_function(ALL_LOADED, arg="#results img.thumb")
    assert first_result_id(page) == served.images["chelsea.jpg"]
    assert page.is_visible("#query-image")
    screenshot(page, shots, request, "upload")


def test_dropping_an_image_on_the_page(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    data = base64.b64encode((served.photos / "astronaut.png").read_bytes()).decode()
    transfer = page.evaluate_handle(
        """data => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
            return transfer;
        }""",
        data,
    )
    page.dispatch_event("#dropzone", "dragover", {"dataTransfer": transfer})
    assert "dragging" in page.get_attribute("#dropzone", "class")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": transfer})
    page.wait_for_function("document.getElementById('status').textContent.includes('dropped.png')")
    page.wait_for_function(ALL_LOADED, arg="#results img.thumb")
    assert first_result_id(page) == served.images["astronaut.png"]
    screenshot(page, shots, request, "drop")


def test_texts_toggle_shows_text_cards(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    search(page, "galaxies in the night sky")
    page.check("#target-texts")
    page.wait_for_function("document.querySelectorAll('#results .text-card').length === 5")
    shown = set(page.locator("#results .text-card .text").all_inner_texts())
    assert shown == set(served.texts)
    assert page.locator("#results img").count() == 0
    page.locator("#results .text-card .text").first.click()
    page.wait_for_selector("#detail[open] #detail-text")
    screenshot(page, shots, request, "texts")


def test_a_non_image_upload_shows_the_servers_error(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    fake = tmp_path / "notes.jpg"
    fake.write_text("not a picture at all\n")
    page.set_input_files("#upload", str(fake))
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.inner_text("#error")
    screenshot(page, shots, request, "error")


def test_the_page_works_under_its_own_content_security_policy(
    browser: Browser, served: Served
) -> None:
    """The other tests relax the CSP for Playwright's waits; here it is enforced, and a search,
    an upload preview and the detail view must still work with no violation reported."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    tab.on("console", lambda m: _console_problem(m, problems))
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    try:
        tab.goto(served.url + "/")
        tab.fill("#query", "a rocket")
        tab.click("#search-button")
        tab.locator("#results .image-result").nth(9).wait_for()
        tab.set_input_files("#upload", str(served.photos / "coffee.jpg"))
        tab.locator("#query-image").wait_for()
        tab.locator("#results .image-result button.open").first.click()
        tab.locator("#detail #detail-meta dd").first.wait_for()
        thumbs = tab.locator("#results img.thumb")
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not (loaded := thumbs.evaluate_all(LOADED)) and time.monotonic() < deadline:
            time.sleep(0.1)  # polled from here: wait_for_function's eval is what the CSP forbids
    finally:
        context.close()
    assert loaded, f"the thumbnails did not load within {TIMEOUT_MS / 1000:.0f} s"
    assert not problems, problems


def test_a_server_with_a_token_asks_for_it_once(
    browser: Browser, served: Served, tmp_path: Path, shots: Path, request: pytest.FixtureRequest
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(served.index_dir, index_dir, ignore=shutil.ignore_patterns(".server.json"))
    args = ("--device", "cpu")
    with ServerProcess(
        index_dir, *args, log_path=tmp_path / "server.log", token="s3cret"
    ) as server:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        tab.goto(server.url + "/")
        tab.wait_for_selector("#token-dialog[open]")
        tab.fill("#token-input", "wrong")
        tab.click("#token-submit")
        tab.wait_for_selector("#token-error:not([hidden])")
        screenshot(tab, shots, request, "token")
        tab.fill("#token-input", "s3cret")
        tab.click("#token-submit")
        tab.wait_for_function("document.getElementById('status').textContent.startsWith('Index:')")
        assert tab.is_hidden("#token-dialog")
        search(tab, "a cat sleeping on a sofa")  # thumbnails load with the page's cookie
        assert tab.locator("#results .image-result img.thumb").count() == 10
        tab.reload()  # asked once: the cookie stays for the page's session
        tab.wait_for_function("document.getElementById('status').textContent.startsWith('Index:')")
        assert tab.is_hidden("#token-dialog")
        context.close()


def test_the_filter_bar_narrows_a_search_as_the_cli_does(
    page: Page, served: Served, shots: Path, request: pytest.FixtureRequest
) -> None:
    page.click("#filters summary")
    page.fill("#filter-path", "*/generated/*")
    search(page, "a cat sleeping on a sofa")
    screenshot(page, shots, request, "filtered")
    shown = page.locator("#results > li").evaluate_all("items => items.map(i => i.dataset.id)")
    query = ["query", "a cat sleeping on a sofa", "--path", "*/generated/*", "-k", "24"]
    expected = [hit["id"] for hit in cli_json(*query, "--index-dir", served.index_dir)]
    assert [int(i) for i in shown] == expected and len(expected) == 4
    page.click("#filter-clear")  # no filter: the whole index again
    page.wait_for_function("document.querySelectorAll('#results > li').length === 10")
