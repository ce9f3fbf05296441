"""Exceptions that carry a message meant for the user, what kind of failure it is, and a hint.

The message says what is wrong in the library's own terms. `hint` names, as data, what the
caller can do about it; each front end words it its own way (the CLI names a flag, the server
returns the hint as a field). `category` says whose fault it is, which the server maps to a status:

    INVALID 400      the request or the input is wrong, or the index holds nothing to search yet
    NOT_FOUND 404    the item asked for does not exist
    CONFLICT 409     the store was built with another model
    DAMAGED 500      the store or an index file is unreadable, corrupt or from an unknown version
    BUSY 503         another process holds a lock: the same request can succeed later
    UNAVAILABLE 503  the model cannot be loaded: the server cannot answer until it is fixed
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """Whose fault an error is, and so the HTTP status the server answers it with."""

    INVALID = "invalid"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    DAMAGED = "damaged"
    BUSY = "busy"
    UNAVAILABLE = "unavailable"


class Hint(StrEnum):
    """What the caller can do about an error, as data; front ends put it in their own words."""

    INGEST_FIRST = "ingest_first"
    OTHER_INDEX_DIR = "other_index_dir"
    OWN_INDEX_DIR = "own_index_dir"
    WAIT_FOR_LOCK = "wait_for_lock"
    PASS_PRETRAINED = "pass_pretrained"
    PASS_PRETRAINED_FILE = "pass_pretrained_file"
    PASS_PRETRAINED_COPY = "pass_pretrained_copy"
    PASS_MODEL_CONFIG = "pass_model_config"
    ALLOW_MISSING = "allow_missing"
    BATCH_OPTIONS = "batch_options"
    DROP_MODEL_NAME = "drop_model_name"
    PASS_SPLIT_FILE = "pass_split_file"
    USE_TORCH_BACKEND = "use_torch_backend"
    PASS_RESUME = "pass_resume"
    TOKEN = "token"


class SearchmmError(Exception):
    """A user-facing error: bad input, missing weights, wrong model, locked store."""

    category: Category = Category.INVALID

    def __init__(
        self, message: str, *, hint: Hint | None = None, category: Category | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if category is not None:
            self.category = category


class ModelLoadError(SearchmmError):
    """The encoder's weights or architecture cannot be had."""

    category = Category.UNAVAILABLE


class ModelMismatchError(SearchmmError):
    """A store built with one model was asked to use another."""

    category = Category.CONFLICT


class StoreError(SearchmmError):
    """The SQLite store is unreadable, corrupt or from an unknown schema version."""

    category = Category.DAMAGED


class IndexFileError(SearchmmError):
    """A FAISS index file is truncated, corrupt or not ours; it can be rebuilt from the store."""

    category = Category.DAMAGED


class NotFoundError(SearchmmError):
    """An item asked for by its id is not stored."""

    category = Category.NOT_FOUND


class SourceError(SearchmmError):
    """A path or a text collection cannot be read as a whole."""


class LockedError(SearchmmError):
    """Another process holds the index directory's write lock."""

    category = Category.BUSY
