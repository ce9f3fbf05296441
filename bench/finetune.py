"""What `searchmm finetune` learns on a synthetic task, and how fast it trains on this CPU.

Quality (the only task with a known answer offline): the shapes task of tests/test_finetune.py,
renders of 6 colours x 4 shapes captioned "a red circle", 144 renders, a quarter held out. A
micro open_clip ViT (tests/helpers/shapes.py MICRO_CONFIG) is trained from random weights per
seed; text -> image Recall@1 is measured on 24 fresh renders (one per class, chance 1/24) before
and after, beside the run's own held-out mean recall at epoch 0 and at its best epoch.

Throughput: pairs/s of the fine-tuning loop (`searchmm.training.finetune`, one epoch after a
warm-up epoch: decode (in --workers processes; none by default on a CPU), the model's train
transform, tokenising, forward, loss, backward, clipping, AdamW, schedule) against the bare
training step in the same process (the same model, loss, optimizer and batch on tensors decoded
beforehand), for the tests' tiny model and ViT-B-32, random weights (the same compute as trained
ones), on the COCO val2017 sample's photos and captions when present, else on the renders.

    nice -n 19 .venv/bin/python bench/finetune.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch

from searchmm import ModelSpec
from searchmm.model.loading import load_encoder
from searchmm.sources.images import draft_for, load_image
from searchmm.training import FinetuneOptions, PairSet, finetune, read_pairs
from searchmm.training.data import NumpyTransform
from searchmm.training.schedule import make_optimizer
from searchmm.training.towers import contrastive_loss, train_transform

sys.path.insert(0, str(harness.REPO_ROOT / "tests"))
from helpers.files import TINY_CONFIG
from helpers.shapes import CLASSES, MICRO_CONFIG, gallery_recall_at_1, write_jsonl, write_renders

COCO_SAMPLE = harness.COCO_SAMPLE_IMAGES.parent
QUALITY_RECIPE = {"batch_size": 32, "lr": 2e-3, "val_split": 0.25, "workers": 0}
THROUGHPUT = {"searchmm-tiny": 32, "ViT-B-32": 8}  # model -> batch size
THROUGHPUT_STEPS = {"searchmm-tiny": 3, "ViT-B-32": 3}  # steps per timed epoch


def quality(scratch: Path, seeds: list[int], epochs: int) -> list[dict[str, Any]]:
    config = scratch / "searchmm-micro.json"
    config.write_text(json.dumps(MICRO_CONFIG))
    rows = write_renders(scratch / "renders", per_class=6, seed=100)
    pairs = read_pairs(scratch / "renders", write_jsonl(scratch / "captions.jsonl", rows))
    results = []
    for seed in seeds:
        spec = ModelSpec.from_options(model_config=config, seed=seed)
        out = scratch / f"micro-{seed}.safetensors"
        started = time.perf_counter()
        options = FinetuneOptions(epochs=epochs, seed=seed, **QUALITY_RECIPE)
        report = finetune(pairs, spec, out, options).report
        wall = time.perf_counter() - started
        tuned = ModelSpec.from_options(model_config=config, pretrained=str(out), seed=seed)
        best = report.epoch(report.best_epoch or -1)
        results.append(
            {
                "seed": seed,
                "r1_before": gallery_recall_at_1(spec),
                "r1_after": gallery_recall_at_1(tuned),
                "held_out_mean_recall_before": report.history[0].mean_recall,
                "held_out_mean_recall_best": best.mean_recall if best else None,
                "best_epoch": report.best_epoch,
                "loss_first": report.history[1].loss,
                "loss_last": report.history[-1].loss,
                "wall_s": round(wall, 2),
                "pairs_per_s": [round(r.pairs_per_s, 1) for r in report.history[1:]],
            }
        )
        print(f"seed {seed}: {results[-1]}", flush=True)
    return results


def throughput_pairs(scratch: Path) -> tuple[PairSet, str]:
    if (COCO_SAMPLE / "captions_val2017_sample.json").is_file():
        pairs = read_pairs(COCO_SAMPLE / "images", COCO_SAMPLE / "captions_val2017_sample.json")
        return pairs, "COCO val2017 sample (640x480-ish JPEGs, 5 captions each)"
    rows = write_renders(scratch / "t-renders", per_class=5, seed=1)
    pairs = read_pairs(scratch / "t-renders", write_jsonl(scratch / "t.jsonl", rows))
    return pairs, "shape renders (64x64 PNGs)"


def spec_for(name: str, scratch: Path) -> ModelSpec:
    if name == "ViT-B-32":
        return ModelSpec.from_options("ViT-B-32", "none")
    config = scratch / f"{name}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    return ModelSpec.from_options(model_config=config)


def loop_rate(spec: ModelSpec, pairs: PairSet, batch: int, workers: int | None, out: Path) -> float:
    """Pairs/s of the second of two epochs of `finetune` (the first warms up)."""
    options = FinetuneOptions(epochs=2, batch_size=batch, lr=1e-5, val_split=0.0, workers=workers)
    report = finetune(pairs, spec, out, options).report
    return report.history[-1].pairs_per_s


def bare_rate(spec: ModelSpec, pairs: PairSet, batch: int, steps: int) -> float:
    """Pairs/s of the training step alone, on the same pairs decoded and transformed before."""
    encoder = load_encoder(spec, "cpu")
    model = encoder.model.train()
    transform = NumpyTransform(train_transform(model))
    draft = draft_for(encoder.image_size)
    pixels = torch.from_numpy(
        np.stack([transform(load_image(p, draft_size=draft)[0]) for p in pairs.image_paths])
    )
    tokens = encoder.tokenizer([texts[0] for texts in pairs.captions])
    optimizer, _ = make_optimizer(model, FinetuneOptions(lr=1e-5), steps + 1)
    loss_fn = contrastive_loss(model)
    trainable = [p for p in model.parameters() if p.requires_grad]

    def step(i: int) -> None:
        rows = slice((i % steps) * batch, (i % steps + 1) * batch)
        loss = loss_fn(*model(pixels[rows], tokens[rows]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()

    step(0)  # warm-up
    started = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the quality runs")
    parser.add_argument(
        "--workers", type=int, default=None, help="decode workers [default: finetune's, 0 on CPU]"
    )
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs; medians")
    parser.add_argument("--output", type=Path, default=harness.RESULTS_DIR)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="searchmm-bench-finetune-") as tmp:
        scratch = Path(tmp)
        results = quality(scratch, args.seeds, args.epochs)
        pairs, source = throughput_pairs(scratch)
        runs: dict[str, dict[str, list[float]]] = {}
        for name, batch in THROUGHPUT.items():
            spec = spec_for(name, scratch)
            n = batch * THROUGHPUT_STEPS[name]
            chosen = PairSet(pairs.image_paths[:n], pairs.captions[:n])
            runs[name] = {"loop_pairs_per_s": [], "bare_pairs_per_s": []}
            for repeat in range(args.repeats):  # interleaved: the load of others hits both
                out = scratch / f"{name}-{repeat}.safetensors"
                loop = loop_rate(spec, chosen, batch, args.workers, out)
                bare = bare_rate(spec, chosen, batch, THROUGHPUT_STEPS[name])
                runs[name]["loop_pairs_per_s"].append(loop)
                runs[name]["bare_pairs_per_s"].append(bare)
                print(
                    f"{name} (batch {batch}): loop {loop:.1f}, bare {bare:.1f} pairs/s", flush=True
                )
        rates = {name: {k: harness.median(v) for k, v in r.items()} for name, r in runs.items()}

    chance = 1 / len(CLASSES)
    rows = [
        (
            f"shapes, seed {r['seed']}: text->image R@1 (chance {chance:.3f})",
            f"{r['r1_before']:.3f} -> {r['r1_after']:.3f}",
        )
        for r in results
    ]
    rows += [
        (
            f"shapes, seed {r['seed']}: held-out mean recall, epoch 0 -> best "
            f"(epoch {r['best_epoch']}); loss",
            f"{r['held_out_mean_recall_before']:.3f} -> {r['held_out_mean_recall_best']:.3f}; "
            f"{r['loss_first']:.2f} -> {r['loss_last']:.2f} ({r['wall_s']:.1f} s)",
        )
        for r in results
    ]
    for name, rate in rates.items():
        rows.append(
            (
                f"{name} (batch {THROUGHPUT[name]}): finetune loop pairs/s",
                f"{rate['loop_pairs_per_s']:.1f}",
            )
        )
        rows.append(
            (
                f"{name} (batch {THROUGHPUT[name]}): bare training step pairs/s",
                f"{rate['bare_pairs_per_s']:.1f}",
            )
        )
    headlines = [
        {"metric": f"shapes seed {r['seed']}: R@1 after / chance", "ratio": r["r1_after"] / chance}
        for r in results
    ] + [
        {
            "metric": f"{name}: loop pairs/s / bare step pairs/s",
            "ratio": r["loop_pairs_per_s"] / r["bare_pairs_per_s"],
        }
        for name, r in rates.items()
    ]
    harness.record(
        "finetune",
        "searchmm finetune: synthetic recall before/after, and training throughput (CPU, no GPU)",
        args.output,
        {
            "quality_model": "MICRO_CONFIG (tests/helpers/shapes.py), random init",
            "quality_recipe": {**QUALITY_RECIPE, "epochs": args.epochs},
            "seeds": args.seeds,
            "throughput_pairs": source,
            "throughput_batches": THROUGHPUT,
            "throughput_steps_per_epoch": THROUGHPUT_STEPS,
            "workers": args.workers,
            "repeats": args.repeats,
            "torch_threads": "every core",
        },
        rows,
        {"quality": results, "throughput": runs, "throughput_medians": rates},
        headlines,
        [
            "quality: R@1 of 24 fresh renders (one per class) by their 24 captions, before "
            "(the seeded random init) and after (the checkpoint loaded with --pretrained)",
            "loop pairs/s: the second of two epochs of finetune (val split 0, so no evaluation): "
            "pairs trained / that epoch's wall time, decode and transform included (in --workers "
            "processes; none by default on a CPU)",
            "bare pairs/s: forward, loss, backward, gradient clipping and AdamW step on tensors "
            "decoded and transformed before the clock starts; one warm-up step",
            "throughput: --repeats interleaved loop and bare runs, medians reported",
        ],
    )


if __name__ == "__main__":
    main()
