"""Cross-modal retrieval metrics: Recall@K, MRR, mean and median rank, in both directions.

Names follow CLIP_benchmark: `image_retrieval_*` is text -> image (one query per caption, one
correct image), `text_retrieval_*` is image -> text (one query per image, any of its captions
counts). Ranks are 1-based and taken over the whole gallery.

Conventions, chosen so that every number is reproducible:

- Ties are pessimistic: a gallery item that scores exactly as high as the best relevant item
  ranks before it. The rank of a query is 1 + the number of non-relevant gallery items scoring
  >= its best relevant item. CLIP_benchmark takes `torch.topk` of the score matrix, which leaves
  the order of equal scores to the sort algorithm (not index order, not stable), so it has no
  convention to copy; pessimistic ties mean a collapsed model whose vectors are all equal scores
  Recall@1 = 0, never 1. With continuous embeddings ties only come from duplicate items.
- Images without any caption are not text-retrieval queries (there is nothing to find); they
  stay in the gallery of text->image queries. `text_retrieval_queries` and
  `text_retrieval_excluded` say how many were asked and left out. (CLIP_benchmark would count
  such an image as a miss; its datasets have none.)
- Scores are dot products: pass L2-normalised vectors to rank by cosine similarity.

The score matrix is never held whole: queries are taken in chunks of rows, so 5,000 images x
25,010 captions needs tens of MB, not the 500 MB of the full matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from searchmm.errors import SearchmmError

DEFAULT_KS = (1, 5, 10)
# Score-matrix elements per chunk (float32): 16M elements = 64 MB, plus a boolean mask of 16 MB.
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class RetrievalRanks:
    """1-based ranks of the first relevant item for every query of both directions."""

    image_retrieval: np.ndarray  # (n_texts,): rank of each caption's image among all images
    text_retrieval: np.ndarray  # (n_queried,): rank of each queried image's best caption
    text_queries: np.ndarray  # (n_queried,): the image rows that were queried (have captions)


def normalise_ks(ks: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct Ks; refuses K < 1 with a user-facing error."""
    values = sorted({int(k) for k in ks})
    if not values:
        raise SearchmmError("give at least one K for Recall@K")
    if values[0] < 1:
        raise SearchmmError(f"K must be at least 1, got {values[0]}")
    return tuple(values)


