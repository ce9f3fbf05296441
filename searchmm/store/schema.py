"""The SQLite tables: items, their embeddings, the one model, meta facts, the change log and
the schema history.

Private to the store package: the rest of searchmm sees the frozen records of `records`.
Column types and table shapes only, at the latest schema version (`migrations` upgrades older
files to the same shapes).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from searchmm.store.fspath import path_from_db, path_to_db
from searchmm.store.records import StoredModel
from searchmm.vocabulary import Status


class FsPath(TypeDecorator[str]):
    """A file path as TEXT; names that are not valid UTF-8 round-trip through a hex form."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else path_to_db(value)

    def process_result_value(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else path_from_db(value)


_HAS_CONTENT = text("content_digest IS NOT NULL")
_HAS_FILE = text("file_digest IS NOT NULL")


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    """Key/value facts about the store: schema version, chosen index spec per kind."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ModelRow(Base):
    """The one model whose vectors this store holds."""

    __tablename__ = "model"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    pretrained: Mapped[str] = mapped_column(String)
    config_json: Mapped[str | None] = mapped_column(Text)
    checkpoint_digest: Mapped[str | None] = mapped_column(String)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    dim: Mapped[int] = mapped_column(Integer)
    software: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    @classmethod
    def of(cls, model: StoredModel) -> ModelRow:
        return cls(
            id=model.id,
            name=model.name,
            pretrained=model.pretrained,
            config_json=model.config_json,
            checkpoint_digest=model.checkpoint_digest,
            seed=model.seed,
            dim=model.dim,
            software=dict(model.software),
        )


class ItemRow(Base):
    """An image file, or one text record of a text collection file."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("kind", "path", "locator"),
        # partial: imported items often have no digests (10M of them took 350 MB for nothing)
        Index("ix_items_content", "kind", "content_digest", sqlite_where=_HAS_CONTENT),
        Index("ix_items_file", "kind", "file_digest", sqlite_where=_HAS_FILE),
        Index("ix_items_kind_status", "kind", "status"),
        {"sqlite_autoincrement": True},  # ids are FAISS ids: never reuse one
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    path: Mapped[str] = mapped_column(FsPath)
    locator: Mapped[str] = mapped_column(String, default="")  # "" for images, "line:3" for texts
    text: Mapped[str | None] = mapped_column(Text)
    content_digest: Mapped[str | None] = mapped_column(String)
    file_digest: Mapped[str | None] = mapped_column(String)
    file_size: Mapped[int] = mapped_column(Integer)
    file_mtime_ns: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String, default=Status.OK.value)
    error: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # imported, its file not on this machine: no ingest removes it (`searchmm remove` does)
    external: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class EmbeddingRow(Base):
    """An item's vector as a float32 blob, so indexes rebuild without re-encoding."""

    __tablename__ = "embeddings"
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)


class ChangeRow(Base):
    """One embedding added, replaced or removed; indexes replay these to catch up."""

    __tablename__ = "changes"
    __table_args__ = (Index("ix_changes_kind_seq", "kind", "seq"), {"sqlite_autoincrement": True})
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    item_id: Mapped[int] = mapped_column(Integer)
    op: Mapped[str] = mapped_column(String)


class SchemaHistoryRow(Base):
    """When each schema version was reached, and by which searchmm (for support and audits)."""

    __tablename__ = "schema_history"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[str] = mapped_column(Text)
    searchmm_version: Mapped[str] = mapped_column(Text)
