"""`POST /api/query`: what `searchmm query` can ask, as JSON: weighted text and item terms,
filters, paging and a threshold, validated the same way. Image terms are not taken: the server
never reads a path that a request names (a query image is uploaded to /api/search/image)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from searchmm import defaults
from searchmm.search.filters import Filters
from searchmm.search.options import SearchKwargs
from searchmm.search.terms import Scheme, Term

MAX_TERMS = 32
MAX_TERM_CHARS = 2000


class TermIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scheme: Literal["text", "item"]
    value: Annotated[str, Field(min_length=1, max_length=MAX_TERM_CHARS)]
    weight: float = 1.0


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path_glob: str | None = None
    modified_after: str | None = Field(None, description="an ISO date or date-time")
    modified_before: str | None = Field(None, description="an ISO date or date-time")
    min_width: Annotated[int, Field(ge=1)] | None = None
    min_height: Annotated[int, Field(ge=1)] | None = None
    where: list[tuple[str, str]] = Field(default_factory=list, description="metadata KEY = VALUE")


class QueryIn(BaseModel):
    """One query: the weighted sum of its terms' vectors, searched with these options."""

    model_config = ConfigDict(extra="forbid")

    terms: Annotated[list[TermIn], Field(min_length=1, max_length=MAX_TERMS)]
    target: Literal["images", "texts"] = "images"
    k: Annotated[int, Field(ge=1, le=defaults.MAX_K)] = defaults.K
    offset: Annotated[int, Field(ge=0, le=defaults.MAX_OFFSET)] = 0
    threshold: float | None = None
    filters: FiltersIn | None = None

    def search_terms(self) -> list[Term]:
        return [Term(Scheme(t.scheme), t.value, t.weight) for t in self.terms]

    def options(self) -> SearchKwargs:
        """The threshold and filters (paging is the page's), filters parsed as the CLI parses
        them, with the same errors."""
        options: SearchKwargs = {"threshold": self.threshold}
        if self.filters is not None:
            f = self.filters
            options["filters"] = Filters.parse(
                f.path_glob,
                f.modified_after,
                f.modified_before,
                f.min_width,
                f.min_height,
                tuple(f.where),
            )
        return options
