"""The `searchmm` command two ways: the real console script in a child process, for tests where
the process is under test, and `invoke` in this process, for its arguments, messages, exit codes
and output."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEARCHMM = str(Path(sys.executable).with_name("searchmm"))

Arg = str | os.PathLike[str]


def run_cli(
    *args: Arg, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `searchmm` console command in a new process."""
    command = [SEARCHMM, *map(str, args)]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{command} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def cli_json(*args: Arg) -> Any:
    return json.loads(run_cli(*args, "--json").stdout)


@dataclass(frozen=True)
class Invoked:
    """What `invoke` saw: the fields a `subprocess.CompletedProcess` has, so tests read alike."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: Arg, check: bool = True, env: dict[str, str] | None = None) -> Invoked:
    """Run `searchmm.cli.app.app` in this process through typer's CliRunner, stdout and stderr
    apart; an exception the command does not turn into an exit code propagates."""
    from typer.testing import CliRunner

    from searchmm.cli.app import app

    argv = [str(a) for a in args]
    log = logging.getLogger("searchmm")
    kept = list(log.handlers)
    log.handlers.clear()  # the command attaches its handler to the stderr it is given
    try:
        result = CliRunner().invoke(app, argv, env=env, catch_exceptions=False)
    finally:
        log.handlers[:] = kept
    invoked = Invoked(argv, result.exit_code, result.stdout, result.stderr)
    if check and invoked.returncode != 0:
        raise AssertionError(
            f"searchmm {argv} exited {invoked.returncode}\n"
            f"stdout:\n{invoked.stdout}\nstderr:\n{invoked.stderr}"
        )
    return invoked


def invoke_json(*args: Arg) -> Any:
    return json.loads(invoke(*args, "--json").stdout)
