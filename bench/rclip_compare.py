"""searchmm side by side with rclip 4 on the same machine, photos and weights.

Both tools get the same model, open_clip ViT-B-32-256 with searchmm's seeded random init: saved
once as a `.safetensors` file, which searchmm loads with `--pretrained FILE` (as users load
weights), and whose ONNX towers (searchmm's own verified export of it, with the input and output
names rclip's converter uses) are placed where rclip reads its model, with the tokenizer's
vocabulary, so that rclip runs offline. The export is made once, untimed, by a first ingest
(searchmm keeps it in its machine cache, as rclip keeps its model files in its data folder; that
first ingest, torch load and export included, is reported too). Each round runs, interleaved, a
fresh full index of the photos (a new store, a new rclip database) followed by one text query
for each tool, then cold text and image queries (searchmm
locally with onnxruntime, and in client mode with a `searchmm serve` running), each a new
process: wall time to exit and peak RSS (`wait4`). Medians over the rounds; both tools must
rank the same first photo and at least 8 of the same top 10 (rclip decodes JPEGs reduced where
searchmm decodes them in full, so near-ties may swap; the overlap is recorded).

rclip 4 needs Python >= 3.12 (pip on 3.11 quietly installs rclip 3):

    PYENV_VERSION=3.12.1 python3 -m venv /tmp/rclip-venv
    /tmp/rclip-venv/bin/pip install rclip==4.0.8
    .venv/bin/python bench/rclip_compare.py --rclip /tmp/rclip-venv/bin/rclip --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
from cold_query import random_weights, timed_run

MODEL = "ViT-B-32-256"
RCLIP_MODEL_DIR = "ViT-B-32-256-datacomp_s34b_b86k"
RCLIP_LEGAL_FILES = ("LICENSE", "OPENAI-CLIP-MIT.txt", "README.md", "THIRD_PARTY_NOTICES.md")
TEXT_QUERY = "a cat on a couch"
# rclip decodes a JPEG reduced whenever the reduction still covers 256 px (a 640x640 photo at
# 320x320); searchmm decodes it in full, as open_clip's reference does: near-ties may swap.
MIN_OVERLAP = 8


EMBED_WEIGHTS = """
import shutil, sys, tempfile
from pathlib import Path
import onnx
graph, out = Path(sys.argv[1]), sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:  # copies: onnx refuses hard-linked weights files
    for path in (graph, graph.with_name(graph.name + ".data")):
        shutil.copyfile(path, Path(tmp) / path.name)
    onnx.save_model(onnx.load(str(Path(tmp) / graph.name)), out)
