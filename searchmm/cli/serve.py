"""`searchmm serve`: the HTTP JSON API and the web page, under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from searchmm import defaults

from .errors import user_errors
from .options import DEFAULT_DEVICE, BackendName, Device, IndexDir


@user_errors
def serve(
    index_dir: IndexDir = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 opens it to the network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    device: Device = DEFAULT_DEVICE,
    backend: BackendName = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Largest query image accepted, in MB")
    ] = defaults.MAX_UPLOAD_BYTES / 1_000_000,
    log_level: Annotated[
        str, typer.Option("--log-level", help="debug, info (one line per request) or warning")
    ] = "info",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="SEARCHMM_TOKEN",
            help="Needed by every API request; made up and printed when the address is "
            "not loopback",
            show_default="none on loopback",
        ),
    ] = None,
) -> None:
    """Serve the HTTP JSON API and the web page (needs the `server` extra)."""
    from searchmm.server import require_server_extra
    from searchmm.server.run import serve as run_server

    require_server_extra()  # one line, before anything is loaded
    shown = f"[{host}]" if ":" in host else host
    token = token_for(host, token)
    typer.echo(f"searchmm: loading the model, then serving http://{shown}:{port}/", err=True)
    if token is not None:
        typer.echo(f"searchmm: API requests need the token {token}", err=True)
    run_server(
        index_dir,
        host=host,
        port=port,
        device=device,
        backend=backend,
        max_upload_bytes=int(max_upload_mb * 1_000_000),
        log_level=log_level,
        token=token,
    )


def token_for(host: str, token: str | None) -> str | None:
    """The given token; else a new one when the address lets other machines in, else none."""
    from searchmm.server.run import is_loopback

    if token or is_loopback(host):
        return token or None
    from searchmm.server.auth import new_token

    return new_token()
