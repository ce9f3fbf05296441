"""Evaluate an engine on a retrieval dataset through its own ingest, store and index.

    dataset -> ingest images (file paths) + captions (a COCO-format JSON in the index dir)
            -> stored vectors mapped back to dataset rows -> exact metrics
            -> optionally reindex with an ANN spec, search both ways, Recall@K beside exact

The vectors stay in the engine's index directory, so a second run with the same model and data
encodes nothing (unchanged files are recognised by size, mtime and content). Images are decoded
exactly as CLIP_benchmark decodes them (`Image.open(path).convert("RGB")`, in full), so the model
sees the reference pixels; images a bench stored before it decoded so are encoded again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from searchmm.atomicfile import write_bytes_atomic
from searchmm.defaults import BATCH_SIZE as DEFAULT_BATCH_SIZE
from searchmm.engine.engine import Engine
from searchmm.errors import Hint, SearchmmError
from searchmm.model.spec import ModelSpec
from searchmm.settings import resolve_index_dir
from searchmm.store.connections import DB_FILENAME
from searchmm.vocabulary import Kind, Status, Target

from .datasets import RetrievalDataset
from .metrics import DEFAULT_KS, normalise_ks, recall_from_hits, retrieval_metrics
from .report import EvaluationReport

log = logging.getLogger("searchmm")

MISSING = "missing on disk"
COUNT_KEYS = ("image_retrieval_queries", "text_retrieval_queries", "text_retrieval_excluded")
# An index searched for k + (items outside the dataset) hits, so that k of ours remain; beyond
# this many foreign items the bench needs an index directory of its own.
MAX_FOREIGN_ITEMS = 1000
# Written once a bench's images were decoded exactly; a store without it may hold vectors of
# images decoded reduced (searchmm before this file existed), which are encoded again.
EXACT_DECODE_MARK = "bench-exact-decode"


def default_bench_dir(
    dataset: RetrievalDataset, spec: ModelSpec, root: str | os.PathLike[str] | None = None
) -> Path:
    """`<index dir>/bench/<dataset>-<split>-<model>-<weights>`: away from the user's photos."""
    weights = spec.pretrained
    if spec.checkpoint_digest:
        weights = f"{Path(weights).stem}-{spec.checkpoint_digest[:8]}"
    slug = f"{spec.name}-{weights}"
    if spec.config_json:  # two custom configs may share a file name
        slug += "-" + hashlib.blake2b(spec.config_json.encode(), digest_size=4).hexdigest()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", slug)
    return resolve_index_dir(root) / "bench" / f"{dataset.label}-{slug}"


def captions_document(dataset: RetrievalDataset) -> bytes:
    """The selected captions as COCO captions JSON: annotation id = caption row, image id = row."""
    doc = {
        "info": {"description": f"searchmm bench captions: {dataset.label}"},
        "images": [
            {"id": row, "file_name": str(path), "dataset_id": _plain(image_id)}
            for row, (path, image_id) in enumerate(
                zip(dataset.image_paths, dataset.image_ids, strict=True)
            )
        ],
        "annotations": [
            {"id": row, "image_id": int(image), "caption": caption}
            for row, (caption, image) in enumerate(
                zip(dataset.captions, dataset.caption_image, strict=True)
            )
        ],
    }
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically replace `path` unless it already holds `data` (keeps its mtime: no re-read)."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, data)
    return True


def captions_path(index_dir: Path, dataset: RetrievalDataset) -> Path:
    return index_dir / f"bench-captions-{dataset.label}.json"


def evaluate(
    dataset: RetrievalDataset,
    engine: Engine,
    *,
    ks: Iterable[int] = DEFAULT_KS,
    index_spec: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = 0,
    allow_missing: bool = False,
    progress: bool = False,
) -> EvaluationReport:
    """Ingest the dataset into `engine`, then measure retrieval both ways (see module doc).

    Images missing on disk or that cannot be decoded are an error, unless `allow_missing`:
    then they and their captions are left out, and the report lists them.
    """
    wanted = normalise_ks(ks)
    listed = dataset
    dropped: list[dict[str, str]] = []
    if dataset.missing:
        _refuse_or_note(dataset.missing, MISSING, allow_missing, dataset, dropped)
        dataset = dataset.without_missing()
    if not dataset.captions:
        raise SearchmmError(f"{dataset.label} has no captions to evaluate")
    options = {"batch_size": batch_size, "workers": workers, "progress": progress}
    dataset, captions_file, timings = _ingest(dataset, engine, options, allow_missing, dropped)
    paths = _image_paths(dataset)
    image_ids, image_emb, image_total = _stored_images(engine, paths)
    text_ids, text_emb, text_total = _stored_captions(engine, captions_file, len(dataset.captions))
    started = time.perf_counter()
    metrics = retrieval_metrics(image_emb, text_emb, dataset.caption_image, wanted)
    timings["exact_search_s"] = round(time.perf_counter() - started, 3)
    counts = {key: int(metrics.pop(key)) for key in COUNT_KEYS}
    counts.update(
        images=len(dataset.image_paths),
        captions=len(dataset.captions),
        images_listed=len(listed.image_paths),
        captions_listed=len(listed.captions),
        missing_images=sum(d["reason"] == MISSING for d in dropped),
        failed_images=sum(d["reason"] != MISSING for d in dropped),
        dropped_captions=len(listed.captions) - len(dataset.captions),
    )
    report = EvaluationReport(
        model=engine.model_spec().name,
        pretrained=engine.model_spec().pretrained,
        dataset=dataset.name,
        split=dataset.split,
        split_source=dataset.split_source,
        index_dir=str(engine.index_dir),
        ks=wanted,
        counts=counts,
        metrics=metrics,
        timings=timings,
        allow_missing=allow_missing,
        dropped_images=dropped,
    )
    if index_spec is not None:
        galleries = _Galleries(image_ids, text_ids, image_total, text_total)
        _measure_index(report, engine, index_spec, dataset, galleries, image_emb, text_emb)
    return report


