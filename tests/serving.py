"""What the server and browser tests share: an index built by the real CLI with the tiny model,
served by a real `searchmm serve` process on a free 127.0.0.1 port."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from conftest import make_image, run_cli, stored_items

from searchmm.server.process import ServerProcess

CAPTIONS = ("a cat sleeping on a sofa", "a cup of coffee on a table", "a rocket on the launch pad")
NOTES = (
    {"text": "an astronaut in a white suit", "author": "ann", "year": 1984},
    {"text": "a photo of the night sky full of galaxies", "author": "bo", "year": 2003},
)
MAX_UPLOAD_MB = 2  # small, so that the oversize test sends little


@dataclass
class Served:
    url: str
    index_dir: Path
    photos: Path
    images: dict[str, int]  # file name -> item id
    texts: dict[str, int]  # text -> item id
    server: ServerProcess

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=60)


def build_index(root: Path, real_photos: Path, tiny_config: Path) -> tuple[Path, Path]:
    """Six real photos (JPEG and PNG), four generated ones, a .txt and a .jsonl collection."""
    photos = root / "photos"
    shutil.copytree(real_photos, photos)
    for i in range(4):
        make_image(photos / "generated" / f"gen-{i}.png", seed=i)
    (root / "captions.txt").write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    (root / "notes.jsonl").write_text(
        "".join(json.dumps(note) + "\n" for note in NOTES), encoding="utf-8"
    )
    index_dir = root / "index"
    run_cli(
        "ingest",
        photos,
        root / "captions.txt",
        root / "notes.jsonl",
        "--index-dir",
        index_dir,
        "--model-config",
        tiny_config,
        "--workers",
        "0",
        "--device",
        "cpu",
    )
    return index_dir, photos


@contextmanager
def served_index(root: Path, real_photos: Path, tiny_config: Path) -> Iterator[Served]:
    index_dir, photos = build_index(root, real_photos, tiny_config)
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        texts = dict(db.execute("SELECT text, id FROM items WHERE kind = 'text'").fetchall())
    images = {
        Path(path).name: item_id for path, item_id in stored_items(index_dir, "image").items()
    }
    args = ("--device", "cpu", "--max-upload-mb", str(MAX_UPLOAD_MB))
    with ServerProcess(index_dir, *args, log_path=root / "server.log") as server:
        yield Served(server.url, index_dir, photos, images, texts, server)
