"""File paths in the database: TEXT, with names that are not valid UTF-8 kept as a hex form."""

from __future__ import annotations

import os

_FS_BYTES_PREFIX = "fsbytes:"  # an absolute path never starts with this


def path_to_db(value: str) -> str:
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _FS_BYTES_PREFIX + os.fsencode(value).hex()


def path_from_db(value: str) -> str:
    if value.startswith(_FS_BYTES_PREFIX):
        return os.fsdecode(bytes.fromhex(value[len(_FS_BYTES_PREFIX) :]))
    return value