"""


def embedded_weights(graph: Path, out: Path) -> None:
    """The graph with its weights inside, as rclip's own model files are. Made in a child
    process: a child forked from a parent holding the model would count its pages as RSS."""
    subprocess.run([sys.executable, "-c", EMBED_WEIGHTS, str(graph), str(out)], check=True)


def rclip_datadir(root: Path, export: Path, shipped: Path) -> Path:
    """A fresh rclip data folder (no database) holding searchmm's export as rclip's model, in
    the form rclip ships its models (weights inside the graph; searchmm keeps them beside it)."""
    root.mkdir(parents=True)
    (root / RCLIP_MODEL_DIR).mkdir()
    for ours, theirs in (("text", "textual"), ("image", "visual")):
        target = root / RCLIP_MODEL_DIR / f"{theirs}.onnx"
        if not (shipped / target.name).exists():
            shipped.mkdir(exist_ok=True)
            embedded_weights(export / f"{ours}.onnx", shipped / target.name)
        os.symlink(shipped / target.name, target)
    (root / "tokenizer").mkdir()
    os.symlink(
        export / "bpe_simple_vocab_16e6.txt.gz", root / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz"
    )
    for name in RCLIP_LEGAL_FILES:
        (root / name).write_text("stand-in for the benchmark\n")
    return root


def rclip_run(rclip: str, datadir: Path, photos: Path, *query: str) -> tuple[float, int, list[str]]:
    env = {**os.environ, "RCLIP_DATADIR": str(datadir), "HF_HUB_OFFLINE": "1"}
    wall, rss, out = timed_run([rclip, *query, "-f", "-t", "10"], cwd=photos, env=env)
    return wall, rss, [line.strip() for line in out.splitlines() if line.strip()]


def top10_overlap(ours: list[str], theirs: list[str]) -> int:
    return len({Path(p).name for p in ours} & {Path(p).name for p in theirs})


def searchmm_paths(out: str) -> list[str]:
    return [hit["path"] for hit in json.loads(out)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rclip", required=True, help="the rclip 4 command (a Python 3.12 venv)")
    parser.add_argument("--images", type=Path, default=None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="searchmm-rclip-"))
    photos = harness.photo_set(args.images, args.count, scratch)
    folder = scratch / "photos"  # rclip indexes the folder it runs in: a copy of just these
    folder.mkdir()
    for path in photos.paths:
        shutil.copy2(path, folder / Path(path).name)
    weights = random_weights(
        argparse.Namespace(model=MODEL, model_config=None), scratch / "w.safetensors"
    )
    exe = harness.searchmm_executable()
    harness.fresh_machine_cache(scratch)
    runs: dict[str, dict[str, list[Any]]] = {}
    overlaps: list[int] = []

    def note(name: str, wall: float, rss: int) -> None:
        runs.setdefault(name, {"wall_s": [], "peak_rss": []})
        runs[name]["wall_s"].append(wall)
        runs[name]["peak_rss"].append(rss)

    image_query = f"./{sorted(folder.iterdir())[0].name}"
    first = [exe, "ingest", str(folder), "--index-dir", str(scratch / "first-index")]
    first_wall, first_rss, _ = timed_run([*first, "--model", MODEL, "--pretrained", str(weights)])
    note("searchmm: first index of the model (torch load, ONNX export)", first_wall, first_rss)
    for round_number in range(args.rounds):
        index_dir = scratch / f"index-{round_number}"
        ingest = [exe, "ingest", str(folder), "--index-dir", str(index_dir), "--model", MODEL]
        ingest += ["--pretrained", str(weights), "--json"]
        wall_i, rss_i, _ = timed_run(ingest)
        query = [exe, "query", TEXT_QUERY, "--index-dir", str(index_dir), "--json"]
        wall_q, rss_q, out = timed_run(query)
        note("searchmm: index + text query", wall_i + wall_q, max(rss_i, rss_q))
        ours = searchmm_paths(out)
        export = next(index_dir.glob("onnx-*/manifest.json")).parent
        datadir = rclip_datadir(scratch / f"rclip-{round_number}", export, scratch / "shipped")
        wall, rss, theirs = rclip_run(args.rclip, datadir, folder, TEXT_QUERY)
        note("rclip: index + text query", wall, rss)
        overlap = top10_overlap(ours, theirs)
        if overlap < MIN_OVERLAP or Path(ours[0]).name != Path(theirs[0]).name:
            raise SystemExit(f"the tools rank differently:\n{ours}\n{theirs}")
        overlaps.append(overlap)
        for _ in range(2):  # cold queries, interleaved
            for kind, ours_query, theirs_query in (
                ("text", [TEXT_QUERY], TEXT_QUERY),
                ("image", ["--image", str(folder / image_query[2:])], image_query),
            ):
                command = [exe, "query", *ours_query, "--index-dir", str(index_dir), "--json"]
                wall, rss, _ = timed_run(command)
                note(f"searchmm: cold {kind} query", wall, rss)
                wall, rss, _ = rclip_run(args.rclip, datadir, folder, "-n", theirs_query)
                note(f"rclip: cold {kind} query", wall, rss)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.server import ServerProcess

    with ServerProcess(index_dir, log_path=scratch / "server.log"):
        for _ in range(args.rounds * 2):
            wall, rss, _ = timed_run([exe, "query", TEXT_QUERY, "--index-dir", str(index_dir)])
            note("searchmm: cold text query, client mode", wall, rss)
    medians = {
        name: {"wall_s": harness.median(r["wall_s"]), "peak_rss_mb": max(r["peak_rss"]) / 1e6}
        for name, r in runs.items()
    }

    def ratio(ours: str, theirs: str, target: float) -> dict[str, Any]:
        value = medians[ours]["wall_s"] / medians[theirs]["wall_s"]
        return {
            "metric": f"{ours} / {theirs}",
            "ratio": value,
            "target": target,
            "met": value <= target,
        }

    headlines = [
        ratio("searchmm: cold text query", "rclip: cold text query", 0.5),
        ratio("searchmm: cold image query", "rclip: cold image query", 0.5),
        ratio("searchmm: cold text query, client mode", "rclip: cold text query", 0.15),
        ratio("searchmm: index + text query", "rclip: index + text query", 0.7),
    ]
    version = subprocess.run([args.rclip, "--version"], capture_output=True, text=True).stdout
    harness.record(
        "rclip_compare",
        "searchmm vs rclip 4: same machine, photos and weights",
        args.output,
        {
            "model": f"{MODEL}, random init (seed 0), from a .safetensors file",
            "photos": f"{len(photos.paths)} ({photos.source})",
            "rounds": args.rounds,
            "rclip": version.strip(),
        },
        [
            (f"{name}: median wall, peak RSS", f"{m['wall_s']:.2f} s, {m['peak_rss_mb']:.0f} MB")
            for name, m in medians.items()
        ],
        {"runs": runs, "medians": medians, "top10_overlap": overlaps},
        headlines,
        [
            "each command a fresh process, start to exit; peak RSS from wait4",
            "index + text query: searchmm ingest into a new store (encoding with the machine's "
            "ONNX export of the model, made untimed by a first ingest) then searchmm query, "
            "against one rclip run in the photo folder with a new database",
            "first index of the model: that first, untimed-for-the-ratio ingest, once: "
            "import torch, load the checkpoint, encode, export and verify the towers",
            "cold queries: searchmm query (onnxruntime) against rclip -n, two of each per round",
            "client mode: searchmm query with a searchmm serve running on the index",
        ],
    )


if __name__ == "__main__":
    main()
