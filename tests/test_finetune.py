"""`searchmm finetune`: real open_clip training from random weights on a task it can learn in
seconds (renders of coloured shapes), through the Python API and the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from open_clip.loss import SigLipLoss
from safetensors import safe_open
from safetensors.torch import load_file

from helpers.cli import SEARCHMM, invoke, invoke_json
from helpers.files import COCO_SAMPLE, TINY_CONFIG
from helpers.shapes import (
    CLASSES,
    MICRO_CONFIG,
    gallery_recall_at_1,
    render,
    write_coco,
    write_jsonl,
    write_renders,
)
from searchmm.errors import Hint, SearchmmError
from searchmm.model.loading import load_encoder
from searchmm.model.spec import ModelSpec
from searchmm.training import EpochRecord, FinetuneOptions, PairSet, finetune, read_pairs
from searchmm.training.pairs import split_by_image
from searchmm.training.towers import contrastive_loss

CHANCE = 1 / len(CLASSES)  # Recall@1 of a random ranking over one render per class
# What the shapes task trains with: 108 renders to train on, 36 held out, 3 steps an epoch.
RECIPE = {"batch_size": 32, "lr": 2e-3, "val_split": 0.25, "workers": 0, "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These models are too small to gain from a second thread, and on a shared machine it
    spin-waits for a busy core: measured 2 to 4 times slower on 2 loaded cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def micro_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "searchmm-micro.json"
    path.write_text(json.dumps(MICRO_CONFIG))
    return path


@pytest.fixture(scope="session")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six renders of each of the 24 classes and their captions (.jsonl): (folder, captions)."""
    root = tmp_path_factory.mktemp("shapes")
    rows = write_renders(root / "renders", per_class=6, seed=100)
    return root / "renders", write_jsonl(root / "captions.jsonl", rows)


@pytest.fixture(scope="session")
def shape_pairs(shapes: tuple[Path, Path]) -> PairSet:
    return read_pairs(*shapes)


