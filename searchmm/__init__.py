"""searchmm: cross-modal retrieval search over photos and texts with open_clip, SQLite and FAISS.

    from searchmm import Engine
    with Engine("./indexes") as engine:
        engine.ingest(["./photos"])
        for hit in engine.search_text("a cat on a couch", k=5):
            print(hit.rank, hit.score, hit.path)

The public names are resolved on first use (PEP 562), so `import searchmm` and the command's
`--help` cost nothing: numpy, SQLAlchemy, torch and FAISS load only where they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from searchmm.engine.engine import Engine
    from searchmm.engine.stats import Stats
    from searchmm.errors import (
        IndexFileError,
        LockedError,
        ModelLoadError,
        ModelMismatchError,
        NotFoundError,
        SearchmmError,
        SourceError,
        StoreError,
    )
    from searchmm.ingest.summary import Failure, IngestSummary
    from searchmm.model.spec import ModelSpec
    from searchmm.search.filters import Filters
    from searchmm.search.hits import Hit
    from searchmm.search.options import SearchOptions
    from searchmm.search.terms import Term

__version__ = "0.1.0"

_WHERE = {
    "Engine": "searchmm.engine.engine",
    "Stats": "searchmm.engine.stats",
    "Failure": "searchmm.ingest.summary",
    "IngestSummary": "searchmm.ingest.summary",
    "ModelSpec": "searchmm.model.spec",
    "Filters": "searchmm.search.filters",
    "Hit": "searchmm.search.hits",
    "SearchOptions": "searchmm.search.options",
    "Term": "searchmm.search.terms",
    **{
        name: "searchmm.errors"
        for name in (
            "IndexFileError",
            "LockedError",
            "ModelLoadError",
            "ModelMismatchError",
            "NotFoundError",
            "SearchmmError",
            "SourceError",
            "StoreError",
        )
    },
}

__all__ = [
    "Engine",
    "Failure",
    "Filters",
    "Hit",
    "IndexFileError",
    "IngestSummary",
    "LockedError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSpec",
    "NotFoundError",
    "SearchOptions",
    "SearchmmError",
    "SourceError",
    "Stats",
    "StoreError",
    "Term",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
