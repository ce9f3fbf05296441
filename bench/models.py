"""What each recommended model costs on this machine's CPU: parameters, embedding sizes,
milliseconds to encode one image and one text query, peak memory.

Each model is built with random weights (seeded) in a process of its own: the same compute as
trained weights, without downloading them. Timed with torch in fp32 on every core, after one
warm-up call: the median of --rounds single-image and single-query encodes, and an image batch
of 8 (per image). Peak RSS is the process's, model included. Models whose text tower's config
comes from the Hugging Face hub (xlm-roberta) cannot be built offline: they are listed as not
measured, with the reason. Besides bench/results/models.{json,md}, the figures go to
searchmm/evaluation/measured_cpu.json, which `searchmm models` prints.

    .venv/bin/python bench/models.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import harness

from searchmm.evaluation.catalog import MEASURED_FILE, RECOMMENDED

MEASURE = r"""
import json, os, resource, statistics, sys, time
import open_clip, torch
name, rounds = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(os.cpu_count() or 1)
model = open_clip.create_model(name, pretrained=None).eval()
size = model.visual.image_size
size = int(size[0] if isinstance(size, (tuple, list)) else size)
context = int(open_clip.get_model_config(name)["text_cfg"].get("context_length", 77))
image, batch = torch.randn(1, 3, size, size), torch.randn(8, 3, size, size)
tokens = torch.randint(1, 1000, (1, context))

def median_ms(call, n):
    call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)

with torch.inference_mode():
    image_dim = int(model.encode_image(image).shape[1])
    text_dim = int(model.encode_text(tokens).shape[1])
    image_ms = median_ms(lambda: model.encode_image(image), rounds)
    batch_ms = median_ms(lambda: model.encode_image(batch), 1) / len(batch)
    query_ms = median_ms(lambda: model.encode_text(tokens), rounds)
print(json.dumps({
    "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    "input_px": size,
    "image_dim": image_dim,
    "text_dim": text_dim,
    "image_ms": round(image_ms, 1),
    "image_ms_in_batch_of_8": round(batch_ms, 1),
    "query_ms": round(query_ms, 1),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
}))
"""


def measure(name: str, rounds: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, name, str(rounds)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return {"not_measured": last[:200]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    measured: dict[str, dict[str, Any]] = {}
    for model in RECOMMENDED:
        print(f"measuring {model.name} ...", flush=True)
        measured[f"{model.name}/{model.pretrained}"] = measure(model.name, args.rounds)
    machine = harness.machine_info()
    MEASURED_FILE.write_text(
        json.dumps({"machine": machine, "models": measured}, indent=1) + "\n", encoding="utf-8"
    )
    rows = []
    for key, m in measured.items():
        if "not_measured" in m:
            rows.append((key, f"not measured: {m['not_measured']}"))
        else:
            rows.append(
                (
                    key,
                    f"{m['params_m']:.0f}M params, {m['input_px']} px, dim {m['image_dim']}, "
                    f"{m['image_ms']:.0f} ms/image ({m['image_ms_in_batch_of_8']:.0f} in a "
                    f"batch), {m['query_ms']:.0f} ms/query, {m['peak_rss_mb']} MB",
                )
            )
    harness.record(
        "models",
        "What the recommended models cost on this CPU (random weights, torch fp32)",
        args.output,
        {"rounds": args.rounds, "threads": "every core"},
        rows,
        measured,
        [],
        [
            "each model in a fresh process, built with seeded random weights (untimed)",
            "image: encode_image of one image at the model's input size, median of --rounds "
            "after a warm-up; in a batch: one batch of 8, per image",
            "query: encode_text of one text at the model's context length, median",
            "peak RSS: ru_maxrss of that process",
        ],
    )


if __name__ == "__main__":
    main()
