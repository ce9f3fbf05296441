"""Tests for searchmm.sources: scanning real directory trees and reading real text files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.files import COCO_SAMPLE
from searchmm.errors import SourceError
from searchmm.sources.files import digest_files, file_digest
from searchmm.sources.scan import (
    IMAGE_EXTENSIONS_BASE,
    TEXT_EXTENSIONS,
    FileEntry,
    image_extensions,
    scan,
)
from searchmm.sources.texts import read_text_collection, text_digest


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def names(entries: list[FileEntry], root: Path) -> list[str]:
    return [os.path.relpath(e.path, root) for e in entries]


# --- scan ---------------------------------------------------------------------------------


def test_image_extensions_include_base() -> None:
    assert image_extensions() >= IMAGE_EXTENSIONS_BASE
    assert image_extensions() is image_extensions()  # cached


def test_recursive_scan_case_insensitive_sorted(tmp_path: Path) -> None:
    touch(tmp_path / "b.JPG")
    touch(tmp_path / "a" / "x.png")
    touch(tmp_path / "a" / "deep" / "deeper" / "y.Jpeg")
    touch(tmp_path / "a" / "notes.md")
    touch(tmp_path / "a" / "img.webp", b"12345")
    result = scan([tmp_path])
    assert names(result.images, tmp_path) == [
        "a/deep/deeper/y.Jpeg",
        "a/img.webp",
        "a/x.png",
        "b.JPG",
    ]
    assert result.texts == [] and result.problems == []
    webp = next(e for e in result.images if e.path.endswith("img.webp"))
    st = os.stat(webp.path)
    assert (webp.size, webp.mtime_ns) == (5, st.st_mtime_ns)
    assert all(os.path.isabs(e.path) for e in result.images)


def test_hidden_skipped_unless_asked(tmp_path: Path) -> None:
    touch(tmp_path / ".hidden.jpg")
    touch(tmp_path / ".cache" / "thumb.jpg")
    touch(tmp_path / "seen.jpg")
    assert names(scan([tmp_path]).images, tmp_path) == ["seen.jpg"]
    assert names(scan([tmp_path], include_hidden=True).images, tmp_path) == [
        ".cache/thumb.jpg",
        ".hidden.jpg",
        "seen.jpg",
    ]
    # A hidden file named explicitly is taken.
    assert names(scan([tmp_path / ".hidden.jpg"]).images, tmp_path) == [".hidden.jpg"]


def test_symlink_loop_survives(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "one.jpg")
    touch(tmp_path / "a" / "b" / "two.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "back")  # a/b/back -> a
    os.symlink(tmp_path / "a" / "b", tmp_path / "alias")  # a second path to a/b
    result = scan([tmp_path])
    found = sorted(os.path.basename(e.path) for e in result.images)
    assert found == ["one.jpg", "two.jpg"]


def test_symlinked_file_and_self_loop(tmp_path: Path) -> None:
    real = touch(tmp_path / "real.png", b"abc")
    os.symlink(real, tmp_path / "link.png")
    os.symlink(tmp_path / "self.jpg", tmp_path / "self.jpg")
    result = scan([tmp_path])
    assert names(result.images, tmp_path) == ["link.png", "real.png"]
    link = next(e for e in result.images if e.path.endswith("link.png"))
    assert link.size == 3  # stat follows the link, path is not resolved
    assert result.problems == [(str(tmp_path / "self.jpg"), "symlink loop")]


def test_broken_symlink_is_a_problem(tmp_path: Path) -> None:
    touch(tmp_path / "ok.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    result = scan([tmp_path])
    assert names(result.images, tmp_path) == ["ok.jpg"]
    assert result.problems == [(str(tmp_path / "dangling.jpg"), "broken symlink")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_unreadable_directory_is_a_problem(tmp_path: Path) -> None:
    touch(tmp_path / "locked" / "x.jpg")
    touch(tmp_path / "ok.jpg")
    (tmp_path / "locked").chmod(0)
    try:
        result = scan([tmp_path])
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert names(result.images, tmp_path) == ["ok.jpg"]
    assert result.problems == [(str(tmp_path / "locked"), "permission denied")]


def test_fifo_with_image_name_is_a_problem(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.jpg")
    result = scan([tmp_path])
    assert result.images == []
    assert result.problems == [(str(tmp_path / "pipe.jpg"), "not a regular file")]


def test_directory_named_like_an_image_is_walked(tmp_path: Path) -> None:
    touch(tmp_path / "album.jpg" / "inside.png")
    assert names(scan([tmp_path]).images, tmp_path) == ["album.jpg/inside.png"]


def test_missing_root_raises_before_scanning(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    calls: list[int] = []
    with pytest.raises(SourceError, match="no such file or directory"):
        scan([tmp_path, tmp_path / "nope"], progress=calls.append)
    assert calls == []


def test_explicit_files(tmp_path: Path) -> None:
    img = touch(tmp_path / "p.PNG")
    txt = touch(tmp_path / "caps.txt")
    result = scan([img, str(txt)])
    assert names(result.images, tmp_path) == ["p.PNG"]
    assert names(result.texts, tmp_path) == ["caps.txt"]
    bad = touch(tmp_path / "doc.pdf")
    with pytest.raises(SourceError, match=r"unsupported file type '\.pdf'.*\.jpg.*\.jsonl"):
        scan([bad])


def test_texts_in_folders_flag(tmp_path: Path) -> None:
    touch(tmp_path / "a.jpg")
    touch(tmp_path / "a.json")
    touch(tmp_path / "sub" / "caps.jsonl")
    touch(tmp_path / "sub" / "t.CSV")
    assert scan([tmp_path]).texts == []
    result = scan([tmp_path], texts_in_folders=True)
    assert names(result.texts, tmp_path) == ["a.json", "sub/caps.jsonl", "sub/t.CSV"]
    assert names(result.images, tmp_path) == ["a.jpg"]


def test_non_utf8_filename(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.jpg")
    try:
        (tmp_path / name).write_bytes(b"x")
    except (OSError, UnicodeError):
        pytest.skip("filesystem refuses non-UTF-8 names")
    result = scan([tmp_path])
    assert [os.path.basename(e.path) for e in result.images] == [name]
    assert os.fsencode(result.images[0].path).endswith(b"caf\xe9.jpg")
    assert os.path.getsize(result.images[0].path) == 1


def test_overlapping_roots_dedupe(tmp_path: Path) -> None:
    touch(tmp_path / "a" / "x.jpg")
    touch(tmp_path / "y.jpg")
    result = scan([tmp_path, tmp_path / "a", tmp_path / "a" / "x.jpg", f"{tmp_path}/./y.jpg"])
    assert names(result.images, tmp_path) == ["a/x.jpg", "y.jpg"]


def test_progress_reports_count(tmp_path: Path) -> None:
    for i in range(300):
        touch(tmp_path / f"{i:03}.jpg")
    seen: list[int] = []
    scan([tmp_path], progress=seen.append)
    assert seen and seen[-1] == 300 and seen == sorted(seen)


# --- digests ------------------------------------------------------------------------------


def test_digests(tmp_path: Path) -> None:
    big = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    a = touch(tmp_path / "a.bin", big)
    b = touch(tmp_path / "b.bin", big)
    c = touch(tmp_path / "c.bin", big[:-1] + bytes([big[-1] ^ 1]))
    assert file_digest(str(a)) == file_digest(str(b)) != file_digest(str(c))
    assert len(file_digest(str(a))) == 32
    missing = str(tmp_path / "missing.bin")
    out = digest_files([str(a), str(c), missing], threads=2)
    assert out[str(a)] == file_digest(str(a)) and out[str(c)] == file_digest(str(c))
    assert isinstance(out[missing], FileNotFoundError)
    assert text_digest("a cat") == text_digest("a cat") != text_digest("a cat.")
    assert len(text_digest(os.fsdecode(b"\xff"))) == 32  # lone surrogates do not raise


# --- text collections ---------------------------------------------------------------------


def test_txt(tmp_path: Path) -> None:
    path = touch(tmp_path / "c.txt", "\ufeffa dog\r\n\n   \n  a cat on a mat \nlast".encode())
    coll = read_text_collection(str(path))
    assert [(r.locator, r.text, r.metadata) for r in coll.records] == [
        ("line:1", "a dog", {}),
        ("line:4", "a cat on a mat", {}),
        ("line:5", "last", {}),
    ]
    assert coll.problems == []


def test_txt_invalid_utf8_raises(tmp_path: Path) -> None:
    path = touch(tmp_path / "bad.txt", b"fine\ncaf\xe9\n")
    with pytest.raises(SourceError, match=r"bad\.txt: not valid UTF-8 \(byte offset 8, line 2\)"):
        read_text_collection(str(path))


def test_huge_line_and_empty_files(tmp_path: Path) -> None:
    line = "word " * 200_000  # ~1 MB
    for ext, body in [
        (".txt", line),
        (".jsonl", json.dumps({"text": line})),
        (".csv", f"text\n{line}\n"),
    ]:
        coll = read_text_collection(str(touch(tmp_path / f"big{ext}", body.encode())))
        assert len(coll.records) == 1 and len(coll.records[0].text) == len(line.strip())
    for ext in TEXT_EXTENSIONS:
        coll = read_text_collection(str(touch(tmp_path / f"empty{ext}", b"")))
        assert coll.records == [] and coll.problems == []


def test_jsonl_keeps_metadata_and_reports_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"text": "a red car", "id": 7, "tags": ["x"]}),
        "{not json",
        "",
        json.dumps([1, 2]),
        json.dumps({"caption": "wrong field"}),
        json.dumps({"text": 5}),
        json.dumps({"text": "a boat", "source": "web"}),
    ]
    path = touch(tmp_path / "c.jsonl", "\n".join(lines).encode())
    coll = read_text_collection(str(path))
    assert [(r.locator, r.text, r.metadata) for r in coll.records] == [
        ("line:1", "a red car", {"id": 7, "tags": ["x"]}),
        ("line:7", "a boat", {"source": "web"}),
    ]
    reasons = dict(coll.problems)
    assert reasons["line:2"].startswith("malformed JSON")
    assert "not a JSON object" in reasons["line:4"]
    assert reasons["line:5"] == "no 'text' field"
    assert "not a string" in reasons["line:6"]
    # Another field can be the text.
    other = read_text_collection(str(path), text_field="caption")
    assert [(r.locator, r.text) for r in other.records] == [("line:5", "wrong field")]


def test_csv(tmp_path: Path) -> None:
    body = '\ufeffid,text,author\n1,a dog,ann\n2,"a cat,\nlying",bob\n3,,carl\n4,  a bird ,dan\n'
    path = touch(tmp_path / "c.csv", body.encode())
    coll = read_text_collection(str(path))
    assert [(r.locator, r.text, r.metadata) for r in coll.records] == [
        ("row:1", "a dog", {"id": "1", "author": "ann"}),
        ("row:2", "a cat,\nlying", {"id": "2", "author": "bob"}),
        ("row:4", "a bird", {"id": "4", "author": "dan"}),
    ]
    assert coll.problems == [("row:3", "empty 'text' cell")]
    json.dumps([r.metadata for r in coll.records])


def test_csv_without_text_column_lists_columns(tmp_path: Path) -> None:
    path = touch(tmp_path / "c.csv", b"id,caption\n1,a dog\n")
    with pytest.raises(SourceError, match=r"no 'text' column; columns found: id, caption"):
        read_text_collection(str(path))


def coco_doc() -> dict:
    return {
        "info": {"description": "tiny"},
        "licenses": [],
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": 480, "width": 640},
            {"id": 2, "file_name": "000000000002.jpg", "height": 480, "width": 640},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A man riding a horse. "},
            {"id": 11, "image_id": 2, "caption": "Two dogs play."},
            {"id": 12, "image_id": 99, "caption": "An orphan caption."},
            {"id": 13, "image_id": 1},
            {"id": 14, "caption": "no image"},
        ],
    }


def test_coco(tmp_path: Path) -> None:
    path = touch(tmp_path / "captions.json", json.dumps(coco_doc()).encode())
    coll = read_text_collection(str(path))
    assert [(r.locator, r.text, r.metadata) for r in coll.records] == [
        (
            "ann:10",
            "A man riding a horse.",
            {"image_id": 1, "file_name": "000000000001.jpg", "annotation_id": 10},
        ),
        (
            "ann:11",
            "Two dogs play.",
            {"image_id": 2, "file_name": "000000000002.jpg", "annotation_id": 11},
        ),
        ("ann:12", "An orphan caption.", {"image_id": 99, "file_name": None, "annotation_id": 12}),
    ]
    assert coll.problems == [("ann:13", "no 'caption' field"), ("ann:14", "no 'image_id' field")]


@pytest.mark.parametrize(
    "body",
    [
        b"{nope",
        b"[1, 2]",
        json.dumps({"images": []}).encode(),
        json.dumps({"annotations": []}).encode(),
    ],
)
def test_coco_wrong_shape_raises(tmp_path: Path, body: bytes) -> None:
    path = touch(tmp_path / "x.json", body)
    with pytest.raises(SourceError, match="expected COCO captions JSON"):
        read_text_collection(str(path))


def test_unreadable_collection_raises(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read: file vanished"):
        read_text_collection(str(tmp_path / "gone.txt"))
    with pytest.raises(SourceError, match="not a text collection"):
        read_text_collection(str(touch(tmp_path / "x.md")))


def test_real_coco_sample() -> None:
    captions = COCO_SAMPLE / "captions_val2017_sample.json"
    if not captions.exists():
        pytest.skip("COCO sample not present")
    coll = read_text_collection(str(captions))
    assert len(coll.records) == 500 and coll.problems == []
    on_disk = set(os.listdir(COCO_SAMPLE / "images"))
    file_names = {r.metadata["file_name"] for r in coll.records}
    assert len(file_names) == 100 and file_names <= on_disk
    assert all(r.locator == f"ann:{r.metadata['annotation_id']}" for r in coll.records)
    assert len({r.locator for r in coll.records}) == 500
