"""`searchmm query`: weighted text, image and item terms, filters, paging."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .options import DEFAULT_DEVICE, BackendName, Device, IndexDir, JsonFlag, open_engine
from .output import emit_json, print_hits


@user_errors
def query(
    text: Annotated[str | None, typer.Argument(help="Text to search for")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="Search with this image")] = None,
    like: Annotated[int | None, typer.Option("--like", help="More like this item id")] = None,
    add: Annotated[
        list[str] | None,
        typer.Option(
            "--add",
            metavar="TERM",
            help="Add a term: [WEIGHT=]text:WORDS | image:PATH | item:ID",
        ),
    ] = None,
    sub: Annotated[
        list[str] | None,
        typer.Option("--sub", metavar="TERM", help="Subtract a term (same syntax as --add)"),
    ] = None,
    target: Annotated[str, typer.Option(help="images or texts")] = "images",
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results")] = defaults.K,
    offset: Annotated[int, typer.Option(help="Skip this many results (paging)")] = 0,
    threshold: Annotated[float | None, typer.Option(help="Drop results scoring below")] = None,
    path: Annotated[
        str | None, typer.Option("--path", help="Only paths matching this glob")
    ] = None,
    after: Annotated[str | None, typer.Option(help="Only files modified after (ISO date)")] = None,
    before: Annotated[
        str | None, typer.Option(help="Only files modified before (ISO date)")
    ] = None,
    min_width: Annotated[int | None, typer.Option(help="Only images at least this wide")] = None,
    min_height: Annotated[int | None, typer.Option(help="Only images at least this tall")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", metavar="KEY=VALUE", help="Only items whose metadata KEY=VALUE"),
    ] = None,
    index_dir: IndexDir = None,
    device: Device = DEFAULT_DEVICE,
    backend: BackendName = None,
    no_server: Annotated[
        bool,
        typer.Option(
            "--no-server", help="Search here even when a `searchmm serve` serves the index"
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Search images (or texts) by texts, images and stored items, weighted and filtered.

    TEXT, --image and --like each count with weight 1; --add and --sub take
    [WEIGHT=]text:WORDS, [WEIGHT=]image:PATH or [WEIGHT=]item:ID, e.g.
    searchmm query "golden retriever" --add "image:./my dog.jpg" --sub "2=text:fruit"

    When a `searchmm serve` serves the same index directory, a query without image terms (and
    without --backend) is answered by it: its model is loaded already. --no-server answers here.
    """
    from searchmm.search.filters import Filters, parse_where
    from searchmm.search.terms import Scheme, Term, parse_terms

    terms = [Term(Scheme.TEXT, text)] if text is not None else []
    terms += [Term(Scheme.IMAGE, str(image))] if image is not None else []
    terms += [Term(Scheme.ITEM, str(like))] if like is not None else []
    terms += parse_terms(add or (), sub or ())
    if not terms:
        raise typer.BadParameter("give a query TEXT, --image PATH, --like ID or --add TERM")
    pairs = tuple(parse_where(w) for w in where or ())
    filters = Filters.parse(path, after, before, min_width, min_height, pairs)
    found = None
    if not no_server and backend is None and all(t.scheme is not Scheme.IMAGE for t in terms):
        from searchmm.settings import resolve_index_dir

        from .client import query_server

        request = {
            "terms": [{"scheme": t.scheme, "value": t.value, "weight": t.weight} for t in terms],
            "target": target,
            "k": k,
            "offset": offset,
            "threshold": threshold,
            "filters": {
                "path_glob": path,
                "modified_after": after,
                "modified_before": before,
                "min_width": min_width,
                "min_height": min_height,
                "where": list(filters.where),
            },
        }
        found = query_server(resolve_index_dir(index_dir), request)
    if found is None:
        with open_engine(index_dir, device, backend=backend, quick_start=True) as engine:
            hits = engine.search(
                terms, target=target, k=k, offset=offset, threshold=threshold, filters=filters
            )
        found = [hit.to_dict() for hit in hits]
    if as_json:
        emit_json(found)
    else:
        print_hits(found, target)
