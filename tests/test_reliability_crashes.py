"""Crashes and interruptions: SIGKILL at random moments loses and duplicates nothing,
Ctrl-C commits the batch in flight, damaged files are caught on open. Real processes only.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers.cli import SEARCHMM, invoke, invoke_json
from helpers.files import make_image, slow_pngs
from helpers.processes import (
    descendants,
    open_paths,
    ready_or_exited,
    wait_for_exit,
    wait_until,
)
from helpers.store import embedded, index_ids, stored_items
from searchmm import Engine, ModelSpec, SearchmmError
from searchmm.index.vector_index import VectorIndex
from searchmm.sources.files import file_digest

MID = "between commits (encode, commit)"
Stored = dict[str, tuple[int, str, bytes]]  # path -> (item id, file digest, vector)


def stored_state(index_dir: Path) -> Stored:
    """The images in the store, checked whole: the database is intact, every item has exactly
    one vector, no path is stored twice."""
    if not (index_dir / "searchmm.db").exists():
        return {}
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = db.execute(
            "SELECT i.id, i.path, i.status, i.file_digest, e.vector FROM items i "
            "LEFT JOIN embeddings e ON e.item_id = i.id WHERE i.kind = 'image'"
        ).fetchall()
        assert db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == len(rows)
    assert all(status == "ok" and vector for _, _, status, _, vector in rows), "half an item"
    state = {path: (item_id, digest, vector) for item_id, path, _, digest, vector in rows}
    assert len(state) == len(rows), "a path stored twice"
    return state


def change_seq(index_dir: Path) -> int:
    try:
        with sqlite3.connect(index_dir / "searchmm.db") as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    except sqlite3.Error:
        return 0
    return row[0] if row else 0


def index_seq(index_dir: Path) -> int | None:
    try:
        return VectorIndex.load(index_dir / "images.faiss")[1].seq
    except (OSError, SearchmmError):
        return None


def measure_phases(folder: Path, index_dir: Path, tiny_config: Path) -> dict[str, float]:
    """One uninterrupted ingest, watched from outside: when it first commits, when the last
    file is committed, when it exits (the index is saved in between)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [SEARCHMM, "ingest", folder, "--index-dir", index_dir, "--model-config", tiny_config,
         "--batch-size", "8", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    files, seen = len(list(folder.iterdir())), {}
    while process.poll() is None:
        committed = embedded(index_dir)
        if committed:
            seen.setdefault("first commit", time.monotonic() - started)
        if committed == files:
            seen.setdefault("last commit", time.monotonic() - started)
        time.sleep(0.005)
    assert process.returncode == 0 and len(seen) == 2, seen
    return {**seen, "exit": time.monotonic() - started}


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, tiny_config: Path
) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    for i in range(200):
        make_image(folder / f"img-{i:04d}.png", seed=i, size=(64, 48))
    # The first store of a model exports it (seconds, with torch); every later run encodes with
    # that export: time the phases of such a run.
    measure_phases(folder, tmp_path / "exported", tiny_config)
    phases = measure_phases(folder, tmp_path / "measured", tiny_config)
    reference = stored_state(tmp_path / "measured")

    rng = random.Random(4)  # seeded: the same kill times on every run of the test
    landed: Counter[str] = Counter()
    history: Stored = {}  # everything ever seen committed, for files not changed since
    lost = rewritten = completed = before_index_saved = 0
    seed = 10_000
    last = ""
    for attempt in range(60):
        spread = sum(landed.values()) >= 20 and len(landed) == 3 and min(landed.values()) >= 6
        if spread and last == MID:  # end half way: the completing run has work left to do
            break
        # New work for every run: files added, and a stored one rewritten with new pixels.
        for _ in range(30):  # several batches, so that kills can land between commits
            make_image(folder / f"add-{seed}.png", seed=seed, size=(64, 48))
            seed += 1
        changed = folder / rng.choice(sorted(p.name for p in folder.iterdir()))
        make_image(changed, seed=seed, size=(64, 48))
        seed += 1
        history.pop(str(changed), None)
        digests = {str(p): file_digest(str(p)) for p in folder.iterdir()}

        def all_current(digests: dict[str, str] = digests) -> bool:
            state = {p: d for p, (_, d, _) in _quiet_state(index_dir).items()}
            return state == digests

        seq_before = change_seq(index_dir)
        target = ("early", "encode", "late")[attempt % 3]
        errors = tmp_path / f"run-{attempt}.stderr"  # a file: an orphaned decode worker may
        with errors.open("w") as stderr:  # hold a pipe open for seconds after the kill
            process = subprocess.Popen(
                [SEARCHMM, "ingest", folder, "--index-dir", index_dir, "--model-config",
                 tiny_config, "--batch-size", "8", "--workers", str(attempt % 2), "--json"],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        # The kill lands a random time after a moment; a run that finishes before the moment
        # comes is a completed run, checked all the same (its exit status below must be 0).
        if target == "early":
            time.sleep(rng.uniform(0.2, phases["first commit"]))  # the random moment itself
        elif target == "encode":
            moment = "its first commit"
            if ready_or_exited(lambda seq=seq_before: change_seq(index_dir) > seq, process, moment):
                time.sleep(rng.uniform(0.0, 0.05))
        elif ready_or_exited(all_current, process, "every file is committed"):
            time.sleep(rng.uniform(0.0, 0.05))
        process.kill()
        process.wait(timeout=300)
        # Never refused: a killed writer leaves no stale lock, even with a decode worker left.
        assert process.returncode in (0, -signal.SIGKILL), errors.read_text()
        if process.returncode == 0:
            completed, last = completed + 1, ""
        else:
            if change_seq(index_dir) == seq_before:
                last = "before its first commit (start, model, scan, diff, decode)"
            elif not all_current():
                last = MID
            else:
                last = "after the last commit (index save, exit)"
                before_index_saved += index_seq(index_dir) != change_seq(index_dir)
            landed[last] += 1
        state = stored_state(index_dir)
        for path, before in history.items():
            if path not in state:
                lost += 1
            elif state[path] != before:
                rewritten += 1
        history.update((p, v) for p, v in state.items() if v[1] == digests.get(p))  # current only

    kills = sum(landed.values())
    print(f"\n{kills} kills ({completed} runs ended first): {dict(landed)}, of which")
    print(f"{before_index_saved} before the index was saved; measured phases {phases}")
    print(f"items lost: {lost}, stored vectors rewritten: {rewritten}")
    assert kills >= 20 and len(landed) == 3 and min(landed.values()) >= 6
    assert lost == rewritten == 0

    # Ingest to completion: only what has no current vector is encoded.
    state = stored_state(index_dir)
    files = {str(p): file_digest(str(p)) for p in folder.iterdir()}
    missing = sum(1 for path, digest in files.items() if state.get(path, (0, ""))[1] != digest)
    summary = invoke_json("ingest", folder, "--index-dir", index_dir)
    assert summary["encoded_images"] == missing and summary["failed"] == []
    final = stored_state(index_dir)
    assert {p: d for p, (_, d, _) in final.items()} == files  # one item per file, current
    assert all(final[p] == v for p, v in history.items())  # nothing committed was lost
    assert index_ids(index_dir, "image") == {i for i, _, _ in final.values()}
    assert not list(index_dir.glob("*.tmp-*"))  # a save cut short left nothing behind
    untouched = [p for p in reference if final[p][1] == reference[p][1]]
    assert len(untouched) > 150
    for path in untouched:  # vectors equal those of an ingest that was never interrupted
        a, b = (np.frombuffer(s[path][2], np.float32) for s in (final, reference))
        np.testing.assert_allclose(a, b, atol=1e-5)
    hits = invoke_json("query", "a gradient", "--index-dir", index_dir, "-k", "5")
    assert len(hits) == 5 and {h["id"] for h in hits} <= set(index_ids(index_dir, "image"))
    print(f"completing run encoded {missing}; {len(final)} files, {len(final)} items, 0 duplicates")


def _quiet_state(index_dir: Path) -> Stored:
    try:
        return stored_state(index_dir)
    except (sqlite3.Error, AssertionError):
        return {}  # mid-creation: not ready yet


def test_sigkill_half_way_through_a_text_file_resumes_it(tmp_path: Path, tiny_config: Path) -> None:
    """A text file is many batches: the rows committed before a crash must not make the next
    run take the whole file as done."""
    texts, index_dir = tmp_path / "lines.txt", tmp_path / "idx"
    texts.write_text("".join(f"line number {i} of the file\n" for i in range(2000)))
    process = subprocess.Popen(
        [SEARCHMM, "ingest", texts, "--index-dir", index_dir, "--model-config", tiny_config],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    wait_until(lambda: embedded(index_dir) > 0, process, "the first lines are committed")
    process.kill()
    process.wait(timeout=60)
    committed = embedded(index_dir)
    assert 0 < committed < 2000, committed
    summary = invoke_json("ingest", texts, "--index-dir", index_dir)
    assert summary["encoded_texts"] == 2000 - committed and summary["failed"] == []
    assert len(stored_items(index_dir, "text")) == 2000
    # Only now does every row carry the file's size: the next ingest skips the file unread.
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        sizes = db.execute("SELECT DISTINCT file_size FROM items").fetchall()
    assert sizes == [(texts.stat().st_size,)]


def _ctrl_c(folder: Path, index_dir: Path, config: Path, workers: int, presses: int) -> tuple:
    """Run an ingest in its own process group, as a terminal does, and press Ctrl-C once the
    second batch is being decoded (a file not yet committed is open, after the first commit);
    a second press waits for the first one's message. Returns (exit code, stdout, stderr,
    vectors before)."""
    errors = index_dir.parent / f"ctrl-c-{workers}-{presses}.stderr"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [SEARCHMM, "ingest", folder, "--index-dir", index_dir, "--model-config", config,
             "--batch-size", "8", "--workers", str(workers), "--json"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
        )  # fmt: skip
    slow = {str(p) for p in folder.glob("slow-*.png")}
    try:
        start = embedded(index_dir)

        def next_batch_decoding() -> bool:
            if embedded(index_dir) <= start:
                return False
            return bool(open_paths(process.pid) & (slow - set(stored_items(index_dir, "image"))))

        wait_until(next_batch_decoding, process, "a file of the next batch is open")
        before = embedded(index_dir)
        os.killpg(process.pid, signal.SIGINT)
        if presses == 2:
            stopping = "searchmm: stopping after the current batch"
            wait_until(lambda: stopping in errors.read_text(), process, "the first Ctrl-C is seen")
            os.killpg(process.pid, signal.SIGINT)
        stdout, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    return process.returncode, stdout, errors.read_text(), before


def test_ctrl_c_commits_the_batch_in_flight_then_stops(tmp_path: Path, tiny_config: Path) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    slow_pngs(folder, 26)  # batches of 2 (the first is a quarter), 8, 8, 8
    code, stdout, stderr, before = _ctrl_c(folder, index_dir, tiny_config, workers=0, presses=1)
    assert code == 130 and "Traceback" not in stderr
    assert "searchmm: stopping after the current batch (Ctrl-C again to abort)" in stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and before == 2
    assert summary["new"] == summary["encoded_images"] == embedded(index_dir) == 10
    assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())
    resumed = invoke_json("ingest", folder, "--index-dir", index_dir)
    assert (resumed["unchanged"], resumed["encoded_images"]) == (10, 16)


def test_ctrl_c_with_decode_workers_and_twice(tmp_path: Path, tiny_config: Path) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    slow_pngs(folder, 34)
    # Once: the workers, which get the signal too, carry on; the batch is committed.
    code, stdout, stderr, _ = _ctrl_c(folder, index_dir, tiny_config, workers=1, presses=1)
    assert code == 130 and "Traceback" not in stderr and "DataLoader" not in stderr, stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["new"] == embedded(index_dir) < 34
    assert (summary["new"] - 2) % 8 == 0  # whole batches only
    assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())
    # Twice: abort at once, dropping the batch in flight; what was committed stays.
    code, stdout, stderr, before = _ctrl_c(folder, index_dir, tiny_config, workers=1, presses=2)
    assert code == 130 and stdout == "" and stderr.endswith("searchmm: interrupted\n"), stderr
    assert before <= embedded(index_dir) < 34
    stored_state(index_dir)
    resumed = invoke_json("ingest", folder, "--index-dir", index_dir)
    assert resumed["new"] + resumed["unchanged"] == 34 == embedded(index_dir)
    assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())