def _ingest(
    dataset: RetrievalDataset,
    engine: Engine,
    options: dict[str, Any],
    allow_missing: bool,
    dropped: list[dict[str, str]],
) -> tuple[RetrievalDataset, Path, dict[str, Any]]:
    """Images as files, then the captions file; undecodable images refused or left out."""
    paths = _image_paths(dataset)
    log.info(
        "evaluating %s: %d images, %d captions, in %s",
        dataset.label,
        len(paths),
        len(dataset.captions),
        engine.index_dir,
    )
    captions_file = captions_path(engine.index_dir, dataset)
    mark = engine.index_dir / EXACT_DECODE_MARK
    if (engine.index_dir / DB_FILENAME).exists() and not mark.exists():
        removed = engine.remove(paths)
        if removed:
            log.info("%d images stored before exact decoding will be encoded again", removed)
    timings: dict[str, Any] = {"model_load_s": None}
    if _needs_encoding(engine, paths, captions_file, captions_document(dataset)):
        started = time.perf_counter()
        engine.load_model()  # loaded here, so that the encoding rates leave it out
        timings["model_load_s"] = round(time.perf_counter() - started, 3)
    images = engine.ingest(paths, **options, exact_decode=True)
    write_if_changed(mark, b"images decoded as Image.open(path).convert('RGB')\n")
    failed = {os.path.abspath(f.path): f.reason for f in images.failed}
    failed_rows = [row for row, path in enumerate(paths) if path in failed]
    if failed_rows:
        bad = [Path(paths[row]) for row in failed_rows]
        reasons = [failed[paths[row]] for row in failed_rows]
        _refuse_or_note(bad, "cannot be decoded", allow_missing, dataset, dropped, reasons)
        dataset = dataset.drop_images(failed_rows)
    write_if_changed(captions_file, captions_document(dataset))
    texts = engine.ingest([captions_file], **options)
    if texts.failed:
        first = texts.failed[0]
        raise SearchmmError(f"captions could not be ingested: {first.locator}: {first.reason}")
    timings.update(_rates("images", images.encoded_images, images.elapsed_s))
    timings.update(_rates("texts", texts.encoded_texts, texts.elapsed_s))
    timings["cached"] = images.encoded_images == 0 and texts.encoded_texts == 0
    return dataset, captions_file, timings


def _refuse_or_note(
    paths: list[Path],
    why: str,
    allow_missing: bool,
    dataset: RetrievalDataset,
    dropped: list[dict[str, str]],
    reasons: list[str] | None = None,
) -> None:
    shown = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
    if not allow_missing:
        raise SearchmmError(
            f"{len(paths)} of the {len(dataset.image_paths)} images of {dataset.label} are "
            f"{why} ({shown}); fix that",
            hint=Hint.ALLOW_MISSING,
        )
    log.warning("leaving out %d images %s (%s) and their captions", len(paths), why, shown)
    for i, path in enumerate(paths):
        dropped.append({"path": str(path), "reason": reasons[i] if reasons else why})


def _image_paths(dataset: RetrievalDataset) -> list[str]:
    """Absolute paths, as the store records them; an image listed twice is refused."""
    paths = [os.path.abspath(p) for p in dataset.image_paths]
    if len(set(paths)) != len(paths):
        twice = next(p for p, n in Counter(paths).items() if n > 1)
        raise SearchmmError(f"{dataset.label} lists the image file {twice} more than once")
    return paths


def _needs_encoding(engine: Engine, paths: list[str], captions_file: Path, doc: bytes) -> bool:
    """Whether this run will encode anything (cheap: the store's paths and the captions file)."""
    if not (engine.index_dir / DB_FILENAME).exists():
        return True
    if not captions_file.exists() or captions_file.read_bytes() != doc:
        return True
    stored = {item.path for item in engine.items(Target.IMAGES) if item.status == Status.OK}
    return not stored.issuperset(paths)


def _rates(kind: str, encoded: int, elapsed: float) -> dict[str, Any]:
    return {
        f"{kind}_encoded": encoded,
        f"{kind}_ingest_s": round(elapsed, 3),
        f"{kind}_per_s": round(encoded / elapsed, 2) if encoded and elapsed > 0 else None,
    }


