"""Watching a child process for a condition, with a deadline that fails the test loudly."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from helpers.cli import SEARCHMM


def wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[str], what: str, limit: float = 180
) -> None:
    """Poll `ready` while `process` runs; fail if it ends first or time runs out."""
    if not ready_or_exited(ready, process, what, limit):
        raise AssertionError(f"the child exited {process.returncode} before {what}")


def ready_or_exited(
    ready: Callable[[], bool], process: subprocess.Popen[str], what: str, limit: float = 180
) -> bool:
    """True once `ready`, False if `process` ended first; fails when time runs out."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready():
            return True
        if process.poll() is not None:
            return ready()
        time.sleep(0.01)
    raise AssertionError(f"timed out after {limit} s waiting until {what}")


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                queue.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


def open_paths(pid: int) -> set[str]:
    """The files `pid` and its children have open now, from /proc."""
    paths = set()
    for each in descendants(pid):
        fds = Path(f"/proc/{each}/fd")
        try:
            links = list(fds.iterdir())
        except OSError:
            continue  # it ended meanwhile
        for link in links:
            try:
                paths.add(os.readlink(link))
            except OSError:
                continue  # closed meanwhile
    return paths


def ingest_process(*args: object) -> subprocess.Popen[str]:
    """`searchmm ingest ARGS --json` as a child process, stdout and stderr piped."""
    command = [SEARCHMM, "ingest", *map(str, args), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def exited(pid: int) -> bool:
    """Whether `pid` has ended (a zombie has: only its reaping is left), from /proc."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def wait_for_exit(pids: list[int], what: str, limit: float = 30) -> None:
    """Poll until every one of `pids` has ended; fail when time runs out."""
    deadline = time.monotonic() + limit
    while not all(exited(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{what}: {pids} still running after {limit} s"
        time.sleep(0.01)
