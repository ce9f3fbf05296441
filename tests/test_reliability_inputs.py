"""Bad inputs among good ones: every good item is stored, every bad one is reported with
a clear reason (JSON and human summary), and nothing stored before is changed.

Everything runs through the real `searchmm` command on real files; the corpus is generated here.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from helpers.cli import invoke, run_cli
from helpers.files import bomb_png, huge_jpeg, make_image
from helpers.store import index_ids, stored_vectors
from searchmm.sources.files import display_path
from searchmm.store.store import Store

ORIENTATION = 0x0112
# The stored pixels of an image with EXIF orientation o, turned upright by hand (numpy, not PIL).
UPRIGHT = {
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
KEPT = "(the version ingested earlier is kept)"


# --- file makers --------------------------------------------------------------------------


def save(img: Image.Image, path: Path, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kwargs)
    return path


def photo(name: str = "astronaut", box: tuple[int, int, int, int] = (0, 0, 300, 200)) -> np.ndarray:
    """A real photo, cropped not square so that every EXIF turn gives a different picture."""
    left, top, right, bottom = box
    return getattr(skdata, name)()[top:bottom, left:right]


def beyond_path_max(root: Path) -> Path:
    """Folders nested past PATH_MAX (4096 bytes) with an image at the bottom, made through
    directory descriptors; returns the first folder whose absolute path is too long to use."""
    top, name = root / "deep", "d" * 200
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(22):  # 22 * 201 bytes > 4096
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("buried.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, (Path(__file__).parent / "conftest.py").read_bytes())  # never reached
        os.close(out)
    finally:
        os.close(fd)
    depth = next(k for k in range(1, 23) if len(os.fsencode(top)) + 201 * k >= 4096)
    return top.joinpath(*[name] * depth)


# --- store snapshots ----------------------------------------------------------------------


def snapshot(index_dir: Path) -> dict[int, tuple]:
    """Every item row with its vector, straight from SQLite."""
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        rows = db.execute(
            "SELECT i.*, e.vector FROM items i LEFT JOIN embeddings e ON e.item_id = i.id"
        ).fetchall()
    return {row[0]: row for row in rows}


def stored_images(index_dir: Path) -> dict[str, int]:
    """path -> id of the images stored as good, through the store (which decodes the paths
    that are not UTF-8)."""
    store = Store(index_dir, create=False)
    try:
        return {i.path: i.id for i in store.items_of_kind("image") if i.status == "ok"}
    finally:
        store.close()


def vector_of(index_dir: Path, path: Path) -> np.ndarray:
    return stored_vectors(index_dir, "image")[stored_images(index_dir)[os.fsdecode(path)]]


def same_vector(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=2e-5))


# --- the corpus ---------------------------------------------------------------------------


def build_corpus(root: Path, library: Path) -> tuple[set[Path], dict[tuple[Path, str], str]]:
    """Generate good-but-odd files and bad ones under `root`.

    Returns the image files that must be stored, and {(path, locator): reason fragment} for
    every failure that must be reported (and no other).
    """
    odd, bad, texts = root / "odd", root / "bad", root / "texts"
    for folder in (odd, bad, texts):
        folder.mkdir(parents=True)
    good: set[Path] = set()
    fail: dict[tuple[Path, str], str] = {}

    # Good files that are unusual: each must be stored.
    good.add(save(Image.new("RGB", (1, 1), (200, 30, 40)), odd / "one-pixel.png"))
    good.add(huge_jpeg(odd / "huge-8000.jpg"))
    good.add(save(Image.fromarray(photo("chelsea")).convert("CMYK"), odd / "cmyk.jpg"))
    ramp = np.tile(np.linspace(0, 60000, 300).astype(np.uint16), (200, 1))
    good.add(save(Image.fromarray(ramp), odd / "deep-16bit.png"))
    pal = Image.fromarray(photo()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    good.add(save(pal, odd / "palette-transparent.png", transparency=0))
    good.add(save(Image.fromarray(photo()).convert("LA"), odd / "gray-alpha.png"))
    rgba = Image.fromarray(photo()).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    good.add(save(rgba, odd / "rgba.png"))
    frames = [Image.fromarray(photo(name)) for name in ("astronaut", "coffee", "rocket")]
    good.add(save(frames[0], odd / "animated.gif", save_all=True, append_images=frames[1:]))
    good.add(save(frames[1], odd / "pages.tiff", save_all=True, append_images=frames[2:]))
    with Image.open(odd / "animated.gif") as gif:
        good.add(save(gif.convert("RGB"), odd / "gif-frame-0.png"))  # what the GIF must give
    good.add(save(frames[1], odd / "tiff-page-0.png"))
    good.add(save(frames[2], odd / "tiff-page-1.png"))  # what it must not give
    raw = photo("astronaut", (100, 50, 400, 250))
    good.add(save(Image.fromarray(raw), odd / "exif" / "raw.png"))
    for o, upright in UPRIGHT.items():
        exif = Image.Exif()
        exif[ORIENTATION] = o
        good.add(save(Image.fromarray(raw), odd / "exif" / f"orientation-{o}.png", exif=exif))
        good.add(
            save(
                Image.fromarray(np.ascontiguousarray(upright(raw))),
                odd / "exif" / f"by-hand-{o}.png",
            )
        )
    clean = save(Image.fromarray(photo("coffee")), odd / "clean.jpg", quality=90)
    junk = b"Exif\x00\x00MM\x00\x2a\xff\xff\xff\xf0" + b"\xde\xad" * 40
    app1 = b"\xff\xe1" + struct.pack(">H", len(junk) + 2) + junk
    jpeg = clean.read_bytes()
    (odd / "corrupt-exif.jpg").write_bytes(jpeg[:2] + app1 + jpeg[2:])
    good.update({clean, odd / "corrupt-exif.jpg"})
    good.add(save(Image.fromarray(photo("rocket")), odd / "png-bytes.jpg", format="PNG"))
    good.add(make_image(odd / "album.jpg" / "inside.png", seed=31))  # a folder named like an image
    non_utf8 = Path(os.fsdecode(bytes(odd) + b"/caf\xe9-\xff.png"))
    good.add(make_image(non_utf8, seed=32))
    good.add(make_image(odd / ("long-" + "n" * 246 + ".png"), seed=33))  # a 255-byte name
    os.symlink("..", odd / "loop-to-parent")  # a folder loop: walked once, nothing twice

    # Bad files: each must be reported with its reason.
    jpeg_bytes = (library / "chelsea.jpg").read_bytes()
    png_bytes = (library / "astronaut.png").read_bytes()
    (bad / "truncated.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 3])
    fail[bad / "truncated.jpg", ""] = "truncated or corrupt image data"
    (bad / "truncated.png").write_bytes(png_bytes[: len(png_bytes) // 2])
    fail[bad / "truncated.png", ""] = "truncated or corrupt image data"
    idat = png_bytes.index(b"IDAT") + 4
    (bad / "corrupt-pixels.png").write_bytes(
        png_bytes[:idat] + b"\xff" * 64 + png_bytes[idat + 64 :]
    )
    fail[bad / "corrupt-pixels.png", ""] = "truncated or corrupt image data"
    (bad / "zero-bytes.jpg").write_bytes(b"")
    fail[bad / "zero-bytes.jpg", ""] = "file is empty (0 bytes)"
    (bad / "letter.jpg").write_text("Dear Sir, this is not a photograph.\n")
    fail[bad / "letter.jpg", ""] = "not an image (cannot identify image file)"
    (bad / "noise.png").write_bytes(np.random.default_rng(7).bytes(5000))
    fail[bad / "noise.png", ""] = "not an image (cannot identify image file)"
    bomb_png(bad / "bomb.png", 14_000)  # 196M pixels: over twice PIL's limit (an error in PIL)
    fail[bad / "bomb.png", ""] = "exceeds the limit of 89478485 (decompression bomb?)"
    bomb_png(bad / "bomb-warning.png", 10_000)  # 100M pixels: PIL only warns; we refuse
    fail[bad / "bomb-warning.png", ""] = "pixels exceeds the limit of 89478485"
    os.symlink(bad / "nowhere.jpg", bad / "broken-link.jpg")
    fail[bad / "broken-link.jpg", ""] = "broken symlink"
    os.symlink("self-loop.jpg", bad / "self-loop.jpg")
    fail[bad / "self-loop.jpg", ""] = "symlink loop"
    os.mkfifo(bad / "pipe.jpg")
    fail[bad / "pipe.jpg", ""] = "not a regular file"
    bad_name = Path(os.fsdecode(bytes(bad) + b"/r\xe9sum\xe9.jpg"))
    bad_name.write_text("not a picture either")
    fail[bad_name, ""] = "not an image (cannot identify image file)"
    fail[beyond_path_max(bad), ""] = "File name too long"

    # Text collections.
    (texts / "empty.txt").write_bytes(b"")
    fail[texts / "empty.txt", ""] = "no texts in this file"
    (texts / "blank-lines.txt").write_text("\n   \n\t\n")
    fail[texts / "blank-lines.txt", ""] = "no texts in this file"
    (texts / "latin-1.txt").write_bytes("un café crème\n".encode("latin-1"))
    fail[texts / "latin-1.txt", ""] = "not valid UTF-8 (byte offset 6, line 1)"
    (texts / "utf-16.txt").write_text("a cat\n", encoding="utf-16")
    fail[texts / "utf-16.txt", ""] = "not valid UTF-8"
    (texts / "one-megabyte-line.txt").write_text(MEGABYTE_LINE + "\n")
    lines = [
        json.dumps({"text": "a red bicycle", "who": "ann"}),
        "{this is not json",
        json.dumps(["a", "list"]),
        json.dumps({"caption": "no text field"}),
        json.dumps({"text": None}),
        json.dumps({"text": 5}),
        json.dumps({"text": "   "}),
        json.dumps({"text": "a lighthouse at dusk"}),
    ]
    (texts / "posts.jsonl").write_text("\n".join(lines) + "\n")
    fail[texts / "posts.jsonl", "line:2"] = "malformed JSON"
    fail[texts / "posts.jsonl", "line:3"] = "not a JSON object (got list)"
    fail[texts / "posts.jsonl", "line:4"] = "no 'text' field"
    fail[texts / "posts.jsonl", "line:5"] = "no 'text' field"
    fail[texts / "posts.jsonl", "line:6"] = "'text' is not a string"
    fail[texts / "posts.jsonl", "line:7"] = "empty 'text'"
    (texts / "no-text-column.csv").write_text("id,caption\n1,a boat\n")
    fail[texts / "no-text-column.csv", ""] = "no 'text' column; columns found: id, caption"
    (texts / "cells.csv").write_text("id,text\n1,a sailing boat\n2,\n")
    fail[texts / "cells.csv", "row:2"] = "empty 'text' cell"
    (texts / "not-coco.json").write_text(json.dumps({"images": []}))
    fail[texts / "not-coco.json", ""] = "expected COCO captions JSON"
    coco = {
        "images": [{"id": 1, "file_name": "1.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "a dog on a beach"},
            {"id": 11, "image_id": 1},
            {"id": 12, "caption": "no image id"},
            {"image_id": 1, "caption": "no id"},
            {"id": 13, "image_id": 1, "caption": ""},
        ],
    }
    (texts / "captions.json").write_text(json.dumps(coco))
    fail[texts / "captions.json", "ann:11"] = "no 'caption' field"
    fail[texts / "captions.json", "ann:12"] = "no 'image_id' field"
    fail[texts / "captions.json", "annotations[3]"] = "annotation without an 'id'"
    fail[texts / "captions.json", "ann:13"] = "'caption' is empty or not a string"
    return good, fail


MEGABYTE_LINE = ("the quick brown fox jumps over the lazy dog " * 23_900)[: 1 << 20].strip()
GOOD_TEXTS = {
    "a red bicycle",
    "a lighthouse at dusk",
    "a sailing boat",
    "a dog on a beach",
}


def test_a_corpus_of_bad_inputs_among_good_ones(
    tmp_path: Path, real_photos: Path, tiny_config: Path
) -> None:
    root, index_dir = tmp_path / "corpus", tmp_path / "idx"
    library = root / "library"
    shutil.copytree(real_photos, library)
    invoke("ingest", library, "--index-dir", index_dir, "--model-config", tiny_config)
    before = snapshot(index_dir)
    assert len(before) == len(list(library.iterdir()))
    shutil.copytree(index_dir, tmp_path / "idx-human")  # the same start for the human summary

    good, fail = build_corpus(root, library)
    gone_bad = library / "coffee.jpg"  # stored, then overwritten by a half-copied file
    gone_bad.write_bytes(gone_bad.read_bytes()[:2000])
    fail[gone_bad, ""] = KEPT

    started = time.monotonic()
    result = run_cli("ingest", root, "--texts", "--index-dir", index_dir, "--json")
    summary = json.loads(result.stdout)
    elapsed = time.monotonic() - started

    reported = {(Path(f["path"]), f["locator"]): f["reason"] for f in summary["failed"]}
    assert set(reported) == set(fail), "unexpected or missing failures"
    for key, fragment in fail.items():
        assert fragment in reported[key], (key, reported[key])
    assert len(summary["failed"]) == len(reported)  # each reported once

    # Nothing stored before changed (the half-copied file keeps its earlier vector too).
    after = snapshot(index_dir)
    assert {i: after[i] for i in before} == before

    # Every good image is stored with a vector, and nothing else is stored as good.
    library_files = {p for p in library.iterdir() if p.is_file()}
    expected = {os.fsdecode(p) for p in good | library_files}
    assert set(stored_images(index_dir)) == expected
    assert index_ids(index_dir, "image") == set(stored_images(index_dir).values())
    texts = {text for (text,) in _rows(index_dir, "SELECT text FROM items WHERE kind = 'text'")}
    assert texts == GOOD_TEXTS | {MEGABYTE_LINE} and len(MEGABYTE_LINE) > 1_000_000
    assert summary["new"] == len(good) + len(GOOD_TEXTS) + 1
    print(f"\n{len(fail)} failures among {len(good)} odd good images, ingested in {elapsed:.1f} s")

    # Odd images are decoded as they are displayed.
    odd = root / "odd"
    sizes = dict(_rows(index_dir, "SELECT path, width || 'x' || height FROM items"))
    assert sizes[str(odd / "huge-8000.jpg")] == "8000x8000"  # decoded small, sized true
    raw = vector_of(index_dir, odd / "exif" / "raw.png")
    for o in UPRIGHT:
        turned = vector_of(index_dir, odd / "exif" / f"orientation-{o}.png")
        by_hand = vector_of(index_dir, odd / "exif" / f"by-hand-{o}.png")
        assert same_vector(turned, by_hand) and not same_vector(turned, raw), o
        shown = sizes[str(odd / "exif" / f"orientation-{o}.png")]
        assert shown == ("200x300" if o >= 5 else "300x200"), o
    gif, tiff = vector_of(index_dir, odd / "animated.gif"), vector_of(index_dir, odd / "pages.tiff")
    assert same_vector(gif, vector_of(index_dir, odd / "gif-frame-0.png"))
    assert same_vector(tiff, vector_of(index_dir, odd / "tiff-page-0.png"))
    assert not same_vector(tiff, vector_of(index_dir, odd / "tiff-page-1.png"))
    clean = vector_of(index_dir, odd / "clean.jpg")
    assert same_vector(vector_of(index_dir, odd / "corrupt-exif.jpg"), clean)

    # The human summary, from the same start, lists the same failures, one line each.
    human = run_cli("ingest", root, "--texts", "--index-dir", tmp_path / "idx-human")
    first_line, *more = human.stdout.splitlines()
    failure_lines = [line for line in more if not line.startswith("  images/s by stage: ")]
    assert len(failure_lines) == len(more) - 1  # the stages' line, once
    unchanged = len(library_files) - 1  # all but the half-copied file
    assert summary["unchanged"] == unchanged
    assert first_line.startswith(f"{summary['new']} new, 0 changed, {unchanged} unchanged")
    assert f" 0 removed, {len(fail)} failed; " in first_line
    for f in summary["failed"]:
        where = f" [{f['locator']}]" if f["locator"] else ""
        assert f"  failed: {display_path(f['path'])}{where}: {f['reason']}" in failure_lines
    assert len(failure_lines) == len(fail)


def _rows(index_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(index_dir / "searchmm.db") as db:
        return db.execute(sql).fetchall()