def _matrix(values: object, what: str) -> np.ndarray:
    array = np.ascontiguousarray(np.asarray(values, dtype=np.float32))
    if array.ndim != 2 or array.shape[0] == 0:
        raise SearchmmError(f"{what} must be a non-empty (n, dim) matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SearchmmError(f"{what} holds NaN or infinite values")
    return array


def _owners(text_to_image: object, n_texts: int, n_images: int) -> np.ndarray:
    owner = np.asarray(text_to_image)
    if owner.shape != (n_texts,) or (owner.size and not np.issubdtype(owner.dtype, np.integer)):
        raise SearchmmError(
            f"text_to_image must hold one integer image row per text ({n_texts}), "
            f"got shape {owner.shape} of {owner.dtype}"
        )
    owner = owner.astype(np.int64)
    if owner.size and (owner.min() < 0 or owner.max() >= n_images):
        raise SearchmmError(f"text_to_image must point at image rows 0..{n_images - 1}")
    return owner


def _chunk_rows(gallery: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(1, min(4096, CHUNK_ELEMENTS // max(1, gallery)))


def retrieval_ranks(
    image_emb: object, text_emb: object, text_to_image: object, *, chunk_rows: int | None = None
) -> RetrievalRanks:
    """Rank of the first relevant item for every query, over the full gallery (ties pessimistic).

    `text_to_image[i]` is the image row of caption i. `chunk_rows` bounds how many score-matrix
    rows are held at once (default: about 16M scores).
    """
    images = _matrix(image_emb, "image_emb")
    texts = _matrix(text_emb, "text_emb")
    if images.shape[1] != texts.shape[1]:
        raise SearchmmError(
            f"image_emb has {images.shape[1]} dimensions and text_emb {texts.shape[1]}"
        )
    owner = _owners(text_to_image, texts.shape[0], images.shape[0])
    return RetrievalRanks(
        image_retrieval=_text_to_image_ranks(texts, images, owner, chunk_rows),
        text_retrieval=_image_to_text_ranks(images, texts, owner, chunk_rows),
        text_queries=np.flatnonzero(np.bincount(owner, minlength=images.shape[0]) > 0),
    )


def _text_to_image_ranks(
    texts: np.ndarray, images: np.ndarray, owner: np.ndarray, chunk_rows: int | None
) -> np.ndarray:
    """One relevant image per caption: rank = number of images scoring >= the correct one."""
    ranks = np.empty(texts.shape[0], dtype=np.int64)
    step = _chunk_rows(images.shape[0], chunk_rows)
    for start in range(0, texts.shape[0], step):
        scores = texts[start : start + step] @ images.T
        correct = scores[np.arange(scores.shape[0]), owner[start : start + step]]
        ranks[start : start + step] = np.count_nonzero(scores >= correct[:, None], axis=1)
    return ranks


def _image_to_text_ranks(
    images: np.ndarray, texts: np.ndarray, owner: np.ndarray, chunk_rows: int | None
) -> np.ndarray:
    """Any caption of the image counts: rank of its best caption, other captions not counted."""
    counts = np.bincount(owner, minlength=images.shape[0])
    queried = np.flatnonzero(counts > 0)
    by_image = np.argsort(owner, kind="stable")  # caption columns grouped by image, in order
    first = np.concatenate(([0], np.cumsum(counts)))  # captions of image i: first[i]:first[i+1]
    ranks = np.empty(queried.size, dtype=np.int64)
    step = _chunk_rows(texts.shape[0], chunk_rows)
    for start in range(0, queried.size, step):
        rows = queried[start : start + step]
        scores = images[rows] @ texts.T
        # Images without captions were left out, so the chunk's captions are one contiguous run.
        columns = by_image[first[rows[0]] : first[rows[-1] + 1]]
        per_query = counts[rows]
        query_of = np.repeat(np.arange(rows.size), per_query)
        relevant = scores[query_of, columns]
        offsets = np.concatenate(([0], np.cumsum(per_query)[:-1]))
        best = np.maximum.reduceat(relevant, offsets)
        tied_relevant = np.bincount(query_of[relevant >= best[query_of]], minlength=rows.size)
        at_least = np.count_nonzero(scores >= best[:, None], axis=1)
        ranks[start : start + step] = at_least - tied_relevant + 1
    return ranks


def summarise_ranks(prefix: str, ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@K, MRR, mean and median rank of one direction's 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"{prefix}_recall@{k}": float(np.mean(ranks <= k)) for k in ks}
    out[f"{prefix}_mrr"] = float(np.mean(1.0 / ranks))
    out[f"{prefix}_mean_rank"] = float(ranks.mean())
    out[f"{prefix}_median_rank"] = float(np.median(ranks))
    return out


def retrieval_metrics(
    image_emb: object,
    text_emb: object,
    text_to_image: object,
    ks: Iterable[int] = DEFAULT_KS,
    *,
    chunk_rows: int | None = None,
) -> dict[str, float]:
    """Both directions' Recall@K, MRR and mean/median rank, exactly as the full score matrix.

    Keys: `image_retrieval_recall@K`, `image_retrieval_mrr`, `image_retrieval_mean_rank`,
    `image_retrieval_median_rank` (text -> image, one query per caption) and the same with
    `text_retrieval_` (image -> text, one query per image that has a caption), plus the query
    counts `image_retrieval_queries`, `text_retrieval_queries` and `text_retrieval_excluded`
    (images without captions). See the module docstring for ties.
    """
    wanted = normalise_ks(ks)
    ranks = retrieval_ranks(image_emb, text_emb, text_to_image, chunk_rows=chunk_rows)
    n_images = int(np.asarray(image_emb).shape[0])
    out = summarise_ranks("image_retrieval", ranks.image_retrieval, wanted)
    out.update(summarise_ranks("text_retrieval", ranks.text_retrieval, wanted))
    out["image_retrieval_queries"] = int(ranks.image_retrieval.size)
    out["text_retrieval_queries"] = int(ranks.text_retrieval.size)
    out["text_retrieval_excluded"] = n_images - int(ranks.text_retrieval.size)
    return out


def recall_from_hits(
    hit_labels: np.ndarray, query_labels: np.ndarray, ks: Iterable[int] = DEFAULT_KS
) -> dict[str, float]:
    """Recall@K and MRR within the window, from an index's top-k results only (ANN indexes).

    `hit_labels[q]` are the labels of query q's hits, best first (-1 pads a short result), and a
    hit is relevant when its label equals `query_labels[q]` (for image -> text, label each
    caption hit with its image row). Ranks beyond the window are unknown, so `mrr@W` (W the
    window) counts 1/rank for a relevant hit within it and 0 otherwise: MRR cut at the window,
    not comparable with the full MRR (an ANN index that misses better items can even rank the
    relevant one higher). Mean and median rank cannot be known and are left out.
    """
    hits = np.asarray(hit_labels, dtype=np.int64)
    labels = np.asarray(query_labels, dtype=np.int64)
    if hits.ndim != 2 or labels.shape != (hits.shape[0],) or hits.shape[0] == 0:
        raise SearchmmError(
            f"hit_labels must be (queries, k) and query_labels (queries,), got {hits.shape} "
            f"and {labels.shape}"
        )
    wanted = normalise_ks(ks)
    window = hits.shape[1]
    if wanted[-1] > window:
        raise SearchmmError(f"Recall@{wanted[-1]} needs at least {wanted[-1]} hits per query")
    relevant = (hits == labels[:, None]) & (hits >= 0)
    found = relevant.any(axis=1)
    rank = np.where(found, relevant.argmax(axis=1) + 1, window + 1)
    out = {f"recall@{k}": float(np.mean(rank <= k)) for k in wanted}
    out[f"mrr@{window}"] = float(np.mean(np.where(found, 1.0 / rank, 0.0)))
    return out
