"""Exceptions that carry a message meant for the user (the CLI prints them on one line, exit 1)."""

from __future__ import annotations


class SearchmmError(Exception):
    """A user-facing error: bad input, missing weights, wrong model, locked store."""


class ModelLoadError(SearchmmError):
    """The encoder's weights or architecture cannot be had."""


class ModelMismatchError(SearchmmError):
    """A store built with one model was asked to use another."""


class StoreError(SearchmmError):
    """The SQLite store is unreadable, corrupt or from an unknown schema version."""


class IndexFileError(SearchmmError):
    """A FAISS index file is truncated, corrupt or not ours; it can be rebuilt from the store."""


class SourceError(SearchmmError):
    """A path or a text collection cannot be read as a whole."""


class LockedError(SearchmmError):
    """Another process holds the index directory's write lock."""