def micro(config: Path, seed: int = 0, pretrained: Path | None = None) -> ModelSpec:
    weights = str(pretrained) if pretrained is not None else None
    return ModelSpec.from_options(model_config=config, pretrained=weights, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_training_from_random_weights_learns_colours_and_shapes(
    tmp_path: Path, micro_config: Path, shape_pairs: PairSet, seed: int
) -> None:
    spec = micro(micro_config, seed)
    out = tmp_path / "tuned.safetensors"
    run = finetune(shape_pairs, spec, out, FinetuneOptions(epochs=10, seed=seed, **RECIPE))

    before = gallery_recall_at_1(spec)
    after = gallery_recall_at_1(micro(micro_config, seed, out))
    # Measured (seeds 0, 1, 2): before 0, 0, 1/24; after 10/24 each.
    assert before <= 2 * CHANCE
    assert after >= 5 * CHANCE, (before, after)
    losses = [r.loss for r in run.report.history if r.loss is not None]
    assert len(losses) == 10 and losses[-1] < 0.7 * losses[0], losses
    held_out = [r.mean_recall for r in run.report.history]
    assert held_out[0] is not None and max(r for r in held_out if r is not None) > 2 * held_out[0]
    best = run.report.epoch(run.report.best_epoch or -1)
    assert best is not None and best.mean_recall == max(r for r in held_out[1:] if r is not None)
    with safe_open(str(out), "pt") as f:
        assert f.metadata()["epoch"] == str(run.report.best_epoch)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_shapes_task_learns_on_a_gpu_under_autocast(
    tmp_path: Path, micro_config: Path, shape_pairs: PairSet
) -> None:
    """Mixed precision (bf16 autocast, or fp16 with a gradient scaler) learns as fp32 does."""
    spec = micro(micro_config)
    out = tmp_path / "tuned.safetensors"
    options = FinetuneOptions(epochs=10, seed=0, **{**RECIPE, "device": "cuda"})
    run = finetune(shape_pairs, spec, out, options)
    losses = [r.loss for r in run.report.history if r.loss is not None]
    assert losses[-1] < 0.7 * losses[0], losses
    assert gallery_recall_at_1(micro(micro_config, 0, out)) >= 5 * CHANCE


def test_a_model_with_a_logit_bias_trains_with_siglips_loss(
    tmp_path: Path, shape_pairs: PairSet
) -> None:
    """A SigLIP-style model (open_clip's `init_logit_bias`) learns under the sigmoid loss."""
    config = tmp_path / "searchmm-micro-sigmoid.json"  # "siglip" in a name picks its tokenizer
    config.write_text(json.dumps({**MICRO_CONFIG, "init_logit_bias": -10, "init_logit_scale": 2.3}))
    spec = micro(config)
    assert isinstance(contrastive_loss(load_encoder(spec, "cpu").model), SigLipLoss)
    out = tmp_path / "tuned.safetensors"
    history = finetune(shape_pairs, spec, out, FinetuneOptions(epochs=6, **RECIPE)).report.history
    losses = [r.loss for r in history if r.loss is not None]
    assert losses[-1] < 0.6 * losses[0], losses  # measured: 7.4 -> 3.3
    recalls = [r.mean_recall or 0.0 for r in history]
    assert max(recalls[1:]) > 2 * recalls[0], recalls  # measured: 0.12 -> 0.57
    assert float(load_file(out)["logit_bias"]) != -10


def changed_weights(before: dict[str, Any], checkpoint: Path) -> set[str]:
    after = load_file(checkpoint)
    assert after.keys() == before.keys()
    return {name for name, tensor in after.items() if not tensor.equal(before[name])}


@pytest.mark.parametrize(
    ("option", "frozen"),
    [
        ({"freeze_image": True}, lambda name: name.startswith("visual.")),
        (
            {"freeze_text": True},
            lambda name: not name.startswith("visual.") and not name.startswith("logit_"),
        ),
        # The patch embedding and block 0 of 2 locked; block 1, its norm and the projection train.
        (
            {"lock_image_layers": 1},
            lambda name: (
                name.startswith("visual.")
                and not name.startswith(
                    ("visual.transformer.resblocks.1.", "visual.ln_post", "visual.proj")
                )
            ),
        ),
    ],
    ids=["freeze-image", "freeze-text", "lock-image-layers"],
)
def test_frozen_weights_stay_bit_identical(
    tmp_path: Path, micro_config: Path, shape_pairs: PairSet, option: dict[str, Any], frozen: Any
) -> None:
    spec = micro(micro_config)
    initial = {k: v.clone() for k, v in load_encoder(spec, "cpu").model.state_dict().items()}
    out = tmp_path / "tuned.safetensors"
    finetune(shape_pairs, spec, out, FinetuneOptions(epochs=1, **{**RECIPE, **option}))

    trainable = {name for name in initial if not frozen(name)}
    assert trainable and changed_weights(initial, out) == trainable


def test_the_checkpoint_loads_through_pretrained_with_the_trained_vectors(
    tmp_path: Path, micro_config: Path, shape_pairs: PairSet
) -> None:
    out = tmp_path / "tuned.safetensors"
    options = FinetuneOptions(epochs=2, **{**RECIPE, "val_split": 0.0})
    run = finetune(shape_pairs, micro(micro_config), out, options)
    assert run.report.best_epoch == 2  # without a val split the last epoch is kept

    loaded = load_encoder(micro(micro_config, pretrained=out), "cpu")
    untrained = load_encoder(micro(micro_config), "cpu")
    rng = np.random.default_rng(1)
    images = [render("red", "circle", rng), render("blue", "cross", rng)]
    texts = ["a red circle", "a blue cross", "a photo of a cat"]
    for encode in ("encode_pil", "encode_texts"):
        inputs = images if encode == "encode_pil" else texts
        trained = getattr(run.encoder, encode)(inputs)
        assert np.allclose(getattr(loaded, encode)(inputs), trained, atol=1e-6)
        assert not np.allclose(getattr(untrained, encode)(inputs), trained, atol=1e-3)


def stop_after(epoch: int) -> tuple[threading.Event, Any]:
    """A stop event and an epoch callback that sets it once `epoch` is done."""
    stop = threading.Event()

    def on_epoch(record: EpochRecord, _best: bool) -> None:
        if record.epoch == epoch:
            stop.set()

    return stop, on_epoch


def test_resume_continues_from_the_saved_epoch(
    tmp_path: Path, micro_config: Path, shape_pairs: PairSet
) -> None:
    spec, options = micro(micro_config), FinetuneOptions(epochs=3, **RECIPE)
    reference = finetune(shape_pairs, spec, tmp_path / "ref.safetensors", options).report

    out = tmp_path / "tuned.safetensors"
    stop, on_epoch = stop_after(1)
    stopped = finetune(shape_pairs, spec, out, options, stop=stop, on_epoch=on_epoch).report
    assert stopped.interrupted and [r.epoch for r in stopped.history] == [0, 1]
    resume_file = tmp_path / "tuned.resume.pt"
    assert resume_file.is_file()
    with pytest.raises(SearchmmError, match="interrupted run") as refused:
        finetune(shape_pairs, spec, out, options)  # a fresh start would overwrite it
    assert refused.value.hint is Hint.PASS_RESUME
    with pytest.raises(SearchmmError, match="other lr"):
        finetune(
            shape_pairs,
            spec,
            out,
            FinetuneOptions(**{**options.to_dict(), "lr": 1e-3}),
            resume=True,
        )

    resumed = finetune(shape_pairs, spec, out, options, resume=True).report
    assert not resumed.interrupted and not resume_file.exists()
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3]
    # Epochs 2 and 3 train exactly as the uninterrupted run's did: same weights, optimizer,
    # schedule, order, captions and augmentation.
    assert resumed.history[0] == reference.history[0]
    for got, want in zip(resumed.history[1:], reference.history[1:], strict=True):
        assert got.loss == pytest.approx(want.loss, rel=1e-5)
        assert got.mean_recall == pytest.approx(want.mean_recall, abs=1e-6)
    final, expected = load_file(out), load_file(tmp_path / "ref.safetensors")
    assert all(np.allclose(final[k].numpy(), expected[k].numpy(), atol=1e-5) for k in expected)


