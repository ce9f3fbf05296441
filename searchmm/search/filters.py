"""Search filters: which stored items a query may return, decided in SQL (`Store.allowed_ids`)
before ranking.

Filtering before ranking (rather than after a top-k) keeps results correct with any index type:
the caller ranks only among the allowed ids, so k results come back whenever k items match.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from searchmm.errors import SearchmmError


@dataclass(frozen=True)
class Filters:
    """Conditions on items; all must hold. Empty filters allow everything."""

    path_glob: str | None = None  # SQLite GLOB on the full path: "*/holidays/*.jpg"
    modified_after: dt.datetime | None = None
    modified_before: dt.datetime | None = None
    min_width: int | None = None
    min_height: int | None = None
    where: tuple[tuple[str, str], ...] = ()  # metadata key = value (compared as text)

    @classmethod
    def parse(
        cls,
        path_glob: str | None = None,
        modified_after: str | None = None,
        modified_before: str | None = None,
        min_width: int | None = None,
        min_height: int | None = None,
        where: tuple[tuple[str, str], ...] = (),
    ) -> Filters:
        """From what a user types (the CLI's options, the API's JSON): dates as ISO text."""
        return cls(
            path_glob=path_glob,
            modified_after=parse_date(modified_after) if modified_after else None,
            modified_before=parse_date(modified_before) if modified_before else None,
            min_width=min_width,
            min_height=min_height,
            where=where,
        )

    @property
    def active(self) -> bool:
        return any(
            v not in (None, ())
            for v in (
                self.path_glob,
                self.modified_after,
                self.modified_before,
                self.min_width,
                self.min_height,
                self.where,
            )
        )


def parse_where(spec: str) -> tuple[str, str]:
    """`key=value` -> (key, value); the value may itself contain '='."""
    key, sep, value = spec.partition("=")
    if not sep or not key.strip():
        raise SearchmmError(f"metadata filter {spec!r}: write KEY=VALUE, e.g. lang=fr")
    return key.strip(), value


def parse_date(spec: str) -> dt.datetime:
    """An ISO date or date-time (local time when no zone is given)."""
    try:
        moment = dt.datetime.fromisoformat(spec)
    except ValueError:
        raise SearchmmError(f"{spec!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    return moment if moment.tzinfo else moment.astimezone()