def _rows_of(ids: np.ndarray, wanted: list[int], what: str) -> np.ndarray:
    """Positions of `wanted` item ids within the sorted `ids` of stored embeddings."""
    target = np.asarray(wanted, dtype=np.int64)
    pos = np.clip(np.searchsorted(ids, target), 0, max(ids.size - 1, 0))
    if ids.size == 0 or not np.array_equal(ids[pos], target):
        ok = ids[pos] == target if ids.size else np.zeros(target.size, dtype=bool)
        raise SearchmmError(f"{int((~ok).sum())} {what} have no stored embedding")
    return pos


def _stored_images(engine: Engine, paths: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(item ids, vectors) in dataset row order, and how many images the store holds."""
    by_path = {i.path: i.id for i in engine.items(Target.IMAGES) if i.status == Status.OK}
    absent = [p for p in paths if p not in by_path]
    if absent:
        raise SearchmmError(f"{len(absent)} images were not stored, e.g. {absent[0]}")
    ids, vectors = engine.embeddings("images")
    wanted = [by_path[p] for p in paths]
    return np.asarray(wanted, np.int64), vectors[_rows_of(ids, wanted, "images")], ids.size


def _stored_captions(
    engine: Engine, captions_file: Path, n_captions: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """(item ids, vectors) in caption row order: each item's `annotation_id` is its row."""
    source = os.path.abspath(captions_file)
    wanted = np.full(n_captions, -1, dtype=np.int64)
    for item in engine.items(Target.TEXTS):
        if item.path == source and item.status == Status.OK:
            row = int((item.meta or {}).get("annotation_id", -1))
            if 0 <= row < n_captions:
                wanted[row] = item.id
    if (wanted < 0).any():
        raise SearchmmError(f"{int((wanted < 0).sum())} captions of {source} were not stored")
    ids, vectors = engine.embeddings("texts")
    return wanted, vectors[_rows_of(ids, wanted.tolist(), "captions")], ids.size


class _Galleries:
    """Item ids of the dataset's images and captions, and how many items each index holds."""

    def __init__(
        self, image_ids: np.ndarray, text_ids: np.ndarray, image_total: int, text_total: int
    ) -> None:
        self.ids = {"images": image_ids, "texts": text_ids}
        self.foreign = {"images": image_total - image_ids.size, "texts": text_total - text_ids.size}

    def rows(self, target: str, hit_ids: np.ndarray) -> np.ndarray:
        """Dataset rows of hit item ids; -1 for padding and for items outside the dataset."""
        ids = self.ids[target]
        order = np.argsort(ids)
        pos = np.clip(np.searchsorted(ids[order], hit_ids), 0, ids.size - 1)
        found = (ids[order][pos] == hit_ids) & (hit_ids >= 0)
        return np.where(found, order[pos], -1)


def _top_rows(
    engine: Engine, queries: np.ndarray, target: str, k: int, galleries: _Galleries
) -> np.ndarray:
    """Each query's top-k dataset rows from the engine's index, items of other data skipped."""
    foreign = galleries.foreign[target]
    if foreign > MAX_FOREIGN_ITEMS:
        raise SearchmmError(
            f"{engine.index_dir} holds {foreign} {target} that are not part of this dataset; "
            "evaluate an index in a directory of its own",
            hint=Hint.OWN_INDEX_DIR,
        )
    _, hit_ids = engine.search_batch(queries, target=target, k=k + foreign)
    rows = galleries.rows(target, hit_ids)
    if foreign:  # move the foreign hits (-1) to the end, keeping the order of ours
        rows = np.take_along_axis(rows, np.argsort(rows < 0, axis=1, kind="stable"), axis=1)
    return rows[:, :k]


def _measure_index(
    report: EvaluationReport,
    engine: Engine,
    index_spec: str,
    dataset: RetrievalDataset,
    galleries: _Galleries,
    image_emb: np.ndarray,
    text_emb: np.ndarray,
) -> None:
    """Rebuild both indexes as `index_spec` and take Recall@K from their top-K results."""
    started = time.perf_counter()
    built = engine.reindex(index_spec)
    report.timings["index_build_s"] = round(time.perf_counter() - started, 3)
    k = max(report.ks)
    owner = dataset.caption_image
    queried = np.flatnonzero(np.bincount(owner, minlength=len(dataset.image_paths)) > 0)
    started = time.perf_counter()
    image_hits = _top_rows(engine, text_emb, "images", k, galleries)
    caption_hits = _top_rows(engine, image_emb[queried], "texts", k, galleries)
    report.timings["index_search_s"] = round(time.perf_counter() - started, 3)
    report.timings["index_queries"] = int(text_emb.shape[0] + queried.size)
    caption_owner = np.where(caption_hits >= 0, owner[np.maximum(caption_hits, 0)], -1)
    metrics: dict[str, float] = {}
    for prefix, hits, labels in (
        ("image_retrieval", image_hits, owner),
        ("text_retrieval", caption_owner, queried),
    ):
        found = recall_from_hits(hits, labels, report.ks)
        metrics.update({f"{prefix}_{name}": value for name, value in found.items()})
    report.index_spec = built[Kind.IMAGE]
    report.index_metrics = metrics
