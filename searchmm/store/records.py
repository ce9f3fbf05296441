"""What the store hands out and takes in: plain frozen values, never live ORM rows.

Callers can keep, share and compare these across threads and sessions; only the store package
knows the tables behind them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from searchmm.vocabulary import Kind, Status

ItemCounts = dict[str, dict[str, int]]  # kind -> status -> how many items


@dataclass(frozen=True)
class Item:
    """An image file, or one text record of a text collection file."""

    id: int
    kind: Kind
    path: str
    locator: str  # "" for images, "line:3" for texts
    text: str | None
    content_digest: str | None
    file_digest: str | None
    file_size: int
    file_mtime_ns: int
    width: int | None
    height: int | None
    status: Status
    error: str | None
    meta: dict[str, Any] | None
    external: bool = False  # imported, its file not on this machine: no ingest removes it

    def to_json(self) -> dict[str, Any]:
        """The user-facing fields, for --json output and the server."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind}
        if self.kind == Kind.TEXT:
            out.update(text=self.text, source=self.path, locator=self.locator)
        else:
            out.update(path=self.path, width=self.width, height=self.height)
        out["metadata"] = self.meta or {}
        return out


@dataclass(frozen=True)
class StoredModel:
    """The one model whose vectors a store holds."""

    id: int
    name: str
    pretrained: str
    config_json: str | None
    checkpoint_digest: str | None
    seed: int
    dim: int
    software: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileState:
    """A file as last seen on disk: where, its stat and its content digest."""

    path: str
    size: int
    mtime_ns: int
    digest: str | None


@dataclass(frozen=True)
class EncodedImage:
    """An image's new vector; `replaces` is the id of the stored item it updates, if any."""

    file: FileState
    vector: np.ndarray
    size: tuple[int, int] | None  # pixel size; None: a copy, sized like its stored source
    replaces: int | None = None


@dataclass(frozen=True)
class FailedImage:
    """An image that cannot be decoded, recorded so that the same bytes are not tried again."""

    file: FileState
    reason: str
    replaces: int | None = None


@dataclass(frozen=True)
class EncodedText:
    """One text record's new vector, of one text file."""

    locator: str
    text: str
    content_digest: str
    meta: dict[str, Any] | None
    vector: np.ndarray
    replaces: int | None = None


@dataclass(frozen=True)
class ImportedItem:
    """One row of an import: an item as another tool described it, with its vector.
    `wanted_id` is kept when the store has never given out that id (a round trip)."""

    kind: Kind
    path: str
    locator: str
    text: str | None
    content_digest: str | None
    file_digest: str | None  # an image's content digest; a text's collection file's
    file_size: int
    file_mtime_ns: int
    width: int | None
    height: int | None
    meta: dict[str, Any] | None
    external: bool
    vector: np.ndarray
    wanted_id: int | None = None


@dataclass
class ImportCounts:
    added: int = 0
    updated: int = 0  # the same item (kind, path, locator) with another vector
    unchanged: int = 0
    external: int = 0  # of the added images, those whose files are not on this machine


@dataclass(frozen=True)
class Delta:
    """The changes an index must apply to reach `seq`."""

    seq: int
    changed_ids: np.ndarray  # every item touched since the index was saved
    replaced_ids: np.ndarray  # those an older version of the index may hold (updated or removed)
    add_ids: np.ndarray  # those that have a vector now...
    vectors: np.ndarray  # ...and that vector
    count: int  # embeddings of the kind in the store at `seq`
    complete: bool = True  # False: changes after `since_seq` were pruned, this delta lacks them
