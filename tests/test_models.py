"""Model loading: clear one-line errors, fast; local checkpoints; one model per store."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.cli import invoke, invoke_json, run_cli
from helpers.store import stored_vectors
from searchmm import ModelLoadError, ModelSpec
from searchmm.model.loading import load_encoder


def _one_line_error(result, fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("searchmm: error: "), result.stderr
    assert fragment in lines[0]


@pytest.mark.parametrize(
    ("options", "env", "fragment"),
    [
        (["--pretrained", "no-such-tag"], {}, "unknown pretrained tag 'no-such-tag'"),
        (["--model", "NoSuchNet-7"], {}, "not an open_clip architecture"),
        (
            ["--pretrained", "laion2b_s34b_b79k"],
            {"HF_HUB_OFFLINE": "1"},
            "offline (HF_HUB_OFFLINE is set)",
        ),
        # No network: a closed loopback port stands in for an unreachable hub.
        (
            ["--pretrained", "openai"],
            {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
            "cannot be reached",
        ),
        (["--pretrained", "/nonexistent/weights.safetensors"], {}, "does not exist"),
    ],
)
def test_weights_that_cannot_be_had(
    tmp_path: Path, photo_dir: Path, options: list[str], env: dict, fragment: str
) -> None:
    started = time.monotonic()
    result = run_cli(
        "ingest", photo_dir, "--index-dir", tmp_path / "idx", *options, env=env, check=False
    )
    assert time.monotonic() - started < 30  # open_clip alone retries for ~46 s
    _one_line_error(result, fragment)
    assert not (tmp_path / "idx" / "searchmm.db").exists()  # nothing half-made is left behind


def test_a_different_model_is_refused(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    before = stored_vectors(index_dir, "image")
    result = invoke(
        "ingest",
        photo_dir,
        "--index-dir",
        index_dir,
        "--model",
        "ViT-B-32",
        "--pretrained",
        "none",
        check=False,
    )
    _one_line_error(result, "refusing to mix in ViT-B-32 (none)")
    after = stored_vectors(index_dir, "image")
    assert before.keys() == after.keys() and all(
        np.array_equal(before[i], after[i]) for i in before
    )
    # Without model options, later commands use the recorded model.
    assert invoke_json("ingest", photo_dir, "--index-dir", index_dir)["unchanged"] == len(before)


def _save_seeded_weights(config: Path, path: Path) -> None:
    encoder = load_encoder(ModelSpec.from_options(model_config=config), "cpu")
    state = {k: v.contiguous() for k, v in encoder.model.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_checkpoint_gives_the_same_vectors(
    tmp_path: Path, photo_dir: Path, tiny_config: Path, suffix: str
) -> None:
    checkpoint = tmp_path / f"weights{suffix}"
    _save_seeded_weights(tiny_config, checkpoint)
    invoke("ingest", photo_dir, "--index-dir", tmp_path / "random", "--model-config", tiny_config)
    invoke("ingest", photo_dir, "--index-dir", tmp_path / "ckpt", "--model-config", tiny_config,
            "--pretrained", checkpoint)  # fmt: skip
    random_init, loaded = (
        stored_vectors(tmp_path / "random", "image"),
        stored_vectors(tmp_path / "ckpt", "image"),
    )
    assert len(loaded) == len(random_init) > 0
    np.testing.assert_allclose(
        np.stack(list(loaded.values())), np.stack(list(random_init.values())), atol=1e-6
    )

    with sqlite3.connect(tmp_path / "ckpt" / "searchmm.db") as db:
        pretrained, digest = db.execute(
            "SELECT pretrained, checkpoint_digest FROM model"
        ).fetchone()
    assert pretrained == str(checkpoint) and len(digest) == 32
    hits = invoke_json(
        "query", "a cat", "--index-dir", tmp_path / "ckpt", "-k", "1"
    )  # no model flags
    assert len(hits) == 1


class NotWeights:
    """A pickled object that needs our code to load: weights_only must refuse it."""


def test_a_pickle_that_needs_code_is_refused(tmp_path: Path, tiny_config: Path) -> None:
    checkpoint = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": NotWeights()}}, checkpoint)
    spec = ModelSpec.from_options(model_config=tiny_config, pretrained=str(checkpoint))
    with pytest.raises(ModelLoadError, match="needs arbitrary code"):
        load_encoder(spec, "cpu")


def test_random_init_is_identical_across_loads_and_seeded(tiny_config: Path) -> None:
    spec = ModelSpec.from_options(model_config=tiny_config)
    a = load_encoder(spec, "cpu").encode_texts(["a cat", "x" * 100_000])
    b = load_encoder(spec, "cpu").encode_texts(["a cat", "x" * 100_000])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert a.dtype == np.float32
    other = ModelSpec(spec.name, spec.pretrained, spec.config_json, seed=1)
    assert not np.allclose(load_encoder(other, "cpu").encode_texts(["a cat"]), a[:1])
    assert json.loads(spec.config_json)["embed_dim"] == 64
