"""Errors carry a category and a hint: the server answers by category, the CLI words the hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import run_cli
from searchmm.cli.errors import CLI_HINTS, cli_message
from searchmm.errors import Category, Hint, LockedError, SearchmmError, StoreError
from searchmm.store.store import Store

pytest.importorskip("fastapi", reason="the server extra is not installed")

from fastapi.testclient import TestClient

from searchmm.server import create_app


def client_for(index_dir: Path) -> TestClient:
    return TestClient(create_app(index_dir, device="cpu", warm=False))


def test_a_damaged_store_answers_500_with_json(tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    (index_dir / "searchmm.db").write_bytes(b"this is no SQLite file, just bytes " * 200)
    with client_for(index_dir) as client:
        response = client.get("/api/search", params={"q": "a cat"})
    assert response.status_code == 500, response.text
    assert "damaged" in response.json()["error"]


def test_no_index_and_an_empty_index_answer_400(tmp_path: Path) -> None:
    with client_for(tmp_path / "nowhere") as client:
        response = client.get("/api/search", params={"q": "a cat"})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"no index at {tmp_path / 'nowhere'}",
        "hint": "ingest_first",
    }

    empty = tmp_path / "empty"
    Store(empty, create=True).close()  # a real store that holds no model and no items yet
    with client_for(empty) as client:
        response = client.get("/api/search", params={"q": "a cat"})
    assert response.status_code == 400
    assert response.json() == {"error": f"the index at {empty} holds no images: ingest some"}


def test_the_openapi_schema_documents_the_error_statuses(tmp_path: Path) -> None:
    with client_for(tmp_path / "nowhere") as client:
        search = client.get("/openapi.json").json()["paths"]["/api/search"]["get"]
    assert {"400", "404", "422", "500", "503"} <= set(search["responses"])


def test_the_cli_line_still_names_the_flag(tmp_path: Path) -> None:
    result = run_cli("query", "a cat", "--index-dir", tmp_path / "nowhere", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"searchmm: error: no index at {tmp_path / 'nowhere'}: run `searchmm ingest PATH` first\n"
    )
    bad = run_cli("ingest", tmp_path, "--index-dir", tmp_path / "i", "--batch-size", "0",
                  check=False)  # fmt: skip
    assert bad.returncode == 1
    assert bad.stderr.endswith(
        "searchmm: error: --batch-size must be at least 1 and --workers at least 0\n"
    )


def test_library_errors_say_what_is_wrong_without_cli_flags() -> None:
    locked = LockedError("another searchmm process is writing", hint=Hint.WAIT_FOR_LOCK)
    assert locked.category is Category.BUSY and "--" not in str(locked)
    assert StoreError("x").category is Category.DAMAGED
    assert SearchmmError("x").category is Category.INVALID
    assert SearchmmError("x", category=Category.NOT_FOUND).category is Category.NOT_FOUND


def test_every_hint_has_cli_wording_that_keeps_the_message() -> None:
    assert set(CLI_HINTS) == set(Hint)
    for hint in set(Hint) - {Hint.BATCH_OPTIONS}:  # that one rewords the option names
        assert cli_message(SearchmmError("what went wrong", hint=hint)).startswith(
            "what went wrong"
        )
    assert cli_message(SearchmmError("plain")) == "plain"


def test_a_damaged_store_is_one_line_on_the_cli(tmp_path: Path) -> None:
    (tmp_path / "searchmm.db").write_bytes(b"this is no SQLite file, just bytes " * 200)
    result = run_cli("stats", "--index-dir", tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"searchmm: error: {tmp_path / 'searchmm.db'} is damaged")
    assert result.stderr.count("\n") == 1
