"""Shared fixtures: a tiny open_clip architecture, real photos, the real CLI, one served index."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.files import TINY_CONFIG, make_image, save_real_photos
from helpers.server import Served, served_index


@pytest.fixture(scope="session", autouse=True)
def session_machine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The session's fixtures keep the machine-wide cache (ONNX exports, checkpoint digests) in
    a folder of their own, never the user's ~/.cache."""
    previous = os.environ.get("SEARCHMM_CACHE_DIR")
    os.environ["SEARCHMM_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine-cache"))
    yield
    if previous is None:
        del os.environ["SEARCHMM_CACHE_DIR"]
    else:
        os.environ["SEARCHMM_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def machine_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own machine-wide cache: no test reuses another's export or digest."""
    folder = tmp_path / "machine-cache"
    monkeypatch.setenv("SEARCHMM_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "searchmm-tiny.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


@pytest.fixture(scope="session")
def real_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos shipped with scikit-image, saved as JPEG and PNG."""
    return save_real_photos(tmp_path_factory.mktemp("real-photos"))


@pytest.fixture
def photo_dir(tmp_path: Path, real_photos: Path) -> Path:
    """A folder of real photos plus generated ones in a subfolder."""
    folder = tmp_path / "photos"
    shutil.copytree(real_photos, folder)
    for i in range(4):
        make_image(folder / "generated" / f"gen-{i}.png", seed=i)
    return folder


@pytest.fixture(scope="session")
def served(
    tmp_path_factory: pytest.TempPathFactory, real_photos: Path, tiny_config: Path
) -> Iterator[Served]:
    """One index built by the real CLI and one `searchmm serve` over it, for the server and the
    browser tests; a test that changes a file puts it back."""
    with served_index(tmp_path_factory.mktemp("served"), real_photos, tiny_config) as s:
        yield s
