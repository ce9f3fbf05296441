"""A cold `searchmm query` (a fresh process, as a user types it), torch against onnxruntime.

The index is built once (untimed) from the photos with weights read from a `.safetensors` file,
as users load them; ingest leaves the store's verified ONNX export beside it. Then each round
runs, in turn, a text query and an image query with `--backend torch` and with `--backend onnx`
(interleaved, so that drift in the machine's load touches all alike), each a new process timed
from start to exit, with its peak RSS from `wait4`. Both backends must return the same items.
Then a `searchmm serve` is started on the index and the text query is timed again in client
mode (the query process sends it to the server, which has its model loaded). Last, where a cold
onnxruntime text query's time goes: a fresh process takes the query path's steps one by one
through the Python API with a clock between them (interpreter start is timed as a process that
exits at once; exit is what remains of the process's wall time after its last step).

    .venv/bin/python bench/cold_query.py --model ViT-B-32 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness

BACKENDS = ("torch", "onnx")
TEXT_QUERY = "a cat on a couch"


SAVE_WEIGHTS = """
import sys
from safetensors.torch import save_file
from searchmm import ModelSpec
from searchmm.model.loading import load_encoder
spec = ModelSpec.from_options(sys.argv[1] or None, "none", sys.argv[2] or None)
state = load_encoder(spec, "cpu").model.state_dict()
save_file({k: v.contiguous() for k, v in state.items()}, sys.argv[3])
"""


def random_weights(args: argparse.Namespace, path: Path) -> Path:
    """The model with searchmm's seeded random init, saved once as users' weights are. Made in a
    child process: a child forked from a parent holding a model would count its pages as RSS."""
    config = str(args.model_config or "")
    command = [sys.executable, "-c", SAVE_WEIGHTS, args.model or "", config, str(path)]
    subprocess.run(command, check=True)
    return path


def timed_run(
    command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of one fresh process."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"{command} exited {process.returncode}")
        out.seek(0)
        return wall, usage.ru_maxrss * 1024, out.read().decode()


BREAKDOWN = r"""
import json, os, sys, time
clock = time.perf_counter
marks = [("start", clock())]
def mark(name):
    marks.append((name, clock()))
