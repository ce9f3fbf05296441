"""A `searchmm serve` child process on a free loopback port, ready when the context is entered,
and the index the server and browser tests share: built by the real CLI with the tiny model.

For tests and benchmarks that need the real server (its own process, the real CLI) rather than
an app object.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from helpers.cli import run_cli
from helpers.files import make_image
from helpers.store import stored_items

if TYPE_CHECKING:
    import httpx

HOST = "127.0.0.1"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def searchmm_command() -> list[str]:
    """The `searchmm` console script beside this interpreter, else the same entry point via -c."""
    beside = Path(sys.executable).with_name("searchmm")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("searchmm")
    return [found] if found else [sys.executable, "-c", "from searchmm.cli.app import main; main()"]


class ServerProcess:
    """`searchmm serve --index-dir D --port P [args]`; output goes to `log_path`."""

    def __init__(
        self,
        index_dir: str | os.PathLike[str],
        *args: str,
        log_path: str | os.PathLike[str],
        env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,
        token: str | None = None,
    ) -> None:
        self.port = free_port()
        self.token = token
        self.url = f"http://{HOST}:{self.port}"
        self.command = [
            *searchmm_command(),
            "serve",
            "--index-dir",
            os.fspath(index_dir),
            "--host",
            HOST,
            "--port",
            str(self.port),
            *(["--token", token] if token else []),
            *args,
        ]
        self.log_path = Path(log_path)
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited {self.process.returncode}:\n{self.log()}")
            health = urllib.request.Request(f"{self.url}/api/health", headers=self.headers())
            with (
                contextlib.suppress(OSError),  # URLError too: not listening yet
                _DIRECT.open(health, timeout=5) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer in {self.startup_timeout} s:\n{self.log()}")

    def headers(self) -> dict[str, str]:
        """What a request needs to be let in (the token, when the server has one)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> int | None:
        """SIGTERM (uvicorn shuts down cleanly), then SIGKILL if it lingers; the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]
        except OSError:
            return ""


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
        import httpx

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
