"""esm serve: the HTTP API and the search page."""
from __future__ import annotations

import click

from .common import settings
from .root import main


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """HTTP API (OpenAPI at /docs) and the search web page at /."""
    import uvicorn

    from ..web.app import create_app

    uvicorn.run(create_app(settings()), host=host, port=port, log_level="info")