def test_the_api_stops_on_an_event(tmp_path: Path, tiny_config: Path) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    for i in range(60):
        make_image(folder / f"{i:03d}.png", seed=i)
    stop = threading.Event()

    def stop_after_first_commit() -> None:
        deadline = time.monotonic() + 180  # no commit by then: the test fails on `interrupted`
        while embedded(index_dir) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()

    watcher = threading.Thread(target=stop_after_first_commit, daemon=True)
    watcher.start()
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(index_dir, model=spec) as engine:
        summary = engine.ingest([folder], batch_size=8, stop=stop)
        assert summary.interrupted and 0 < summary.new == embedded(index_dir) < 60
        assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())
        rest = engine.ingest([folder], batch_size=8)
    assert not rest.interrupted and rest.encoded_images == 60 - summary.new
    assert index_ids(index_dir, "image") == set(stored_items(index_dir, "image").values())


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory, real_photos: Path, tiny_config: Path
) -> Path:
    """One ingested index, made once; each test damages its own copy."""
    index_dir = tmp_path_factory.mktemp("pristine") / "idx"
    invoke("ingest", real_photos, "--index-dir", index_dir, "--model-config", tiny_config)
    return index_dir


@pytest.fixture
def ingested(tmp_path: Path, pristine: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "idx"))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pages overwritten"])
def test_a_damaged_database_is_one_clear_error(
    ingested: Path, real_photos: Path, damage: str
) -> None:
    db = ingested / "searchmm.db"
    data = db.read_bytes()
    if damage == "garbage":
        db.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif damage == "truncated":
        db.write_bytes(data[: len(data) // 2])
    else:  # the header and schema survive; the pages holding items and vectors do not
        page = 4096
        db.write_bytes(data[: 2 * page] + np.random.default_rng(2).bytes(len(data) - 2 * page))
    photos = real_photos
    for command in (["query", "a cat"], ["stats"], ["ingest", photos], ["remove", photos]):
        result = invoke(*command, "--index-dir", ingested, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and result.stdout == "", (command, result.stdout)
        assert len(lines) == 1 and lines[0].startswith(f"searchmm: error: {db} is damaged"), lines
        assert "restore it from a backup" in lines[0]


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_index_is_rebuilt_by_the_next_writer(
    ingested: Path, real_photos: Path, damage: str
) -> None:
    index_file = ingested / "images.faiss"
    ids = index_ids(ingested, "image")
    if damage == "missing":
        index_file.unlink()
    else:
        index_file.write_bytes(index_file.read_bytes()[:-100])
    result = invoke("ingest", real_photos, "--index-dir", ingested, "--json")
    assert "rebuilding it from the store" in result.stderr
    assert json.loads(result.stdout)["encoded_images"] == 0  # rebuilt, not encoded again
    assert index_ids(ingested, "image") == ids


def test_a_killed_ingest_leaves_no_decode_worker_behind(tmp_path: Path, tiny_config: Path) -> None:
    """Decode workers wait for work on a pipe their siblings hold open: without watching their
    parent they would outlive a SIGKILLed ingest forever."""
    folder = tmp_path / "photos"
    slow_pngs(folder, 24)  # ~0.2 s each: the workers are busy when the kill lands
    process = subprocess.Popen(
        [SEARCHMM, "ingest", folder, "--index-dir", tmp_path / "idx", "--model-config",
         tiny_config, "--batch-size", "2", "--workers", "2", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: len(descendants(process.pid)) >= 3, process, "the decode workers start")
    workers = descendants(process.pid)[1:]
    process.kill()
    process.wait(timeout=60)
    wait_for_exit(workers, "decode workers of the killed ingest")
