"""Numbered schema migrations: an older store is upgraded in place, in one transaction.

Each migration is the SQL that takes a store from the version before it to its own number.
A new store is created at the latest version directly, from the table definitions in `schema`
(which must describe what the migrations produce). A store newer than this code is refused
untouched: it may hold what this code would misread. SQLAlchemy is imported only to upgrade:
reading `SCHEMA_VERSION` must not load it (see `reads`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from searchmm.errors import StoreError

if TYPE_CHECKING:
    from searchmm.store.store import Store

MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2: record when each version was reached; searches and counts select items by kind+status.
    2: (
        "CREATE TABLE schema_history (\n\tversion INTEGER NOT NULL, \n\tapplied_at TEXT NOT NULL,"
        " \n\tsearchmm_version TEXT NOT NULL, \n\tPRIMARY KEY (version)\n)",
        "CREATE INDEX ix_items_kind_status ON items (kind, status)",
    ),
    # 3: imported items whose files are not on this machine, which no ingest removes.
    3: ("ALTER TABLE items ADD COLUMN external BOOLEAN DEFAULT '0' NOT NULL",),
    # 4: digest indexes hold only the items that have one (imports of millions have none).
    4: (
        "DROP INDEX ix_items_content",
        "CREATE INDEX ix_items_content ON items (kind, content_digest) "
        "WHERE content_digest IS NOT NULL",
        "DROP INDEX ix_items_file",
        "CREATE INDEX ix_items_file ON items (kind, file_digest) WHERE file_digest IS NOT NULL",
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)

_VERSION_SQL = "SELECT value FROM meta WHERE key = 'schema_version'"
_HAS_META_SQL = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"


def schema_version_of(db: Any) -> int:
    """The version a store's file is at (0: no tables yet), read through a `sqlite3`
    connection or cursor (the reads' own, or the upgrade's inside its transaction)."""
    if db.execute(_HAS_META_SQL).fetchone() is None:
        return 0
    row = db.execute(_VERSION_SQL).fetchone()
    return int(row[0]) if row else 0


def prepare(store: Store) -> None:
    """Bring `store` to `SCHEMA_VERSION` (creating it if empty), or refuse it."""
    from sqlalchemy.exc import DatabaseError

    from searchmm.store.connections import unusable

    version = store.schema_version()
    if version == SCHEMA_VERSION:
        return
    _refuse_newer(store.path, version)
    try:
        _upgrade(store)
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        raise unusable(store.path, exc) from exc


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this searchmm knows "
            f"(version {SCHEMA_VERSION}): upgrade searchmm to use it; the file was not changed"
        )


def _upgrade(db: Store) -> None:
    """Every step in one `BEGIN IMMEDIATE` transaction: another process that opens the store at
    the same time waits, then finds it upgraded; a failed step leaves the old file as it was."""
    from searchmm import __version__

    with db.immediate() as cursor:
        version = schema_version_of(cursor)
        if version == SCHEMA_VERSION:
            return  # upgraded (or created) by someone else while we waited
        _refuse_newer(db.path, version)
        steps = _create_latest(db) if version == 0 else _steps_from(version)
        for number, statement in steps:
            try:
                cursor.execute(statement)
            except sqlite3.Error as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise
                raise StoreError(
                    f"cannot upgrade {db.path} from schema version {version} to {number} "
                    f"({exc}); nothing was changed: the file still works with the searchmm "
                    "that wrote it"
                ) from exc
        cursor.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        cursor.execute(
            "INSERT OR REPLACE INTO schema_history (version, applied_at, searchmm_version) "
            "VALUES (?, ?, ?)",
            (SCHEMA_VERSION, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), __version__),
        )


def _steps_from(version: int) -> list[tuple[int, str]]:
    return [
        (number, statement)
        for number in range(version + 1, SCHEMA_VERSION + 1)
        for statement in MIGRATIONS[number]
    ]


def _create_latest(db: Store) -> list[tuple[int, str]]:
    from sqlalchemy.schema import CreateIndex, CreateTable

    from searchmm.store.schema import Base

    dialect = db.engine.dialect
    statements = [
        str(CreateTable(table, if_not_exists=True).compile(dialect=dialect))
        for table in Base.metadata.sorted_tables
    ]
    statements += [
        str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
        for table in Base.metadata.sorted_tables
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    return [(SCHEMA_VERSION, statement) for statement in statements]
