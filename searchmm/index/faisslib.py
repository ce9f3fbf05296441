"""FAISS, imported lazily: importing searchmm stays cheap and FAISS stays an optional extra."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any, TypeAlias

from searchmm.errors import SearchmmError

# A FAISS object (an index, parameters, a selector): faiss ships no type information.
FaissObject: TypeAlias = Any


def load_faiss() -> FaissObject:
    """Import FAISS on first use, so that importing searchmm stays cheap and FAISS optional."""
    try:
        import faiss
    except ImportError as exc:
        raise SearchmmError(
            "FAISS is not installed: pip install 'searchmm[cpu]' "
            "(or 'searchmm[gpu]' on a CUDA machine)"
        ) from exc
    return faiss


@contextlib.contextmanager
def threads_for(queries: int) -> Iterator[None]:
    """One OpenMP thread for a single query, all of them for a batch. Waking a team of threads
    costs more than one query's work (HNSW at 1M vectors: 5.8 ms with 2 threads, 0.42 ms with 1);
    a batch is split between them. (OpenMP keeps the setting per calling thread.)"""
    if queries != 1:
        yield
        return
    faiss = load_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def preload_in_background() -> None:
    """Start importing FAISS (~0.3 s) on a thread while the caller loads a model or encodes.

    The caller has numpy imported already and FAISS imports no torch, so the two imports share
    no module lock; a failure here is ignored and raised again, clearly, by `load_faiss()`.
    """

    def load() -> None:
        with contextlib.suppress(Exception):
            load_faiss()

    threading.Thread(target=load, name="searchmm-faiss-preload", daemon=True).start()


def faiss_reason(exc: BaseException) -> str:
    """One line: FAISS's message without its 'Error in <C++ signature> at <file:line>:' part."""
    text = str(exc).strip()
    match = re.match(r"Error in .*? at \S+:\d+: (?:Error: '.*?' failed: )?(.*)", text, re.DOTALL)
    return " ".join((match.group(1) if match else text).split()) or type(exc).__name__
