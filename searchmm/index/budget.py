"""What an index of a given type takes in memory, so that the automatic choice can keep to a
budget (`--memory-budget 8G`), recorded in the store's meta under `BUDGET_KEY`.

The estimates are of resident memory once built, from the layouts FAISS documents, with the
slack its growing inverted lists leave (measured by bench/index_bench.py: a 1M-vector IVF-Flat
took 1.27x its file in RSS; IDMap2,Flat 1.02x). The store's own vectors are on disk, not in
the budget (the OS caches what re-ranking reads).
"""

from __future__ import annotations

import re

BUDGET_KEY = "memory_budget"
_LIST_SLACK = 1.3  # inverted lists grow by doubling: RSS over packed size, measured 1.27x
_ID_BYTES = 8
_IDMAP2_BYTES = 56  # id array plus the reverse hash map's node, per vector


def estimate_bytes(spec: str, n: int, dim: int) -> int:
    """Resident bytes of an index of `spec` holding `n` vectors of `dim` (auto-chosen types:
    Flat, IVF-Flat, IVF-PQ; others are estimated as if they held the full vectors)."""
    nlist = _number_after("IVF", spec) or 0
    coarse = 4 * dim * nlist  # the IVF centroids
    if (m := _number_after("PQ", spec)) is not None:
        bits = int(found.group(1)) if (found := re.search(r"PQ\d+x(\d+)", spec)) else 8
        codebooks = 4 * dim * (1 << bits)
        return int(n * (m * bits / 8 + _ID_BYTES) * _LIST_SLACK) + coarse + codebooks
    if nlist:
        return int(n * (4 * dim + _ID_BYTES) * _LIST_SLACK) + coarse
    return n * (4 * dim + _IDMAP2_BYTES)


def describe_bytes(size: float) -> str:
    if size >= 2**30:
        return f"{size / 2**30:.1f} GiB"
    return f"{size / 2**20:.1f} MiB"


def _number_after(prefix: str, spec: str) -> int | None:
    match = re.search(rf"(?:^|,|_){prefix}(\d+)", spec)
    return int(match.group(1)) if match else None
