"""Schema migrations against a store written by the schema-1 release (tests/fixtures/schema1)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from searchmm import Engine
from searchmm.errors import StoreError
from searchmm.store.migrations import SCHEMA_VERSION
from searchmm.store.store import Store

FIXTURE = Path(__file__).parent / "fixtures" / "schema1"
FIXTURE_ROOT = Path("/tmp/searchmm-fixture-schema1")  # where the old release ingested from
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A fresh copy of the schema-1 index dir, with its source files where it recorded them."""
    shutil.rmtree(FIXTURE_ROOT / "files", ignore_errors=True)
    shutil.copytree(FIXTURE / "files", FIXTURE_ROOT / "files")
    index_dir = tmp_path / "index"
    shutil.copytree(FIXTURE / "index", index_dir)
    return index_dir


def _sql(index_dir: Path, query: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        return db.execute(query).fetchall()


def _dump(index_dir: Path) -> list[tuple[Any, ...]]:
    """Every schema object and every row of the store, to see that nothing changed."""
    out = _sql(index_dir, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    for table in ("meta", "model", "items", "embeddings", "changes"):
        out += _sql(index_dir, f"SELECT * FROM {table} ORDER BY 1")
    return out


def _version(index_dir: Path) -> int:
    return int(_sql(index_dir, "SELECT value FROM meta WHERE key = 'schema_version'")[0][0])


def _same_up_to_ties(got: list[list[Any]], expected: list[list[Any]]) -> None:
    assert len(got) == len(expected)
    for (gid, gscore), (_, escore) in zip(got, expected, strict=True):
        assert gscore == pytest.approx(escore, abs=1e-5)
        tied = {eid for eid, s in expected if abs(s - gscore) <= 1e-5}
        assert gid in tied


def test_schema1_store_is_upgraded_and_answers_as_before(old_store: Path) -> None:
    assert _version(old_store) == 1
    with Engine(old_store, device="cpu") as engine:
        for target in ("images", "texts"):
            for query, expected in EXPECTED[target].items():
                hits = engine.search_text(query, target=target)
                _same_up_to_ties([[h.item.id, h.score] for h in hits], expected)
        hits = engine.search_item(1, k=5)
        _same_up_to_ties([[h.item.id, h.score] for h in hits], EXPECTED["item:1"])
    assert _version(old_store) == SCHEMA_VERSION == 4
    history = _sql(old_store, "SELECT version, applied_at, searchmm_version FROM schema_history")
    assert [row[0] for row in history] == [4] and all(history[0])
    indexes = {row[0] for row in _sql(old_store, "SELECT name FROM sqlite_master")}
    assert "ix_items_kind_status" in indexes


def test_upgraded_store_has_the_shape_of_a_new_one(old_store: Path, tmp_path: Path) -> None:
    Store(old_store, create=False).close()
    Store(tmp_path / "new", create=True).close()

    def shape(index_dir: Path) -> dict[str, Any]:
        names = _sql(
            index_dir, "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        )
        columns = {
            name: _sql(index_dir, f"PRAGMA table_info({name})")
            for kind, name in names
            if kind == "table"
        }
        indexes = {  # the same columns, and the same partial WHERE
            name: sql.replace("IF NOT EXISTS ", "")
            for name, sql in _sql(index_dir, "SELECT name, sql FROM sqlite_master")
            if name.startswith("ix_")
        }
        return {"objects": sorted(names), "columns": columns, "indexes": indexes}

    assert shape(old_store) == shape(tmp_path / "new")


def test_reingest_after_upgrade_encodes_nothing(old_store: Path) -> None:
    with Engine(old_store, device="cpu") as engine:
        summary = engine.ingest([FIXTURE_ROOT / "files"], texts_in_folders=True)
        assert summary.encoded_images == summary.encoded_texts == 0
        assert summary.new == summary.changed == summary.removed == 0
        stats = engine.stats().to_dict()
    assert stats["items"] == EXPECTED["stats"]["items"]
    for kind in ("image", "text"):
        assert stats["indexes"][kind]["vectors"] == EXPECTED["stats"]["indexes"][kind]["vectors"]


def test_failed_upgrade_rolls_back_and_leaves_the_old_store_usable(old_store: Path) -> None:
    # An object the migration creates already exists (on another column): CREATE INDEX fails.
    with sqlite3.connect(old_store / "searchmm.db") as db:
        db.execute("CREATE INDEX ix_items_kind_status ON items (path)")
    before = _dump(old_store)
    with pytest.raises(StoreError, match=r"cannot upgrade .*searchmm\.db from schema version 1"):
        Store(old_store, create=False)
    assert _dump(old_store) == before
    assert _version(old_store) == 1
    assert not _sql(old_store, "SELECT name FROM sqlite_master WHERE name = 'schema_history'")
    sql = _sql(old_store, "SELECT sql FROM sqlite_master WHERE name = 'ix_items_kind_status'")
    assert sql == [("CREATE INDEX ix_items_kind_status ON items (path)",)]
    assert _sql(old_store, "SELECT count(*) FROM items") == [(13,)]


def test_newer_schema_is_refused_untouched(old_store: Path) -> None:
    with sqlite3.connect(old_store / "searchmm.db") as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    before = _dump(old_store)
    with pytest.raises(StoreError, match="schema version 99, newer than this searchmm"):
        Store(old_store, create=False)
    with Engine(old_store) as engine, pytest.raises(StoreError, match="newer than this"):
        engine.search_text("a cat")  # a query's light reads see the version, and refuse too
    assert _dump(old_store) == before


def test_concurrent_openers_upgrade_once(old_store: Path) -> None:
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            Store(old_store, create=False).close()
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _version(old_store) == SCHEMA_VERSION
    history = _sql(old_store, "SELECT version FROM schema_history")
    assert [row[0] for row in history] == [SCHEMA_VERSION]
