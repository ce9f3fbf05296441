"""Which script a query is written in, so that a user of an English model who types Chinese is
told, once, that a multilingual model would understand it."""

from __future__ import annotations

import unicodedata

MULTILINGUAL_HINT = (
    "{model} was trained on English captions: for queries in other languages, index with a "
    "multilingual model, e.g. --model xlm-roberta-base-ViT-B-32 --pretrained laion5b_s13b_b90k "
    "or --model ViT-B-16-SigLIP2 --pretrained webli"
)


def mostly_non_latin(text: str) -> bool:
    """Whether most letters of `text` are of a script other than Latin (CJK, Cyrillic, ...)."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return False
    other = sum(1 for c in letters if not unicodedata.name(c, "").startswith("LATIN"))
    return other * 2 > len(letters)
