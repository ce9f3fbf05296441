"""`searchmm serve`: an HTTP JSON API and a web page over one index directory.

Needs the `server` extra (FastAPI, uvicorn, python-multipart). Nothing here imports them until a
function is called, so `import searchmm.server` stays cheap and works without the extra.

    from searchmm.server import create_app
    app = create_app("./indexes")        # an ASGI app; the model loads when the app starts
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app as create_app

__all__ = ["create_app", "require_server_extra"]


# import name -> what pip installs (python-multipart is imported as python_multipart, or
# as multipart in releases before 0.0.13)
SERVER_MODULES = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "python_multipart": "python-multipart",
}


def require_server_extra() -> None:
    """Fail with one actionable line when the `server` extra is not installed."""
    import importlib.util

    from searchmm.errors import SearchmmError

    def absent(name: str) -> bool:
        if name == "python_multipart" and importlib.util.find_spec("multipart") is not None:
            return False
        return importlib.util.find_spec(name) is None

    missing = [package for name, package in SERVER_MODULES.items() if absent(name)]
    if missing:
        raise SearchmmError(
            f"the server needs {', '.join(missing)}: pip install 'searchmm[server]'"
        )


def __getattr__(name: str) -> Any:
    if name == "create_app":
        require_server_extra()
        from .app import create_app

        return create_app
    raise AttributeError(name)
