"""A GPU copy of a CPU FAISS index, for bulk adds and searches; the CPU index stays the one saved.

The copy is made lazily (on the first search, or a bulk build); once it exists adds go to it,
and the CPU index is refreshed from it only when needed (save, remove, ids, k above the GPU
limit). Types FAISS cannot put on a GPU (HNSW) stay on the CPU silently.
"""

from __future__ import annotations

import numpy as np

from searchmm.errors import SearchmmError
from searchmm.index.faisslib import FaissObject, load_faiss

GPU_MAX_K = 2048  # FAISS's GPU k-selection limit; a larger k is answered on the CPU index


def gpu_count() -> int:
    """GPUs FAISS can use: faiss-cpu has get_num_gpus (0) but no GPU cloner."""
    faiss = load_faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "index_cpu_to_all_gpus") else 0


class GpuMirror:
    """The GPU copy of one CPU index, and whether it holds adds the CPU index lacks."""

    def __init__(self, use_gpu: bool | None) -> None:
        """`use_gpu` None: use every GPU there is; True: there must be one; False: never."""
        gpus = gpu_count()
        if use_gpu and not gpus:
            raise SearchmmError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")
        self.wanted = bool(gpus) if use_gpu is None else use_gpu
        self.index: FaissObject = None
        self.unsupported = False  # the type cannot go to a GPU: never try again
        self.ahead = False  # the copy holds adds the CPU index lacks

    def ensure(self, cpu: FaissObject) -> FaissObject:
        """The GPU copy of `cpu`, made on first use; None when unwanted or impossible."""
        if not self.wanted or self.unsupported or not cpu.is_trained:
            return None
        if self.index is None:
            try:
                self.index = load_faiss().index_cpu_to_all_gpus(cpu)
            except RuntimeError:  # "This index type is not implemented on GPU." (HNSW, ...)
                self.unsupported = True
                return None
        return self.index

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Add to the copy if there is one (the CPU index is then behind); False if not."""
        if self.index is None:
            return False
        self.index.add_with_ids(vectors, ids)
        self.ahead = True
        return True

    def ntotal(self, cpu: FaissObject) -> int:
        return int((self.index if self.ahead else cpu).ntotal)

    def searcher(self, cpu: FaissObject, k: int) -> FaissObject:
        """The GPU copy to answer a k-nearest search, or None: use the (refreshed) CPU index."""
        return self.ensure(cpu) if k <= GPU_MAX_K else None

    def refreshed_cpu(self) -> FaissObject:
        """A CPU index with every add the copy holds, or None when the CPU index is current."""
        if not self.ahead:
            return None
        self.ahead = False
        return load_faiss().index_gpu_to_cpu(self.index)

    def drop(self) -> None:
        """Forget the copy (GPU indexes cannot remove ids): it is made again on the next use."""
        self.index = None
        self.ahead = False
