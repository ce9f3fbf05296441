"""A store's storage choices: how it keeps vectors, and how much memory its indexes may take.

Both are recorded in the store when given, so that later commands (a query, an ingest that adds
1% more, a rebuild) keep to them without being told again. The vector type is fixed when the
store is created: a request for the other one on an existing store is refused before anything
is written (`searchmm export` then `searchmm import --embedding-dtype` converts a store).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from searchmm.errors import SearchmmError
from searchmm.index.budget import BUDGET_KEY
from searchmm.store.blobs import DTYPE_KEY, check_dtype

if TYPE_CHECKING:
    from searchmm.store.store import Store

_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_size(text: str) -> int:
    """Bytes from '8G', '512M', '1.5G' or a plain number of bytes (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if match is None or float(match.group(1)) <= 0:
        raise SearchmmError(f"cannot read {text!r} as a memory size: write e.g. 8G or 512M")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class StorageOptions:
    """`embedding_dtype` (float32 or float16) applies to a new store; `memory_budget` (bytes)
    bounds the RAM the automatically chosen indexes may take, from now on."""

    embedding_dtype: str | None = None
    memory_budget: int | None = None

    def __post_init__(self) -> None:
        if self.embedding_dtype is not None:
            check_dtype(self.embedding_dtype)
        if self.memory_budget is not None and self.memory_budget <= 0:
            raise SearchmmError(f"memory budget must be > 0 bytes, got {self.memory_budget}")

    def settle(self, store: Store) -> None:
        """Record the requested choices in `store` (open for writing), or refuse them."""
        if self.embedding_dtype is not None:
            kept = store.embedding_dtype()
            if store.get_model() is None:
                store.set_meta(DTYPE_KEY, self.embedding_dtype)
            elif kept != self.embedding_dtype:
                raise SearchmmError(
                    f"{store.path.parent} keeps its vectors as {kept}; a store's vector type is "
                    f"chosen when it is created: to convert it, `searchmm export` it and "
                    f"`searchmm import --embedding-dtype {self.embedding_dtype}` the export "
                    "into a new index directory"
                )
        if self.memory_budget is not None:
            store.set_meta(BUDGET_KEY, str(self.memory_budget))
