"""What every command that encodes into a store shares: its model recorded first, the indexes
brought up to date after, and the model's ONNX export kept for torch-free queries."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from searchmm.model.onnx_files import remove_dead_temps

if TYPE_CHECKING:  # a query imports this module too: SQLAlchemy (the store's writes) is for writers
    from searchmm.engine.directory import IndexDirectory
    from searchmm.engine.model_binding import ModelBinding
    from searchmm.model.encoder import Encoder
    from searchmm.store.store import Store


@contextlib.contextmanager
def encoding_into(
    directory: IndexDirectory, model: ModelBinding, load: Callable[[], Encoder], wait: float
) -> Iterator[Store]:
    """The store, open for writing with the model recorded (a new store is created only once
    its weights have loaded: weights that cannot be had leave no empty store behind)."""
    if not directory.exists():
        load()
    with directory.writing(wait) as store:
        model.record(store)
        yield store
        directory.sync()
        stored = store.get_model()
    remove_dead_temps(directory.path)  # exports of killed processes
    if stored is not None:
        model.keep_export(stored)  # once: for torch-free queries and ingests
