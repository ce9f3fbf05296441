"""The words searchmm's layers share: kinds of item, search targets, statuses, change operations.

`StrEnum`s, so they are stored, printed and sent as JSON as the plain strings they always were.
"""

from __future__ import annotations

from enum import StrEnum


class Kind(StrEnum):
    """What an item is: an image file, or one text record of a text collection."""

    IMAGE = "image"
    TEXT = "text"

    @property
    def target(self) -> Target:
        return Target.IMAGES if self is Kind.IMAGE else Target.TEXTS


class Target(StrEnum):
    """What a search returns (the CLI's and the server's `--target`)."""

    IMAGES = "images"
    TEXTS = "texts"

    @property
    def kind(self) -> Kind:
        return Kind.IMAGE if self is Target.IMAGES else Kind.TEXT

    @classmethod
    def parse(cls, value: str | Target | Kind) -> Target:
        """`images`/`texts` (and, leniently, `image`/`text`); anything else is a `SearchmmError`."""
        if isinstance(value, Kind):
            return value.target
        for target in cls:
            if value in (target.value, target.kind.value):
                return target
        from searchmm.errors import SearchmmError

        raise SearchmmError(f"unknown target {value!r}: use images or texts")


class Status(StrEnum):
    """Whether an item is searchable, or failed to decode (and why is stored beside it)."""

    OK = "ok"
    FAILED = "failed"


class ChangeOp(StrEnum):
    """What happened to an item's embedding: the change log that indexes replay."""

    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"


KINDS: tuple[Kind, ...] = tuple(Kind)
