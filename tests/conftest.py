"""Shared fixtures: a tiny open_clip architecture, real photos, and a way to run the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

COCO_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-val2017-sample"

# A real open_clip architecture, small enough to run many times in a test (3.6M parameters).
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SKIMAGE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "hubble_deep_field", "retina")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "searchmm-tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def real_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos shipped with scikit-image, saved as JPEG and PNG."""
    from skimage import data

    folder = tmp_path_factory.mktemp("real-photos")
    for i, name in enumerate(SKIMAGE_PHOTOS):
        pixels = getattr(data, name)()
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(pixels).convert("RGB").save(folder / f"{name}{suffix}")
    return folder


def make_image(path: Path, seed: int, size: tuple[int, int] = (96, 64)) -> Path:
    """A distinct synthetic image: smooth colour gradients plus shapes, seeded."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    channels = [
        np.sin(xx / rng.uniform(3, 20) + rng.uniform(0, 6)) + np.cos(yy / rng.uniform(3, 20))
        for _ in range(3)
    ]
    pixels = np.stack(channels, axis=-1)
    pixels = ((pixels - pixels.min()) / (np.ptp(pixels) + 1e-9) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def photo_dir(tmp_path: Path, real_photos: Path) -> Path:
    """A folder of real photos plus generated ones in a subfolder."""
    folder = tmp_path / "photos"
    shutil.copytree(real_photos, folder)
    for i in range(4):
        make_image(folder / "generated" / f"gen-{i}.png", seed=i)
    return folder


def run_cli(
    *args: str | os.PathLike[str], check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `searchmm` console command in a new process."""
    exe = Path(sys.executable).with_name("searchmm")
    command = [str(exe), *map(str, args)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def cli_json(*args: str | os.PathLike[str]) -> Any:
    return json.loads(run_cli(*args, "--json").stdout)


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


def stored_vectors(index_dir: Path, kind: str) -> dict[int, np.ndarray]:
    """Embeddings read straight from the SQLite file, without searchmm's code."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute(
            "SELECT e.item_id, e.vector FROM embeddings e JOIN items i ON i.id = e.item_id "
            "WHERE i.kind = ?",
            (kind,),
        ).fetchall()
    return {item_id: np.frombuffer(blob, dtype=np.float32) for item_id, blob in rows}


def stored_items(index_dir: Path, kind: str) -> dict[str, int]:
    """path (or 'path#locator' for texts) -> item id, straight from SQLite."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute(
            "SELECT id, path, locator FROM items WHERE kind = ? AND status = 'ok'", (kind,)
        ).fetchall()
    return {(f"{p}#{loc}" if loc else p): i for i, p, loc in rows}


def index_ids(index_dir: Path, kind: str) -> set[int]:
    """The ids in the saved FAISS index file."""
    from searchmm.index.vector_index import VectorIndex

    index, _ = VectorIndex.load(index_dir / f"{kind}s.faiss")
    return set(index.ids().tolist())


def bare_open_clip_text_vector(config: Path, text: str) -> np.ndarray:
    """The query vector computed with open_clip alone, seeded as searchmm documents (seed 0)."""
    import open_clip
    import torch

    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms(config.stem, pretrained=None)
    tokens = open_clip.get_tokenizer(config.stem)([text])
    with torch.inference_mode():
        vector = model.eval().encode_text(tokens)
    return torch.nn.functional.normalize(vector, dim=-1)[0].numpy()
