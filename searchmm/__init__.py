"""searchmm: cross-modal retrieval search over photos and texts with open_clip, SQLite and FAISS.

The public API, re-exported here; importing it does no work (models load on first use).
"""

from .api import Engine, Stats
from .encoders import ModelSpec
from .errors import (
    IndexFileError,
    LockedError,
    ModelLoadError,
    ModelMismatchError,
    SearchmmError,
    SourceError,
    StoreError,
)
from .ingest import Failure, IngestSummary
from .search import Hit

__version__ = "0.1.0"

__all__ = [
    "Engine",
    "Failure",
    "Hit",
    "IndexFileError",
    "IngestSummary",
    "LockedError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelSpec",
    "SearchmmError",
    "SourceError",
    "Stats",
    "StoreError",
    "__version__",
]
