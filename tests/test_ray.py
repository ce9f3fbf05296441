"""`searchmm ingest --executor ray` on a real two-node Ray cluster on this machine: the same items
and vectors as a local ingest, a lost node, a killed driver, paths the workers cannot see."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers.cli import SEARCHMM, invoke
from helpers.files import COCO_SAMPLE, make_image
from helpers.processes import wait_until
from helpers.store import embedded, stored_items, stored_vectors

pytest.importorskip("ray", reason="the ray extra is not installed")

from helpers.ray_cluster import ADDRESS, RayCluster, unshare_refused

BROKEN = {"truncated.jpg", "not-an-image.jpg", "empty.png"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    if (why := unshare_refused()) is not None:
        pytest.skip(f"a private network for Ray: {why}")
    found = RayCluster()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, real_photos: Path) -> Path:
    """The COCO sample (else scikit-image's photos), generated images, and broken files."""
    folder = tmp_path_factory.mktemp("collection")
    source = COCO_SAMPLE / "images" if COCO_SAMPLE.is_dir() else real_photos
    for photo in sorted(source.glob("*.jpg")) + sorted(source.glob("*.png")):
        shutil.copy(photo, folder / photo.name)
    for i in range(60):
        make_image(folder / "generated" / f"gen-{i}.png", seed=i)
    whole = next(folder.glob("*.jpg")).read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "not-an-image.jpg").write_text("plain text")
    (folder / "empty.png").write_bytes(b"")
    return folder


def ray_ingest(
    cluster: RayCluster, folder: Path, index_dir: Path, tiny: Path, *extra: str
) -> list[str]:
    return [
        SEARCHMM,
        "ingest",
        str(folder),
        "--index-dir",
        str(index_dir),
        "--model-config",
        str(tiny),
        "--executor",
        "ray",
        "--ray-address",
        ADDRESS,
        "--batch-size",
        "4",
        "--json",
        *extra,
    ]


