"""Hugging Face tokenizers without torch or transformers: the ids open_clip's `HFTokenizer`
gives (SigLIP, SigLIP2, xlm-roberta, nllb), from the `tokenizers` library alone.

The export saves the model's fast tokenizer as `tokenizer.json` with truncation and padding to
the context length set as transformers sets them for open_clip's call, and names the text
cleaning open_clip applies first; its ids are checked against open_clip's on probe strings
before the export is used (`model.onnx_export`).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from searchmm.model.clip_tokenizer import basic_clean

HF_TOKENIZER_FILE = "tokenizer.json"
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _whitespace(text: str) -> str:
    return " ".join(basic_clean(text).split())


def _lower(text: str) -> str:
    return _whitespace(text).lower()


def _canonicalize(text: str) -> str:
    """big_vision's canonical form: underscores as spaces, no ASCII punctuation, lower case."""
    text = basic_clean(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split())


CLEANERS: dict[str, Callable[[str], str]] = {
    "whitespace": _whitespace,
    "lower": _lower,
    "canonicalize": _canonicalize,
}


class HfTextTokenizer:
    """Texts -> (n, context_length) int64 token ids, as the export's tokenizer.json says."""

    def __init__(self, path: Path, clean: str, sep_id: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.clean = CLEANERS[clean]
        self.sep_id = sep_id

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([self.clean(text) for text in texts])
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        if self.sep_id is not None:  # open_clip's strip_sep_token
            ids[ids == self.sep_id] = 0
        return ids


def save_hf_tokenizer(wrapper: Any, context_length: int, out: Path) -> tuple[str, int | None]:
    """Save open_clip's `HFTokenizer` as a plain tokenizer.json; (its cleaning, the sep id it
    strips or None). ValueError for what the plain tokenizer cannot do."""
    from open_clip.tokenizer import get_clean_fn
    from tokenizers import Tokenizer

    if getattr(wrapper, "tokenizer_mode", ""):
        raise ValueError(f"its tokenizer mode {wrapper.tokenizer_mode!r} is not exported")
    clean = next((n for n in CLEANERS if get_clean_fn(n) is wrapper.clean_fn), None)
    fast = wrapper.tokenizer
    if clean is None or fast.pad_token_id is None or not hasattr(fast, "backend_tokenizer"):
        raise ValueError("its Hugging Face tokenizer has no fast form to export")
    plain = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    plain.enable_truncation(context_length, direction=fast.truncation_side)
    plain.enable_padding(
        direction=fast.padding_side,
        pad_id=fast.pad_token_id,
        pad_type_id=fast.pad_token_type_id,
        pad_token=fast.pad_token,
        length=context_length,
    )
    plain.save(str(out))
    return clean, (fast.sep_token_id if wrapper.strip_sep_token else None)