def test_the_val_split_holds_whole_images_none_trained_on(tmp_path: Path) -> None:
    rows = write_renders(tmp_path / "renders", per_class=2, seed=3)
    rows += [(name, f"{text}, drawn") for name, text in rows]  # two captions an image
    pairs = read_pairs(tmp_path / "renders", write_coco(tmp_path / "captions.json", rows))
    assert len(pairs) == 48 and pairs.caption_count == 96

    train, val = split_by_image(pairs, 0.25, seed=7)
    assert len(val) == 12 and len(train) == 36
    assert not set(train.image_paths) & set(val.image_paths)
    assert set(train.image_paths) | set(val.image_paths) == set(pairs.image_paths)
    for part in (train, val):  # every caption goes with its own image
        for path, texts in zip(part.image_paths, part.captions, strict=True):
            assert texts == pairs.captions[pairs.image_paths.index(path)]
    assert split_by_image(pairs, 0.25, seed=7) == (train, val)
    assert split_by_image(pairs, 0.25, seed=8)[1].image_paths != val.image_paths


def tune_args(images: Path, captions: Path, out: Path, config: Path, *extra: Any) -> list[Any]:
    return [
        "finetune", "--images", images, "--captions", captions, "--output", out,
        "--model-config", config, "--batch-size", 8, "--lr", 2e-3, "--workers", 0,
        "--device", "cpu", *extra,
    ]  # fmt: skip


def test_the_command_fine_tunes_and_its_checkpoint_serves_a_new_store(
    tmp_path: Path, micro_config: Path, shapes: tuple[Path, Path]
) -> None:
    images, captions = shapes
    out = tmp_path / "tuned.safetensors"
    result = invoke(*tune_args(images, captions, out, micro_config, "--epochs", 2))
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["epoch 0/2", "epoch 1/2", "epoch 2/2"]
    assert "text->image R@1" in lines[1] and "pairs/s" in lines[1]
    assert lines[3].startswith("best epoch ") and str(out) in lines[3]
    for suffix in (".safetensors", ".report.json", ".report.md", ".report.png"):
        assert (tmp_path / f"tuned{suffix}").is_file(), suffix
    report = json.loads((tmp_path / "tuned.report.json").read_text())
    assert [r["epoch"] for r in report["history"]] == [0, 1, 2]
    assert report["data"]["val_images"] == 14 and report["data"]["train_images"] == 130

    # The new weights serve a new store: ingest with --pretrained, then query with torch and
    # with the ONNX export that ingest made of them (the same hits).
    index = tmp_path / "index"
    model = ["--model-config", micro_config, "--pretrained", out]
    invoke("ingest", images, "--index-dir", index, *model, "--workers", 0)
    assert invoke_json("stats", "--index-dir", index)["model"]["pretrained"] == str(out)
    query = ["query", "a red circle", "--index-dir", index, "-k", 3, "--no-server"]
    by_torch = invoke_json(*query, "--backend", "torch")
    by_onnx = invoke_json(*query, "--backend", "onnx")
    assert [h["path"] for h in by_onnx] == [h["path"] for h in by_torch] and len(by_torch) == 3
    assert [h["score"] for h in by_onnx] == pytest.approx([h["score"] for h in by_torch], abs=1e-4)

    # Without model options the store's model is fine-tuned, and the store stays as it was.
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in index.iterdir()}
    again = invoke("finetune", "--images", images, "--captions", captions, "--output",
                   tmp_path / "again.safetensors", "--index-dir", index, "--epochs", 1,
                   "--batch-size", 8, "--workers", 0, "--device", "cpu", "--json")  # fmt: skip
    assert json.loads(again.stdout)["model"] == f"searchmm-micro ({out})"
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in index.iterdir()} == before


