"""Concurrent use: one writer at a time, queries during an ingest, threads sharing one
Engine, a long-lived reader beside another process's writes, and files that change while an
ingest reads them. Real processes, real SQLite and FAISS, no mocks.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.cli import SEARCHMM, cli_json, invoke, run_cli
from helpers.files import make_image, slow_pngs
from helpers.processes import ingest_process, wait_until
from helpers.store import embedded, index_ids, stored_items
from searchmm import Engine, ModelSpec
from searchmm.sources.files import FILE_CHANGED, FILE_VANISHED


def test_one_writer_at_a_time_and_queries_see_each_commit(
    tmp_path: Path, tiny_config: Path
) -> None:
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    for i in range(8):
        make_image(folder / "a" / f"{i:03d}.png", seed=i)
    invoke("ingest", folder, "--index-dir", index_dir, "--model-config", tiny_config)
    for i in range(300):
        make_image(folder / "b" / f"{i:03d}.png", seed=1000 + i, size=(64, 48))

    with Engine(index_dir) as reader:  # a long-lived reader in this process
        reader.search_text("warm up", k=1)  # its model is loaded before the writer starts
        writer = ingest_process(folder, "--index-dir", index_dir, "--batch-size", "8")
        waiter = None
        try:
            wait_until(lambda: embedded(index_dir) > 8, writer, "the writer's first commit")
            # Paused, the writer holds its lock and cannot end while a second one is refused.
            writer.send_signal(signal.SIGSTOP)
            # A second writer without --wait is refused at once, with one clear line.
            refused = run_cli("ingest", folder, "--index-dir", index_dir, check=False)
            assert writer.poll() is None
            assert refused.returncode == 1 and refused.stdout == ""
            assert refused.stderr == (
                f"searchmm: error: another searchmm process is writing to {index_dir}; "
                "wait for it to finish or pass --wait SECONDS\n"
            )
            # One with --wait waits for the first to finish, then finds nothing left to do.
            waiter = ingest_process(folder, "--index-dir", index_dir, "--wait", "300")
            seen: list[tuple[int, int, int]] = []
            cli_bounds = embedded(index_dir)  # a query from another process, too
            cli_query = subprocess.Popen(
                [SEARCHMM, "query", "x", "-k", "1000", "--index-dir", index_dir, "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(5):  # at five commits, a query with the writer paused there
                last = embedded(index_dir)
                writer.send_signal(signal.SIGCONT)
                wait_until(lambda n=last: embedded(index_dir) > n, writer, "the next commit")
                writer.send_signal(signal.SIGSTOP)
                committed = embedded(index_dir)
                hits = reader.search_text("a photo", k=1000)
                assert len(hits) == committed == embedded(index_dir)
                seen.append((committed, len(hits), committed))
            writer.send_signal(signal.SIGCONT)
            while writer.poll() is None:  # then queries while it runs
                before = embedded(index_dir)
                hits = reader.search_text("a photo", k=1000)
                seen.append((before, len(hits), embedded(index_dir)))
                time.sleep(0.05)  # leave the writer a core
                assert {h.path for h in hits} <= {str(p) for p in folder.rglob("*.png")}
            written = json.loads(writer.communicate(timeout=300)[0])
            waited = json.loads(waiter.communicate(timeout=300)[0])
            cli_out, cli_err = cli_query.communicate(timeout=300)
        finally:
            writer.kill()
            if waiter is not None:
                waiter.kill()
    assert written["new"] == 300 and waiter.returncode == 0
    assert (waited["unchanged"], waited["encoded_images"], waited["new"]) == (308, 0, 0)
    # Every query during the ingest succeeded and saw at least what was committed when it
    # started, and never more than was committed when it ended.
    assert all(before <= found <= after for before, found, after in seen), seen
    assert len(seen) >= 5 and len({found for _, found, _ in seen}) >= 3, seen
    assert cli_query.returncode == 0, cli_err
    assert cli_bounds <= len(json.loads(cli_out)) <= 308
    print(f"\n{len(seen)} queries during the ingest saw {sorted({f for _, f, _ in seen})}")


def _answers(engine: Engine, queries: list[tuple[str, object, str]]) -> Callable:
    def answer(i: int) -> list[tuple[int, float]]:
        how, what, target = queries[i]
        search = {
            "text": engine.search_text,
            "image": engine.search_image,
            "vector": engine.search_vector,
        }[how]
        return [(h.item.id, round(h.score, 5)) for h in search(what, target=target, k=5)]

    return answer


def test_threads_share_one_engine(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    captions = tmp_path / "captions.txt"
    captions.write_text("a cat\na rocket on the pad\na cup of coffee\nan astronaut\nstars\n")
    spec = ModelSpec.from_options(model_config=tiny_config)
    with Engine(tmp_path / "idx", model=spec) as engine:
        engine.ingest([photo_dir, captions])
        vector = engine.load_model().encode_texts(["a cat"])[0]
        images = sorted(photo_dir.rglob("*.*"))
        queries = [
            *[
                ("text", t, target)
                for t in ("a cat", "a rocket", "stars")
                for target in ("images", "texts")
            ],
            *[("image", p, target) for p in images for target in ("images", "texts")],
            ("vector", vector, "images"),
            ("vector", vector, "texts"),
        ]
        answer = _answers(engine, queries)
        alone = [answer(i) for i in range(len(queries))]
        with ThreadPoolExecutor(8) as pool:
            for _ in range(3):
                assert list(pool.map(answer, range(len(queries)))) == alone

            # A writer on the same Engine while threads query: each answer is whole.
            for i in range(40):
                make_image(photo_dir / "more" / f"{i}.png", seed=500 + i)
            writing = pool.submit(engine.ingest, [photo_dir], batch_size=4)
            during = []
            while not writing.done():
                during.extend(pool.map(answer, range(len(queries))))
            assert writing.result().new == 40
        stored = set(stored_items(engine.index_dir, "image").values())
        stored |= set(stored_items(engine.index_dir, "text").values())
        assert all({i for i, _ in hits} <= stored and len(hits) == 5 for hits in during)
        assert len(during) > len(queries)
        with ThreadPoolExecutor(8) as pool:
            again = list(pool.map(answer, range(len(queries))))
        assert again == [answer(i) for i in range(len(queries))]
    assert index_ids(tmp_path / "idx", "image") == set(
        stored_items(tmp_path / "idx", "image").values()
    )


def test_a_long_lived_reader_follows_another_process(tmp_path: Path, tiny_config: Path) -> None:
    """The other process saves its index and forgets the changes it reflects: the reader, whose
    index predates them, must not take the same vector count for the same vectors."""
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    for i in range(6):
        make_image(folder / f"{i}.png", seed=i)
    run_cli("ingest", folder, "--index-dir", index_dir, "--model-config", tiny_config)
    with Engine(index_dir) as reader:
        assert len(reader.search_image(folder / "0.png", k=10)) == 6
        (folder / "5.png").unlink()
        make_image(folder / "new.png", seed=50)  # one out, one in: the count stays 6
        summary = cli_json("ingest", folder, "--index-dir", index_dir)
        assert (summary["new"], summary["removed"]) == (1, 1)
        hits = reader.search_image(folder / "new.png", k=10)
    assert hits[0].path == str(folder / "new.png") and hits[0].score == pytest.approx(1, abs=1e-4)
    assert {h.path for h in hits} == {str(p) for p in folder.iterdir()}


def test_files_deleted_or_changed_while_the_ingest_runs(tmp_path: Path, tiny_config: Path) -> None:
    """The ingest reads files in order: deleting and rewriting files at the end of the queue
    while it decodes the slow ones at the front is a real interleaving, without hooks."""
    folder, index_dir = tmp_path / "photos", tmp_path / "idx"
    slow = slow_pngs(folder, 24)
    vanishing = make_image(folder / "zz-vanishing.png", seed=1)
    changing = make_image(folder / "zz-changing.png", seed=2)
    notes = folder / "zz-notes.txt"
    notes.write_text("first version\n")
    ingest = ingest_process(
        folder, "--texts", "--index-dir", index_dir, "--model-config", tiny_config,
        "--workers", "0", "--batch-size", "4",
    )  # fmt: skip
    try:
        wait_until(lambda: embedded(index_dir) > 0, ingest, "the first commit")
        ingest.send_signal(signal.SIGSTOP)  # paused at the slow files: it cannot reach the end
        vanishing.unlink()
        make_image(changing, seed=3, size=(120, 80))  # new bytes, new size
        notes.write_text("second version, longer\n")
        assert ingest.poll() is None
        ingest.send_signal(signal.SIGCONT)
        stdout, stderr = ingest.communicate(timeout=300)
    finally:
        ingest.kill()
    assert ingest.returncode == 0, stderr
    reported = {Path(f["path"]).name: f["reason"] for f in json.loads(stdout)["failed"]}
    assert reported == {
        "zz-vanishing.png": FILE_VANISHED,
        "zz-changing.png": FILE_CHANGED,
        "zz-notes.txt": FILE_CHANGED,
    }
    # Nothing half-read was stored: not the vanished file, not the changed ones.
    assert set(stored_items(index_dir, "image")) == {str(p) for p in slow}
    assert stored_items(index_dir, "text") == {}

    # The next ingest takes them as they are now.
    summary = cli_json("ingest", folder, "--texts", "--index-dir", index_dir)
    assert (summary["new"], summary["failed"], summary["unchanged"]) == (2, [], len(slow))
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute("SELECT path, text, width, height FROM items WHERE path LIKE '%/zz-%'")
        assert sorted(rows) == [
            (str(changing), None, 120, 80),
            (str(notes), "second version, longer", None, None),
        ]
