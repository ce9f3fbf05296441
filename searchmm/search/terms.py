"""Combined queries: texts, images and stored items, each with a weight and a sign.

A term is written `[WEIGHT=]SCHEME:VALUE` with SCHEME one of `text`, `image`, `item`:

    text:golden retriever        2=text:golden retriever        image:./my photos/dog 1.jpg
    item:42                      0.5=image:C:/pics/a.png        text:2=x  (the text "2=x")

The scheme is mandatory and everything after its colon is taken verbatim, so paths with spaces,
colons or equals signs stay unambiguous. `--add` terms count positively, `--sub` negatively;
the query vector is the L2-normalised weighted sum of the terms' normalised vectors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from searchmm.errors import SearchmmError

if TYPE_CHECKING:
    import numpy as np


class Scheme(StrEnum):
    """What a term's value is: words to encode, an image file to encode, a stored item's id."""

    TEXT = "text"
    IMAGE = "image"
    ITEM = "item"

    @property
    def needs_model(self) -> bool:
        return self is not Scheme.ITEM


_TERM = re.compile(r"(?:(?P<weight>\d+(?:\.\d*)?|\.\d+)=)?(?P<scheme>[a-z]+):(?P<value>.*)", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query: a text, an image path or a stored item id, with a signed weight."""

    scheme: Scheme
    value: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", Scheme(self.scheme))


def parse_term(spec: str, *, sign: float = 1.0) -> Term:
    """`[WEIGHT=]SCHEME:VALUE` -> Term; the sign comes from the option (--add or --sub)."""
    match = _TERM.fullmatch(spec)
    if match is None or match["scheme"] not in tuple(Scheme):
        raise SearchmmError(
            f"cannot read query term {spec!r}: write [WEIGHT=]text:WORDS, [WEIGHT=]image:PATH "
            "or [WEIGHT=]item:ID (for example 2=text:golden retriever)"
        )
    weight = float(match["weight"]) if match["weight"] else 1.0
    if weight == 0:
        raise SearchmmError(f"query term {spec!r} has weight 0: leave it out instead")
    value = match["value"]
    if not value.strip():
        raise SearchmmError(f"query term {spec!r} is empty")
    if match["scheme"] == "item" and not value.strip().isdigit():
        raise SearchmmError(f"query term {spec!r}: an item is given by its numeric id")
    return Term(Scheme(match["scheme"]), value, sign * weight)


def parse_terms(add: Sequence[str] = (), sub: Sequence[str] = ()) -> list[Term]:
    return [parse_term(s) for s in add] + [parse_term(s, sign=-1.0) for s in sub]


def combine(terms: Sequence[Term], vector_of: Callable[[Term], np.ndarray]) -> np.ndarray:
    """The normalised weighted sum of the terms' vectors; refuses a sum that cancels out."""
    import numpy as np  # here: parsing terms (a client's whole job) needs no numpy

    if not terms:
        raise SearchmmError("the query is empty: give at least one text, image or item term")
    weighted = [term.weight * np.asarray(vector_of(term), dtype=np.float32) for term in terms]
    total = np.sum(weighted, axis=0, dtype=np.float32)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise SearchmmError("the query terms cancel each other out: change their weights")
    return np.asarray(total / norm, dtype=np.float32)
