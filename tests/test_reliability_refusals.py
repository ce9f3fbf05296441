"""What is refused before it is read: decompression bombs are never decoded, huge
images decode small, unreadable files are reported, and checkpoints that would run code are
refused without running it. Real files, real processes: memory is measured in a fresh one.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cli import run_cli
from helpers.files import bomb_png, huge_jpeg, make_image
from helpers.store import stored_items

# Decode files one after another in a fresh interpreter, reporting how much each raised the
# peak memory (ru_maxrss only ever grows: a full decode of any of them would show as >150 MB).
PEAK_SCRIPT = """
import json, resource, sys, time
from searchmm.sources.images import ImageDecodeError, load_image
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
out = []
for path in sys.argv[1:]:
    base, started = peak(), time.perf_counter()
    try:
        image, size = load_image(path, draft_size=224)
        outcome = [list(size), list(image.size)]
    except ImageDecodeError as exc:
        outcome = str(exc)
    out.append({"grew": peak() - base, "s": time.perf_counter() - started, "out": outcome})
print(json.dumps(out))
"""


def test_bombs_are_never_decoded_and_huge_images_decode_small(tmp_path: Path) -> None:
    files = [
        bomb_png(tmp_path / "bomb.png", 14_000),  # 196 MB as decoded 1-bit pixels (a byte each)
        bomb_png(tmp_path / "warning.png", 10_000),  # between PIL's limit and twice it
        huge_jpeg(tmp_path / "huge.jpg"),  # 192 MB as decoded RGB, within the limit
    ]
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    bomb, warning, huge = json.loads(result.stdout)
    for refused in (bomb, warning):
        assert "decompression bomb" in refused["out"], refused
        assert refused["grew"] < 32 << 20 and refused["s"] < 1.0, refused
    assert huge["out"] == [[8000, 8000], [250, 250]]  # draft (1/8) then reduce, never 8000x8000
    assert huge["grew"] < 48 << 20, huge


def _without_read_override() -> None:
    """In the child: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a
    root process really is refused a file with mode 000 (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _permissions_apply(probe: Path) -> bool:
    probe.write_text("secret")
    probe.chmod(0)
    kwargs = {"preexec_fn": _without_read_override} if os.geteuid() == 0 else {}
    try:
        result = subprocess.run(["cat", str(probe)], capture_output=True, check=False, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode != 0


def test_unreadable_files_and_folders(tmp_path: Path, tiny_config: Path) -> None:
    if not _permissions_apply(tmp_path / "probe"):
        pytest.skip("this process can read mode-000 files and cannot drop that right")
    folder = tmp_path / "photos"
    make_image(folder / "fine.png", seed=1)
    make_image(folder / "secret.png", seed=2).chmod(0)
    make_image(folder / "locked" / "inside.png", seed=3)
    (folder / "notes.txt").write_text("a line\n")
    (folder / "notes.txt").chmod(0)
    (folder / "locked").chmod(0)
    command = [
        str(Path(sys.executable).with_name("searchmm")),
        *("ingest", str(folder), "--texts", "--index-dir", str(tmp_path / "idx")),
        *("--model-config", str(tiny_config), "--json"),
    ]
    kwargs = {"preexec_fn": _without_read_override} if os.geteuid() == 0 else {}
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=600, **kwargs
        )
    finally:
        (folder / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert reasons == {
        "secret.png": "permission denied",
        "locked": "permission denied",
        "notes.txt": "permission denied",
    }
    assert set(stored_items(tmp_path / "idx", "image")) == {str(folder / "fine.png")}


def test_a_checkpoint_that_runs_code_is_refused_unrun(tmp_path: Path, tiny_config: Path) -> None:
    marker = tmp_path / "the-payload-ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.mkdir, (str(marker),))

    checkpoint_dir = tmp_path / "model"
    checkpoint_dir.mkdir()
    import torch

    torch.save({"state_dict": {"w": Payload()}}, checkpoint_dir / "open_clip_pytorch_model.bin")
    config = {"model_cfg": json.loads(tiny_config.read_text()), "preprocess_cfg": {}}
    (checkpoint_dir / "open_clip_config.json").write_text(json.dumps(config))
    photos = tmp_path / "photos"
    make_image(photos / "a.png", seed=1)

    for options in (
        [
            "--model-config",
            tiny_config,
            "--pretrained",
            checkpoint_dir / "open_clip_pytorch_model.bin",
        ],
        ["--model", f"local-dir:{checkpoint_dir}"],
    ):
        result = run_cli("ingest", photos, "--index-dir", tmp_path / "idx", *options, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert "needs arbitrary code to unpickle and was refused" in lines[0]
        assert not marker.exists() and not (tmp_path / "idx" / "searchmm.db").exists()

    # The payload is real: plain unpickling runs it (here it only makes a folder).
    torch.load(checkpoint_dir / "open_clip_pytorch_model.bin", weights_only=False)
    assert marker.is_dir()
