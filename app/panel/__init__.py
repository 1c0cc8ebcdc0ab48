"""The Reseller and Customer Control Panels (SPEC section 9) and the GraphiQL page, served offline.

The panels are one static page (HTML, CSS and plain ES modules in `static/`) that talks only to
the public API: HTTP POST /graphql and one graphql-transport-ws socket. The third-party code it and
GraphiQL load (graphql-ws, GraphiQL with React) is bundled from npm by `frontend/` into
`static/vendor/` and committed, so a fresh clone serves every asset itself, with no internet access.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
STATIC_PATH = "/panel/static"

PANEL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""Everything from OrderPulse itself; 'self' covers the page's own ws:// origin for the socket."""

GRAPHIQL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
"""As the panel's, but GraphiQL's editor sets inline styles."""


@cache
def _page(name: str) -> str:
    return (PACKAGE_DIR / name).read_text(encoding="utf-8")


def _html(name: str, csp: str) -> HTMLResponse:
    return HTMLResponse(
        _page(name),
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-cache",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


def graphiql_page() -> HTMLResponse:
    """GraphiQL's page (GET /graphql in a browser), loading its bundle from /panel/static."""
    return _html("graphiql.html", GRAPHIQL_CSP)


async def panel_page(request: Request) -> Response:
    return _html("panel.html", PANEL_CSP)


async def panel_slash(request: Request) -> Response:
    return RedirectResponse("/panel", status_code=308)


def panel_routes() -> list[BaseRoute]:
    """/panel, and the files it and GraphiQL load."""
    return [
        Route("/panel", panel_page, methods=["GET"]),
        Route("/panel/", panel_slash, methods=["GET"]),
        Mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="panel-static"),
    ]