def files_in(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def vectors_by_path(index_dir: Path) -> dict[str, np.ndarray]:
    vectors = stored_vectors(index_dir, "image")
    return {path: vectors[i] for path, i in stored_items(index_dir, "image").items()}


def test_a_ray_ingest_stores_what_a_local_one_does(
    cluster: RayCluster, collection: Path, tmp_path: Path, tiny_config: Path
) -> None:
    local = invoke(
        "ingest",
        collection,
        "--index-dir",
        tmp_path / "local",
        "--model-config",
        tiny_config,
        "--workers",
        "0",
        "--json",
    )
    done = cluster.run(*ray_ingest(cluster, collection, tmp_path / "ray", tiny_config))
    ours, theirs = json.loads(done.stdout), json.loads(local.stdout)
    assert ours["new"] == theirs["new"] == files_in(collection) - len(BROKEN)
    assert {Path(f["path"]).name: f["reason"] for f in ours["failed"]} == {
        Path(f["path"]).name: f["reason"] for f in theirs["failed"]
    }
    assert {Path(f["path"]).name for f in ours["failed"]} == BROKEN
    assert set(ours["images_per_s_by_stage"]) == {"decode", "encode", "commit"}
    a, b = vectors_by_path(tmp_path / "local"), vectors_by_path(tmp_path / "ray")
    assert a.keys() == b.keys()
    cosines = [float(a[p] @ b[p]) for p in a]
    assert min(cosines) >= 0.99999


def test_a_lost_worker_node_still_stores_every_item_once(
    cluster: RayCluster, collection: Path, tmp_path: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "ray"
    process = cluster.popen(*ray_ingest(cluster, collection, index_dir, tiny_config))
    try:
        wait_until(lambda: embedded(index_dir) > 0, process, "the first batch is committed")
        assert embedded(index_dir) < files_in(collection) - len(BROKEN), "killed too late"
        cluster.kill_worker()
        out, err = process.communicate(timeout=600)
    finally:
        process.kill()
        cluster.worker = cluster.start_worker()  # the next test has its two nodes again
    assert process.returncode == 0, err
    summary = json.loads(out)
    assert summary["new"] == files_in(collection) - len(BROKEN)
    items = stored_items(index_dir, "image")
    assert len(items) == summary["new"] == embedded(index_dir)


def test_a_killed_driver_resumes_where_it_stopped(
    cluster: RayCluster, collection: Path, tmp_path: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "ray"
    command = ray_ingest(cluster, collection, index_dir, tiny_config)
    process = cluster.popen(*command)
    wait_until(lambda: embedded(index_dir) > 0, process, "the first batch is committed")
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = embedded(index_dir)
    assert 0 < committed < files_in(collection) - len(BROKEN), "killed too late"
    summary = json.loads(cluster.run(*command).stdout)
    assert summary["unchanged"] == committed
    assert summary["new"] + summary["unchanged"] == files_in(collection) - len(BROKEN)
    assert embedded(index_dir) == len(stored_items(index_dir, "image"))


def test_paths_the_workers_cannot_see_are_reported_not_waited_for(
    cluster: RayCluster, real_photos: Path, tmp_path: Path, tiny_config: Path
) -> None:
    """The driver's files live in its own mount namespace: on no shared filesystem."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    ingest = " ".join(ray_ingest(cluster, hidden / "photos", tmp_path / "ray", tiny_config))
    script = f"mount -t tmpfs none {hidden} && cp -r {real_photos} {hidden}/photos && {ingest}"
    command = cluster.command("unshare", "-m", "bash", "-c", script)
    result = subprocess.run(command, capture_output=True, text=True, env=cluster.env, timeout=600)
    summary = json.loads(result.stdout)
    assert summary["new"] == 0 and len(summary["failed"]) == files_in(real_photos)
    assert all("shared filesystem" in f["reason"] for f in summary["failed"])
    assert result.returncode == 1  # nothing could be ingested


def test_ray_options_need_the_ray_executor(tmp_path: Path) -> None:
    for args in (["--actors", "2"], ["--ray-address", ADDRESS], ["--executor", "spark"]):
        done = invoke("ingest", tmp_path, "--index-dir", tmp_path / "idx", *args, check=False)
        assert done.returncode != 0
        assert "--executor" in done.stderr
    assert not (tmp_path / "idx").exists()


DATASET_DRIVER = """
import json, sys
import ray
from searchmm import Engine, ModelSpec
from searchmm.errors import SearchmmError
address, parquet, index_dir, config, refused_dir = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
dataset = ray.data.read_parquet(parquet, ray_remote_args={"num_cpus": 0.25})  # 2 CPUs in all
spec = ModelSpec.from_options(model_config=config)
try:
    with Engine(refused_dir, model=spec) as engine:
        engine.ingest_dataset(dataset, key_column="url", image_column="jpg")
except SearchmmError as exc:
    refused = str(exc)
with Engine(index_dir, model=spec) as engine:
    columns = {"key_column": "key", "image_column": "jpg", "text_column": "txt"}
    summary = engine.ingest_dataset(dataset, **columns)
print(json.dumps({"summary": summary.to_dict(), "refused": refused}))
"""


def test_a_ray_dataset_of_image_bytes_and_texts(
    cluster: RayCluster, collection: Path, tmp_path: Path, tiny_config: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from searchmm import Engine, ModelSpec

    photos = sorted(collection.glob("*.jpg"))[:20]
    keys = [f"s3://bucket/{p.name}" for p in photos]
    texts = [f"photo {i} of the sample" if i % 5 else None for i in range(len(photos))]
    table = pa.table(
        {
            "key": [*keys, "s3://bucket/broken.jpg"],
            "jpg": [*(p.read_bytes() for p in photos), b"not an image"],
            "txt": [*texts, "a caption of a broken image"],
        }
    )
    pq.write_table(table, tmp_path / "pairs.parquet")
    args = [str(tmp_path / "pairs.parquet"), str(tmp_path / "ray"), str(tiny_config)]
    driver = [sys.executable, "-c", DATASET_DRIVER, ADDRESS, *args, str(tmp_path / "refused")]
    first = last_json(cluster.run(*driver).stdout)  # Ray prints its own warnings on stdout
    again = last_json(cluster.run(*driver).stdout)["summary"]

    assert "no column 'url'" in first["refused"] and "'key', 'jpg', 'txt'" in first["refused"]
    assert not (tmp_path / "refused").exists()  # refused before anything was written
    summary = first["summary"]
    assert summary["images"] == len(photos)
    assert summary["texts"] == sum(t is not None for t in texts) + 1
    assert [f["path"] for f in summary["failed"]] == ["s3://bucket/broken.jpg"]
    assert (again["images"], again["texts"]) == (0, 0)  # stored keys are not read again
    assert [f["path"] for f in again["failed"]] == ["s3://bucket/broken.jpg"]  # tried again

    local_dir = tmp_path / "photos"
    local_dir.mkdir()
    for p in photos:
        shutil.copy(p, local_dir / p.name)
    with Engine(tmp_path / "local", model=ModelSpec.from_options(model_config=tiny_config)) as e:
        e.ingest([local_dir], workers=0)
        wanted = [t for t in texts if t is not None]
        text_vectors = dict(zip(wanted, e.load_model().encode_texts(wanted), strict=True))
    local = {Path(p).name: v for p, v in vectors_by_path(tmp_path / "local").items()}
    remote = vectors_by_path(tmp_path / "ray")
    assert (
        min(float(local[p.name] @ remote[k]) for p, k in zip(photos, keys, strict=True)) >= 0.99999
    )
    stored_texts = {
        text: stored_vectors(tmp_path / "ray", "text")[i]
        for text, i in _texts(tmp_path / "ray").items()
    }
    assert min(float(text_vectors[t] @ stored_texts[t]) for t in wanted) >= 0.99999


def last_json(stdout: str) -> Any:
    return json.loads(stdout.splitlines()[-1])


def _texts(index_dir: Path) -> dict[str, int]:
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        return dict(db.execute("SELECT text, id FROM items WHERE kind = 'text'").fetchall())


def test_pixels_cross_the_object_store_as_bytes_where_the_transform_allows(
    real_photos: Path, tiny_config: Path
) -> None:
    from PIL import Image

    from searchmm import ModelSpec
    from searchmm.ingest.ray_encoding import Transit
    from searchmm.model.loading import load_encoder

    encoder = load_encoder(ModelSpec.from_options(model_config=tiny_config), "cpu")
    transit = Transit.of(encoder)
    size = encoder.image_size
    assert transit.dtype is np.uint8 and transit.shape == (size, size, 3)  # a quarter the bytes
    images = [Image.open(p).convert("RGB") for p in sorted(real_photos.iterdir())]
    crossed = np.stack([transit.preprocess(image) for image in images])
    expected = np.stack([encoder.preprocess(image) for image in images])
    assert np.abs(transit.finished(crossed) - expected).max() <= 1e-5


def test_texts_are_encoded_on_the_cluster_as_they_are_here(
    cluster: RayCluster, real_photos: Path, tmp_path: Path, tiny_config: Path
) -> None:
    folder = tmp_path / "collection"
    shutil.copytree(real_photos, folder)
    lines = [
        f"caption number {i}: a photo of {w}" for i, w in enumerate(["cat", "dog", "sky", "sea"])
    ]
    (folder / "notes.txt").write_text("\n".join([*lines, *lines[:2]]) + "\n", encoding="utf-8")
    records = [json.dumps({"text": f"record {i} 一只猫 😀"}) for i in range(600)]  # 3 batches
    (folder / "captions.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    local = invoke(
        "ingest", folder, "--texts", "--index-dir", tmp_path / "local", "--model-config",
        tiny_config, "--json",
    )  # fmt: skip
    done = cluster.run(*ray_ingest(cluster, folder, tmp_path / "ray", tiny_config, "--texts"))
    ours, theirs = json.loads(done.stdout), json.loads(local.stdout)
    assert ours["encoded_texts"] == theirs["encoded_texts"] == 4 + 600  # repeated lines once
    by_path = {}
    for name in ("local", "ray"):
        vectors = stored_vectors(tmp_path / name, "text")
        by_path[name] = {p: vectors[i] for p, i in stored_items(tmp_path / name, "text").items()}
    assert by_path["ray"].keys() == by_path["local"].keys() and len(by_path["ray"]) == 606
    assert min(float(v @ by_path["local"][p]) for p, v in by_path["ray"].items()) >= 0.99999


def test_the_ray_executor_sends_texts_to_the_cluster(tmp_path: Path, tiny_config: Path) -> None:
    from searchmm.ingest.encoding import LocalTexts, text_encoding
    from searchmm.ingest.ray_encoding import RayOptions, RayTexts
    from searchmm.ingest.run import IngestRun
    from searchmm.ingest.summary import IngestOptions
    from searchmm.store.store import Store

    store = Store(tmp_path / "store", create=True)
    try:
        for ray, kind in ((RayOptions(ADDRESS), RayTexts), (None, LocalTexts)):
            run = IngestRun(store, lambda _: pytest.fail("no model"), IngestOptions(ray=ray))
            encoding = text_encoding(run)
            assert type(encoding) is kind
            encoding.close()  # nothing was started: nothing connects
    finally:
        store.close()
