"""CLIP's byte-level BPE tokenizer without torch: the token ids open_clip's tokenizer gives.

open_clip's own tokenizer module imports torch at the top, which costs a query seconds. This one
follows the same rules (ftfy and HTML unescaping, whitespace folding, lower case, CLIP's word
pattern, byte-to-unicode mapping, merges by rank, `</w>` word ends, start and end tokens, cut at
the context length with the end token kept) and returns numpy arrays. Before an export is used,
its ids are checked against open_clip's on probe strings (`model.onnx_export`).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import html
import itertools
import marshal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

VOCAB_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
# The vocabulary's tokens and merges in id and rank order, built once and kept beside it: 15 ms
# to read into lookup tables instead of 100 ms to build them (marshal's dicts with tuple keys,
# the first form of this file, took 27 ms). marshal version 4 reads the same on every Python
# since 3.4.
TABLES_FILENAME = "bpe_tables.marshal"
MARSHAL_VERSION = 4
START, END = "<start_of_text>", "<end_of_text>"
# open_clip reads merges 1 .. 49152 - 256 - 2 of the file (line 0 is a version header).
MERGES = 49152 - 256 - 2
WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


@functools.cache
def byte_table() -> dict[int, str]:
    """One printable unicode symbol per byte value: printable bytes stand for themselves, the
    others are moved above 255 in byte order, so no symbol is whitespace or a control. The
    table's order (printable bytes first) is the order of the first 256 token ids."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update((b, chr(256 + n)) for n, b in enumerate(others))
    return table


@functools.cache
def byte_symbols() -> tuple[str, ...]:
    """`byte_table` indexed by byte value."""
    table = byte_table()
    return tuple(table[b] for b in range(256))


def basic_clean(text: str) -> str:
    """open_clip's `basic_clean`: repaired by ftfy, unescaped twice, stripped. ftfy changes
    nothing in printable ASCII without entities, the usual query: it is imported (35 ms) only
    for other text."""
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = ftfy.fix_text(text)
    return html.unescape(html.unescape(text)).strip()


def clean(text: str) -> str:
    """open_clip's `lower` cleaning, CLIP's: basic, spaces folded, lower case."""
    return " ".join(basic_clean(text).split()).lower()


def up_to_end(tokens: Any) -> Any:
    """Token ids (numpy or torch, one row per text) cut after the last end token, CLIP's
    highest id: the padding a text tower that takes any length need not run."""
    return tokens[:, : int(tokens.argmax(1).max()) + 1]


class ClipTokenizer:
    """Texts -> (n, context_length) int64 token ids, zero-padded."""

    def __init__(self, vocab_path: str | Path, context_length: int = 77) -> None:
        """The tables come from `TABLES_FILENAME` beside the vocabulary if it is there and
        sound, else from the vocabulary itself."""
        import regex

        tokens, merges = _read_lists(Path(vocab_path).with_name(TABLES_FILENAME)) or _build_lists(
            Path(vocab_path)
        )
        self._lists = tokens, merges
        self.ids = dict(zip(tokens, range(len(tokens)), strict=True))  # a repeat: the last id
        self.ranks = dict(zip(merges, range(len(merges)), strict=True))  # "first second"
        self.start, self.end = self.ids[START], self.ids[END]
        self.context_length = context_length
        self.pattern = regex.compile(f"{START}|{END}|{WORD_PATTERN}", regex.IGNORECASE)
        self._words: dict[str, tuple[str, ...]] = {START: (START,), END: (END,)}

    def save_tables(self, path: Path) -> None:
        path.write_bytes(marshal.dumps(self._lists, MARSHAL_VERSION))

    def word_pieces(self, word: str) -> tuple[str, ...]:
        """A word's symbols, merged pair by pair, lowest rank first, until no pair merges."""
        known = self._words.get(word)
        if known is not None:
            return known
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            ranked = [
                (rank, first, second)
                for first, second in itertools.pairwise(pieces)
                if (rank := self.ranks.get(f"{first} {second}")) is not None
            ]
            if not ranked:
                break
            _, first, second = min(ranked)
            merged: list[str] = []
            i = 0
            while i < len(pieces):
                if i + 1 < len(pieces) and pieces[i] == first and pieces[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(pieces[i])
                    i += 1
            pieces = merged
        result = tuple(pieces)
        self._words[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """The ids of a text's words, without start and end tokens."""
        symbols = byte_symbols()
        ids: list[int] = []
        for match in self.pattern.findall(clean(text)):
            word = match if match in (START, END) else "".join(symbols[b] for b in match.encode())
            ids.extend(self.ids[piece] for piece in self.word_pieces(word))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end]
            if len(ids) > self.context_length:
                ids = [*ids[: self.context_length - 1], self.end]
            out[row, : len(ids)] = ids
        return out


Lists = tuple[list[str], list[str]]


def _build_lists(vocab_path: Path) -> Lists:
    """The tokens in id order and the merges ("first second") in rank order, as open_clip
    builds its tables from the vocabulary file."""
    with gzip.open(vocab_path, "rt", encoding="utf-8") as f:
        pairs = [line.split() for line in f.read().split("\n")[1 : MERGES + 1]]
    symbols = list(byte_table().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(p) for p in pairs)]
    return [*tokens, START, END], [f"{p[0]} {p[1]}" for p in pairs]


def _read_lists(path: Path) -> Lists | None:
    """The file's lists, or None if it is missing or damaged."""
    with contextlib.suppress(OSError, ValueError, EOFError, TypeError, KeyError):
        tokens, merges = marshal.loads(path.read_bytes())
        if isinstance(tokens, dict) and isinstance(merges, dict):  # the first form: dicts in
            tokens, merges = list(tokens), [f"{a} {b}" for a, b in merges]  # the same order
        if isinstance(tokens, list) and isinstance(merges, list) and tokens[-2:] == [START, END]:
            return tokens, merges
    return None