import searchmm.cli.app
mark("CLI imports (typer, click)")
from searchmm.engine.engine import Engine
from searchmm.model.onnx_encoder import normalised
mark("engine imports")
engine = Engine(sys.argv[1], quick_start=True)
encoder = engine.load_model()
mark("store open, model record, export manifest")
import onnxruntime
mark("import onnxruntime")
session = encoder._session("text.onnx")
mark("text tower session")
tokens = encoder.text_tokens([sys.argv[2]])
mark("tokenizer load, tokenize")
(features,) = session.run(None, {"input": tokens})
mark("encode")
hits = engine.search_vector(normalised(features)[0], k=10)
mark("search (FAISS import, index read, search, items)")
sys.stdout.write(json.dumps([hit.to_dict() for hit in hits], indent=2) + "\n")
sys.stdout.flush()
mark("print")
engine.close()
steps = [(name, t - before) for (_, before), (name, t) in zip(marks, marks[1:])]
sys.stderr.write(json.dumps({"steps": steps, "total": clock() - marks[0][1]}) + "\n")
sys.stderr.flush()
os._exit(0)
"""


def breakdown_runs(index_dir: Path, rounds: int, expected: list[int]) -> dict[str, list[float]]:
    """Seconds per step of a cold onnxruntime text query, one fresh process per round."""
    measured: dict[str, list[float]] = {"interpreter start": []}
    for round_number in range(rounds + 1):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import os; os._exit(0)"], check=True)
        interpreter = time.perf_counter() - started
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", BREAKDOWN, str(index_dir), TEXT_QUERY],
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - started
        if [hit["id"] for hit in json.loads(done.stdout)] != expected:
            raise SystemExit("the step-by-step query answers differently")
        report = json.loads(done.stderr.strip().splitlines()[-1])
        if not round_number:
            continue  # round 0 warms the page cache
        measured["interpreter start"].append(interpreter)
        for name, seconds in report["steps"]:
            measured.setdefault(name, []).append(seconds)
        measured.setdefault("exit", []).append(max(0.0, wall - interpreter - report["total"]))
        measured.setdefault("whole process", []).append(wall)
    return measured


def client_mode_runs(
    exe: str, index_dir: Path, rounds: int, expected: list[int]
) -> dict[str, list[Any]]:
    """The text query in client mode, with a `searchmm serve` running on the index."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.server import ServerProcess

    measured: dict[str, list[Any]] = {"wall_s": [], "peak_rss": []}
    with ServerProcess(index_dir, log_path=index_dir.parent / "server.log"):
        for round_number in range(rounds + 1):
            command = [
                exe,
                "query",
                TEXT_QUERY,
                "--index-dir",
                str(index_dir),
                "--json",
                "-k",
                "10",
            ]
            wall, rss, out = timed_run(command)
            if [hit["id"] for hit in json.loads(out)] != expected:
                raise SystemExit("client mode answers differently")
            if round_number:
                measured["wall_s"].append(wall)
                measured["peak_rss"].append(rss)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_common_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--weights", type=Path, default=None, help="a .safetensors file to use")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="searchmm-cold-"))
    harness.fresh_machine_cache(scratch)
    photos = harness.photo_set(args.images, args.count, scratch)
    weights = args.weights or random_weights(args, scratch / "weights.safetensors")
    exe = harness.searchmm_executable()
    index_dir = scratch / "index"
    model = ["--model", args.model] if args.model else []
    model += ["--model-config", str(args.model_config)] if args.model_config else []
    subprocess.run(
        [exe, "ingest", str(photos.folder), "--index-dir", str(index_dir), *model,
         "--pretrained", str(weights), "--workers", str(args.workers), "--json"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    image = photos.paths[0]
    queries = {"text": [TEXT_QUERY], "image": ["--image", image]}
    runs: dict[str, dict[str, list[Any]]] = {
        f"{kind} {backend}": {"wall_s": [], "peak_rss": []}
        for kind in queries
        for backend in BACKENDS
    }
    answers: dict[str, list[int]] = {}
    for round_number in range(args.rounds + 1):  # round 0 warms the page cache, untimed
        for kind, query in queries.items():
            for backend in BACKENDS:
                command = [exe, "query", *query, "--index-dir", str(index_dir), "--json"]
                wall, rss, out = timed_run([*command, "--backend", backend, "-k", "10"])
                answers[f"{kind} {backend}"] = [hit["id"] for hit in json.loads(out)]
                if round_number:
                    runs[f"{kind} {backend}"]["wall_s"].append(wall)
                    runs[f"{kind} {backend}"]["peak_rss"].append(rss)
    for kind in queries:
        if answers[f"{kind} torch"] != answers[f"{kind} onnx"]:
            raise SystemExit(f"the backends disagree on the {kind} query")
    runs["text via server"] = client_mode_runs(exe, index_dir, args.rounds, answers["text onnx"])
    steps = breakdown_runs(index_dir, args.rounds, answers["text onnx"])
    medians = {
        name: {"wall_s": harness.median(r["wall_s"]), "peak_rss_mb": max(r["peak_rss"]) / 1e6}
        for name, r in runs.items()
    }
    manifest = next(index_dir.glob("onnx-*/manifest.json"))
    export = json.loads(manifest.read_text())
    headlines = [
        {
            "metric": f"cold {kind} query, onnx / torch wall",
            "ratio": medians[f"{kind} onnx"]["wall_s"] / medians[f"{kind} torch"]["wall_s"],
            "target": 0.5,
            "met": medians[f"{kind} onnx"]["wall_s"] <= 0.5 * medians[f"{kind} torch"]["wall_s"],
        }
        for kind in queries
    ]
    headlines.append(
        {
            "metric": "cold text query, client mode / torch wall",
            "ratio": medians["text via server"]["wall_s"] / medians["text torch"]["wall_s"],
            "target": 0.15,
            "met": medians["text via server"]["wall_s"] <= 0.15 * medians["text torch"]["wall_s"],
        }
    )
    rows = [
        (f"{name}: median wall, peak RSS", f"{m['wall_s']:.2f} s, {m['peak_rss_mb']:.0f} MB")
        for name, m in medians.items()
    ]
    rows.append(
        ("ONNX export at ingest", f"{export['export_s']:.1f} s, {export['bytes'] / 1e6:.0f} MB")
    )
    rows += [
        (f"cold onnx text query, step: {name}", f"{harness.median(seconds) * 1000:.0f} ms")
        for name, seconds in steps.items()
    ]
    harness.record(
        "cold_query",
        "Cold `searchmm query`: torch vs onnxruntime",
        args.output,
        {
            "model": harness.model_spec(args).name,
            "weights": "random init (seed 0) saved as .safetensors",
            "photos": f"{len(photos.paths)} ({photos.source})",
            "rounds": args.rounds,
            "python": sys.version.split()[0],
        },
        rows,
        {"runs": runs, "medians": medians, "export": export, "steps": steps},
        headlines,
        [
            "each query: a fresh `searchmm query ... --json -k 10` process, start to exit",
            "peak RSS: the child's ru_maxrss from wait4",
            "round 0 (untimed) warms the page cache; the same ids come from both backends",
            "client mode: the same text query with a `searchmm serve` running on the index",
            "steps: the onnx text query's path taken step by step through the Python API in a "
            "fresh process, a clock between steps; interpreter start is a process that exits "
            "at once; exit is the process's wall time left after its last step",
        ],
    )


if __name__ == "__main__":
    main()
