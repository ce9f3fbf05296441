"""How long `searchmm --help` takes against `python -c "import typer"`, the floor of any typer CLI.

Each round runs every command once, in turn (interleaved, so that drift in the machine's load
touches all of them alike); the table gives medians over the rounds and the ratio to the
baseline's median. The commands run with bytecode caching on (PYTHONDONTWRITEBYTECODE dropped),
as an installed searchmm does: the untimed warm-up round writes the .pyc files. Writes
bench/results/cli_start.json and .md.

    python bench/cli_start.py --rounds 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-m", "searchmm.cli"]
COMMANDS = {
    'python -c "import typer"': [sys.executable, "-c", "import typer"],
    "searchmm --help": [*CLI, "--help"],
    "searchmm query --help": [*CLI, "query", "--help"],
    "searchmm bench --help": [*CLI, "bench", "--help"],
}


NOTES = [
    "What `--help` used to cost, measured with `-X importtime`: rendering it with rich (typer's",
    "default) imported ~50 ms of rich, markdown-it and pygments, so the CLI uses click's plain",
    "help (`rich_markup_mode=None`); and typer 0.29 coerces a group's unused `--help` (None)",
    "through pydantic (~100 ms) on every `searchmm COMMAND`, which the CLI's `Group` avoids.",
    "",
]
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    for command in COMMANDS.values():  # warm the page cache once, untimed
        wall_time(command)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            times[name].append(wall_time(command))
    baseline = statistics.median(next(iter(times.values())))
    rows = [
        (name, statistics.median(values), statistics.median(values) / baseline)
        for name, values in times.items()
    ]
    lines = [
        "# CLI start-up: `--help` against importing typer",
        "",
        f"- date: {dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()}",
        f"- command: `{shlex.join(getattr(sys, 'orig_argv', sys.argv))}`",
        f"- machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; "
        f"Python {sys.version.split()[0]}",
        f"- {args.rounds} interleaved rounds, medians, bytecode cached; the limit is 1.5x",
        "",
        "| command | median wall time | vs baseline |",
        "|---|---:|---:|",
        *(f"| `{name}` | {median * 1000:.1f} ms | {ratio:.2f}x |" for name, median, ratio in rows),
        "",
        *NOTES,
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cli_start.md").write_text(report, encoding="utf-8")
    raw = {"rounds": args.rounds, "seconds": times, "baseline_median_s": baseline}
    (RESULTS / "cli_start.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