def test_bad_images_are_skipped_and_reported(tmp_path: Path, micro_config: Path) -> None:
    folder = tmp_path / "renders"
    rows = write_renders(folder, per_class=2, seed=4)  # 48 good images
    (folder / "notes.png").write_text("not an image at all")
    (folder / "empty.png").write_bytes(b"")
    rows += [("notes.png", "a note"), ("empty.png", "nothing")]
    captions = write_jsonl(tmp_path / "captions.jsonl", rows)
    out = tmp_path / "tuned.safetensors"
    # 50 images: 10 held out, 40 to train on in 5 full batches, so every image is read.
    # Decoded in a worker process: its failures come back as data.
    args = tune_args(folder, captions, out, micro_config, "--epochs", 1, "--val-split", 0.2)
    args[args.index("--workers") + 1] = 1
    result = invoke(*args)
    assert (
        f"  skipped: {folder / 'notes.png'}: not an image (cannot identify image file)"
        in result.stdout
    )
    assert f"  skipped: {folder / 'empty.png'}: file is empty (0 bytes)" in result.stdout
    report = json.loads((tmp_path / "tuned.report.json").read_text())
    bad = {str(folder / "notes.png"), str(folder / "empty.png")}
    assert set(report["skipped"]) == bad
    train, _ = split_by_image(read_pairs(folder, captions), 0.2, seed=0)
    assert report["history"][1]["pairs"] == 40 - len(bad & set(train.image_paths))
    assert out.is_file()


