"""Which runtime encodes: torch (open_clip itself) or onnxruntime (the store's verified export).

`auto` encodes queries with onnxruntime when the store has a verified export, with torch
otherwise; ingest encodes with torch. `SEARCHMM_BACKEND` sets it for every command, and the
`--backend` option and `Engine(backend=...)` for one.
"""

from __future__ import annotations

import os
from enum import StrEnum

BACKEND_ENV = "SEARCHMM_BACKEND"


class Backend(StrEnum):
    AUTO = "auto"
    TORCH = "torch"
    ONNX = "onnx"

    @classmethod
    def resolve(cls, value: str | Backend | None = None) -> Backend:
        """The given backend, else `$SEARCHMM_BACKEND`, else auto; a bad name is refused."""
        chosen = value or os.environ.get(BACKEND_ENV) or cls.AUTO
        try:
            return cls(str(chosen).lower())
        except ValueError:
            from searchmm.errors import SearchmmError

            raise SearchmmError(
                f"unknown backend {chosen!r}: use {', '.join(b.value for b in cls)}"
            ) from None
