"""Combined weighted queries, filters (exact and ANN paths), paging, threshold, near-duplicates."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from helpers.cli import invoke, invoke_json
from helpers.files import make_image
from helpers.model import bare_open_clip_text_vector
from helpers.store import stored_items, stored_vectors
from searchmm import Engine, ModelSpec, SearchmmError, defaults
from searchmm.search.filters import Filters
from searchmm.search.terms import Term, parse_term


@given(st.text(min_size=1).filter(str.strip))
def test_a_term_value_is_taken_verbatim(value: str) -> None:
    assert parse_term(f"text:{value}") == Term("text", value, 1.0)
    assert parse_term(f"2.5=image:{value}", sign=-1) == Term("image", value, -2.5)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("image:./my photos/dog 1.jpg", Term("image", "./my photos/dog 1.jpg")),
        ("image:C:/pics/a=b.png", Term("image", "C:/pics/a=b.png")),
        ("text:2=x", Term("text", "2=x")),
        (".5=item:42", Term("item", "42", 0.5)),
    ],
)
def test_term_syntax(spec: str, expected: Term) -> None:
    assert parse_term(spec) == expected


@pytest.mark.parametrize("bad", ["golden retriever", "photo:x", "0=text:x", "item:abc", "text:  "])
def test_bad_terms_are_refused_clearly(bad: str) -> None:
    with pytest.raises(SearchmmError, match=r"query term"):
        parse_term(bad)


def _brute_force(index_dir: Path, query: np.ndarray, allowed: set[int] | None = None) -> list[int]:
    stored = stored_vectors(index_dir, "image")
    ids = [i for i in stored if allowed is None or i in allowed]
    scores = np.array([stored[i] @ query for i in ids])
    return [ids[j] for j in np.argsort(-scores, kind="stable")]


def test_weighted_combination_equals_the_normalised_sum(
    tmp_path: Path, photo_dir: Path, tiny_config: Path
) -> None:
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    items, stored = stored_items(index_dir, "image"), stored_vectors(index_dir, "image")
    cat, rocket = items[str(photo_dir / "chelsea.jpg")], items[str(photo_dir / "rocket.png")]
    spaced = photo_dir / "my photos" / "coffee cup.jpg"
    spaced.parent.mkdir()
    shutil.copy(photo_dir / "coffee.jpg", spaced)  # the query image, by a path with spaces
    coffee = stored[items[str(photo_dir / "coffee.jpg")]]

    hits = invoke_json("query", "a cat", "--add", f"2=item:{cat}", "--add", f"image:{spaced}",
                    "--sub", f"0.5=item:{rocket}", "--index-dir", index_dir, "-k", "5")  # fmt: skip
    text = bare_open_clip_text_vector(tiny_config, "a cat")
    total = text + 2 * stored[cat] + coffee - 0.5 * stored[rocket]
    expected = _brute_force(index_dir, total / np.linalg.norm(total))
    assert [h["id"] for h in hits] == expected[:5]


@pytest.fixture
def engine(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> Engine:
    for i in range(8):
        make_image(photo_dir / "wide" / f"w{i}.png", seed=50 + i, size=(300, 80))
    old = photo_dir / "generated" / "gen-0.png"
    os.utime(old, (1_000_000_000, 1_000_000_000))  # 2001-09-09
    with Engine(tmp_path / "idx", model=ModelSpec.from_options(model_config=tiny_config)) as e:
        e.ingest([photo_dir])
        yield e


@pytest.mark.parametrize("path", ["exact", "ann-selector", "ann-exact"])
def test_filters_return_k_matching_items_on_every_index_path(
    engine: Engine, photo_dir: Path, path: str
) -> None:
    if path != "exact":
        engine.reindex("HNSW32")  # approximate: filtering must still be exact and complete
    # A limit of 1 allowed item for exact ranking sends every filtered query to the id selector.
    limit = 1 if path == "ann-selector" else defaults.EXACT_FILTER_LIMIT
    items = stored_items(engine.index_dir, "image")
    wide = {i for p, i in items.items() if "/wide/" in p}
    query = stored_vectors(engine.index_dir, "image")[items[str(photo_dir / "chelsea.jpg")]]

    with Engine(engine.index_dir, exact_filter_limit=limit) as searcher:
        hits = searcher.search_vector(query, k=5, filters=Filters(path_glob="*/wide/*"))
        assert [h.item.id for h in hits] == _brute_force(engine.index_dir, query, wide)[:5]
        with sqlite3.connect(engine.index_dir / "searchmm.db") as db:
            rows = db.execute("SELECT id FROM items WHERE width >= 400 AND height >= 300")
            big = {i for (i,) in rows}
        hits = searcher.search_vector(query, k=30, filters=Filters(min_width=400, min_height=300))
        assert {h.item.id for h in hits} == big and 0 < len(big) < 30  # every match, none else
        assert searcher.search_vector(query, k=3, filters=Filters(min_width=10_000)) == []


def test_date_and_metadata_filters_through_the_cli(
    engine: Engine, photo_dir: Path, tmp_path: Path
) -> None:
    old = str(photo_dir / "generated" / "gen-0.png")
    before = invoke_json("query", "x", "--before", "2005-01-01", "--index-dir", engine.index_dir)
    assert [h["path"] for h in before] == [old]
    after = invoke_json(
        "query", "x", "--after", "2005-01-01", "-k", "100", "--index-dir", engine.index_dir
    )
    assert (
        old not in {h["path"] for h in after}
        and len(after) == len(stored_items(engine.index_dir, "image")) - 1
    )

    texts = tmp_path / "posts.jsonl"
    texts.write_text(
        "\n".join(
            json.dumps({"text": f"post {i}", "lang": "fr" if i % 3 else "en"}) for i in range(9)
        )
    )
    engine.ingest([texts])
    french = invoke_json("query", "post", "--target", "texts", "--where", "lang=fr", "-k", "20",
                      "--index-dir", engine.index_dir)  # fmt: skip
    assert len(french) == 6 and all(h["metadata"]["lang"] == "fr" for h in french)
    bad = invoke("query", "x", "--where", "nokey", "--index-dir", engine.index_dir, check=False)
    assert bad.returncode == 1 and "KEY=VALUE" in bad.stderr


def test_offset_pages_and_threshold(engine: Engine) -> None:
    everything = engine.search_text("a photo", k=12)
    pages = [engine.search_text("a photo", k=4, offset=o) for o in (0, 4, 8)]
    assert [h.item.id for page in pages for h in page] == [h.item.id for h in everything]
    assert [h.rank for h in pages[1]] == [5, 6, 7, 8]
    cut = everything[5].score
    assert [h.item.id for h in engine.search_text("a photo", k=12, threshold=cut)] == [
        h.item.id for h in everything[:6]
    ]


def test_near_duplicate_groups(tmp_path: Path, photo_dir: Path, tiny_config: Path) -> None:
    shutil.copy(photo_dir / "chelsea.jpg", photo_dir / "chelsea-copy.jpg")
    Image.open(photo_dir / "chelsea.jpg").save(photo_dir / "chelsea-q60.jpg", quality=60)
    index_dir = tmp_path / "idx"
    invoke("ingest", photo_dir, "--index-dir", index_dir, "--model-config", tiny_config)
    groups = invoke_json("dupes", "--threshold", "0.995", "--index-dir", index_dir)
    cats = {str(photo_dir / n) for n in ("chelsea.jpg", "chelsea-copy.jpg", "chelsea-q60.jpg")}
    assert any({h["path"] for h in g} == cats for g in groups)
    assert all(h["score"] >= 0.995 for g in groups for h in g)
    text = invoke("dupes", "--threshold", "0.995", "--index-dir", index_dir).stdout
    assert text.startswith("group 1:")
