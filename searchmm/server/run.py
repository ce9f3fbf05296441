"""Running the app under uvicorn, as `searchmm serve` does."""

from __future__ import annotations

import ipaddress
import logging
import os

from searchmm import defaults

from . import require_server_extra

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach an address (a name, or an IP of the loopback range)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts_for(host: str) -> list[str] | None:
    """Host headers to accept: loopback names for a loopback bind (refusing DNS rebinding),
    anything for a server meant to be reached from other machines."""
    if host in LOOPBACK_NAMES:
        return list(LOOPBACK_NAMES)
    try:
        if ipaddress.ip_address(host).is_loopback:
            return [*LOOPBACK_NAMES, host]
    except ValueError:
        pass
    return None


def local_url(host: str, port: int) -> str | None:
    """Where a client on this machine reaches a server bound to `host`, if on loopback."""
    if host in ("0.0.0.0", "127.0.0.1", "localhost"):
        return f"http://127.0.0.1:{port}"
    if host in ("::", "::1", "[::1]"):
        return f"http://[::1]:{port}"
    try:
        return f"http://{host}:{port}" if ipaddress.ip_address(host).is_loopback else None
    except ValueError:
        return None


def serve(
    index_dir: str | os.PathLike[str] | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str | None = None,
    backend: str | None = None,
    max_upload_bytes: int = defaults.MAX_UPLOAD_BYTES,
    log_level: str = "info",
    token: str | None = None,
) -> None:
    """Load the model, then serve until interrupted (Ctrl-C or SIGTERM stop it cleanly)."""
    require_server_extra()
    import uvicorn

    from .app import create_app

    logging.getLogger("searchmm.server").setLevel(log_level.upper())
    app = create_app(
        index_dir,
        device=device,
        backend=backend,
        max_upload_bytes=max_upload_bytes,
        allowed_hosts=allowed_hosts_for(host),
        warm=False,
        announce_url=local_url(host, port),
        token=token,
    )
    # Loaded here rather than in the app's start-up, so that weights that cannot be had end the
    # command with searchmm's one-line error (exit 1) instead of a traceback from uvicorn.
    app.state.searchmm.warm_up()
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
