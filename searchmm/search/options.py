"""What a search takes besides its query: one typed, validated options object.

`SearchOptions` is what the searcher receives; the Engine's methods take the same fields as
keyword arguments (`SearchKwargs`), so that `engine.search_text("a cat", k=5)` stays short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from searchmm import defaults
from searchmm.errors import SearchmmError
from searchmm.search.filters import Filters
from searchmm.vocabulary import Kind, Target


class SearchKwargs(TypedDict, total=False):
    """The keyword arguments of the `Engine.search*` methods: the fields of `SearchOptions`."""

    target: str | Target
    k: int
    offset: int
    threshold: float | None
    filters: Filters | None


@dataclass(frozen=True)
class SearchOptions:
    """The `target` to search, the page (`k` results after skipping `offset`), the lowest score
    worth returning, and `filters` (k results come back whenever k items match them)."""

    target: Target = Target.IMAGES
    k: int = defaults.K
    offset: int = 0
    threshold: float | None = None
    filters: Filters | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Target.parse(self.target))
        if self.k < 1 or self.offset < 0:
            raise SearchmmError(
                f"k must be at least 1 and offset at least 0 (k={self.k}, offset={self.offset})"
            )

    @classmethod
    def of(cls, options: SearchKwargs) -> SearchOptions:
        """From `SearchKwargs`, checked before any model is loaded or index read."""
        return cls(
            target=Target.parse(options.get("target", Target.IMAGES)),
            k=options.get("k", defaults.K),
            offset=options.get("offset", 0),
            threshold=options.get("threshold"),
            filters=options.get("filters"),
        )

    @property
    def kind(self) -> Kind:
        return self.target.kind

    @property
    def wanted(self) -> int:
        """How many of the best results must be ranked to cut this page."""
        return self.k + self.offset
