"""One ingest: scan -> plan (per kind, against the store) -> executors.

    scan -> diff (size+mtime, then content digest) -> touched, renamed, encode, remove
         -> images: decode in worker processes -> encode in batches -> commit each batch
         -> texts: read changed files -> diff records -> encode new texts -> commit each batch

A re-run resumes a crashed one because unchanged files are recognised by size, mtime and
digest. The executors are the seam where another way of encoding (e.g. distributed) plugs in.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from searchmm.ingest.images import ImageExecutor
from searchmm.ingest.plan import FilePlan, needs_digest, plan_files, stored_files
from searchmm.ingest.run import IngestRun
from searchmm.ingest.summary import Failure, IngestSummary
from searchmm.ingest.texts import TextExecutor
from searchmm.sources.files import digest_files
from searchmm.sources.scan import FileEntry, ScanResult, scan
from searchmm.vocabulary import Kind


class Pipeline:
    """Runs one ingest against a store; the encoder is loaded only if something needs encoding."""

    def __init__(self, run: IngestRun) -> None:
        self.run_state = run

    def run(self, paths: Sequence[str | os.PathLike[str]]) -> IngestSummary:
        """A KeyboardInterrupt is not caught: it rolls back the batch in flight and propagates."""
        state = self.run_state
        started = time.perf_counter()
        roots = [os.path.abspath(os.fspath(p)) for p in paths]
        found = self._scan(paths)
        if not state.stopping():
            ImageExecutor(state).execute(self._plan(Kind.IMAGE, found.images, roots))
        if not state.stopping():
            TextExecutor(state).execute(self._plan(Kind.TEXT, found.texts, roots))
        state.summary.elapsed_s = time.perf_counter() - started
        return state.summary

    def _scan(self, paths: Sequence[str | os.PathLike[str]]) -> ScanResult:
        state = self.run_state
        with state.bar(None, "scanning", " files") as bar:
            found = scan(
                paths,
                include_hidden=state.options.include_hidden,
                texts_in_folders=state.options.texts_in_folders,
                progress=lambda n: _advance(bar, n),
            )
        state.summary.failed.extend(Failure(p, reason) for p, reason in found.problems)
        return found

    def _plan(self, kind: Kind, entries: list[FileEntry], roots: list[str]) -> FilePlan:
        """The plan for one kind; what it decides without encoding is counted here."""
        summary = self.run_state.summary
        stored = stored_files(self.run_state.store.items_of_kind(kind))
        suspects = needs_digest(entries, stored)
        digests = digest_files(suspects) if suspects else {}
        plan = plan_files(entries, stored, roots, digests, os.path.lexists)
        summary.unchanged += sum(len(f.items) for f in plan.unchanged)
        # The same bytes would fail the same way: report, do not decode (or load a model).
        # (Unreadable files never get this far: their digest fails, cheaply, every run.)
        summary.failed.extend(Failure(e.path, why) for e, why in plan.failed_before)
        summary.failed.extend(Failure(e.path, why) for e, why in plan.unreadable)
        return plan


def _advance(bar: tqdm[Any], n: int) -> None:
    bar.update(n - bar.n)