def test_images_missing_from_disk_are_counted(
    tmp_path: Path, micro_config: Path, shapes: tuple[Path, Path]
) -> None:
    images, captions = shapes
    rows = [json.loads(line) for line in captions.read_text().splitlines()]
    rows += [{"image": f"gone-{i}.png", "text": "a lost shape"} for i in range(3)]
    listed = tmp_path / "captions.jsonl"
    listed.write_text("\n".join(json.dumps(r) for r in rows))
    result = invoke(
        *tune_args(images, listed, tmp_path / "t.safetensors", micro_config, "--epochs", 1)
    )
    assert (
        f"searchmm: 3 of the 147 images that {listed} names are not in {images}: training on "
        "the other 144"
    ) in result.stderr
    report = json.loads((tmp_path / "t.report.json").read_text())
    assert report["data"]["missing_images"] == 3 and report["data"]["images"] == 144

    nowhere = tmp_path / "nowhere.jsonl"
    nowhere.write_text("\n".join(json.dumps(r) for r in rows[-3:]))
    refused = invoke(
        *tune_args(images, nowhere, tmp_path / "n.safetensors", micro_config), check=False
    )
    assert refused.returncode == 1
    assert refused.stderr == (
        f"searchmm: error: none of the 3 images that {nowhere} names is in {images} "
        f"(first: {images / 'gone-0.png'})\n"
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "no image-caption pairs in it"),
        ("txt", "a .txt collection names no images"),
        ("val-split", "a val split of 0.99 holds out 143 of 144 images, leaving 1 to train on"),
        ("both-frozen", "both towers frozen leaves nothing to train"),
        ("suffix", "the output tuned.pt must end with .safetensors"),
        ("lock", "cannot lock 3 image layers: the image tower has 2"),
        ("resume", "no interrupted run to resume"),
        ("hub", "cannot fine-tune hf-hub:org/repo: open_clip loads hf-hub: and local-dir:"),
    ],
)
def test_bad_arguments_give_one_line(
    tmp_path: Path, micro_config: Path, shapes: tuple[Path, Path], case: str, message: str
) -> None:
    images, captions = shapes
    out, extra = tmp_path / "tuned.safetensors", []
    if case == "empty":
        captions = tmp_path / "empty.jsonl"
        captions.write_text("")
    elif case == "txt":
        captions = tmp_path / "captions.txt"
        captions.write_text("a red circle\n")
    elif case == "suffix":
        out = tmp_path / "tuned.pt"
    extra = {
        "val-split": ["--val-split", 0.99],
        "both-frozen": ["--freeze-image", "--freeze-text"],
        "lock": ["--lock-image-layers", 3],
        "resume": ["--resume"],
    }.get(case, [])
    args = tune_args(images, captions, out, micro_config, *extra)
    if case == "hub":
        args[args.index("--model-config") : args.index("--model-config") + 2] = [
            "--model", "hf-hub:org/repo"
        ]  # fmt: skip
    result = invoke(*args, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("searchmm: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_ctrl_c_keeps_the_last_completed_epoch_and_resume_continues(tmp_path: Path) -> None:
    """SIGINT once epoch 1 is reported (epoch 2 is then under way, about 2 s long): exit 130,
    the files hold the last completed epoch, and --resume trains the rest."""
    config = tmp_path / "searchmm-tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))  # 224-px input: a few seconds an epoch
    rows = write_renders(tmp_path / "renders", per_class=10, seed=6)
    captions = write_jsonl(tmp_path / "captions.jsonl", rows)
    out = tmp_path / "tuned.safetensors"
    args = tune_args(tmp_path / "renders", captions, out, config, "--epochs", 3, "--val-split", 0.1)
    with open(tmp_path / "stderr.txt", "w") as stderr:
        child = subprocess.Popen(
            [SEARCHMM, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        )
        assert child.stdout is not None
        printed = []
        for line in child.stdout:  # the event: the child reports epoch 1 after saving it
            printed.append(line)
            if line.startswith("epoch 1/3:"):
                child.send_signal(signal.SIGINT)
                break
        printed += child.stdout.readlines()
        assert child.wait(timeout=120) == 130, printed
    epochs_done = [
        int(line.split()[1].split("/")[0]) for line in printed if line.startswith("epoch ")
    ]
    kept = epochs_done[-1]  # 1, unless the signal only came after epoch 2 had ended
    assert kept in (1, 2), printed
    assert "interrupted: the last completed epoch is kept" in "".join(printed)
    assert "stopping: the last completed epoch is kept" in (tmp_path / "stderr.txt").read_text()
    report = json.loads((tmp_path / "tuned.report.json").read_text())
    assert report["interrupted"] and [r["epoch"] for r in report["history"]] == list(
        range(kept + 1)
    )
    with safe_open(str(out), "pt") as f:
        assert int(f.metadata()["epoch"]) == report["best_epoch"] <= kept
    assert (tmp_path / "tuned.resume.pt").is_file()

    resumed = invoke(*args, "--resume")
    assert [
        line.split(":")[0] for line in resumed.stdout.splitlines() if line.startswith("epoch")
    ] == [f"epoch {n}/3" for n in range(kept + 1, 4)]
    report = json.loads((tmp_path / "tuned.report.json").read_text())
    assert not report["interrupted"] and [r["epoch"] for r in report["history"]] == [0, 1, 2, 3]
    assert not (tmp_path / "tuned.resume.pt").exists()


@pytest.mark.skipif(not COCO_SAMPLE.is_dir(), reason="no COCO val2017 sample beside the checkout")
def test_held_out_figures_are_those_of_searchmm_bench(tmp_path: Path, tiny_config: Path) -> None:
    """Epoch 0 (the model before training) on the held-out COCO photos gives exactly the
    figures `searchmm bench coco` gives on the same photos and captions."""
    images, captions = COCO_SAMPLE / "images", COCO_SAMPLE / "captions_val2017_sample.json"
    pairs = read_pairs(images, captions)
    assert len(pairs) == 100 and pairs.caption_count >= 500
    stop, on_epoch = stop_after(0)
    spec = ModelSpec.from_options(model_config=tiny_config)
    options = FinetuneOptions(val_split=0.2, workers=0, device="cpu")
    run = finetune(pairs, spec, tmp_path / "t.safetensors", options, stop=stop, on_epoch=on_epoch)
    assert run.report.interrupted and run.report.best_epoch is None
    assert not (tmp_path / "t.safetensors").exists()

    _, val = split_by_image(pairs, 0.2, seed=0)
    pairs_of_val = zip(val.image_paths, val.captions, strict=True)
    rows = [(os.path.basename(path), text) for path, texts in pairs_of_val for text in texts]
    write_coco(tmp_path / "val.json", rows)
    bench = invoke_json(
        "bench", "coco", "--images", images, "--captions", tmp_path / "val.json",
        "--model-config", tiny_config, "--index-dir", tmp_path / "bench", "--workers", 0,
        "--device", "cpu",
    )  # fmt: skip
    epoch0 = run.report.history[0].metrics
    assert bench["counts"]["images"] == len(val) == 20
    for key, value in bench["metrics"].items():
        assert epoch0[key] == pytest.approx(value, abs=1e-9), key
