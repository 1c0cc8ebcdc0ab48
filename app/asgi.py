"""The Starlette application: /graphql (POST, GraphiQL, websockets), health, background work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from app.access.tokens import viewer_for_token
from app.access.viewer import Viewer
from app.db import Clock, SystemClock, database_from_settings
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.schema import build_schema
from app.graphql.websocket import GraphQLWebSocket, WebSocketShortcut
from app.services import Services
from app.settings import Settings, get_settings

log = logging.getLogger("orderpulse")


def bearer_token(headers: Mapping[str, Any]) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (key matched without case)."""
    value = next((v for k, v in headers.items() if str(k).lower() == "authorization"), None)
    if not isinstance(value, str):
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authenticate(services: Services, token: str | None) -> Viewer | None:
    if not token:
        return None
    async with services.db.read() as session:
        return await viewer_for_token(session, token)


class OrderPulseGraphQL(GraphQL[Context, None]):
    """POST and GraphiQL; websockets go to `app.graphql.websocket` (see `create_app`)."""

    def __init__(self, services: Services) -> None:
        super().__init__(
            build_schema(services.settings),
            graphql_ide="graphiql",
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        )
        self.services = services

    async def get_context(self, request: Request | WebSocket, response: Any = None) -> Context:
        viewer = None
        token = None
        if isinstance(request, Request):
            token = bearer_token(request.headers)
            viewer = await authenticate(self.services, token)
        return Context(
            services=self.services,
            viewer=viewer,
            loaders=Loaders(self.services.db),
            request=request,
            response=response,
            token=token,
        )


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Starlette:
    """The ASGI app. Background workers start with the lifespan."""
    settings = settings or get_settings()
    services = Services(
        settings=settings, db=database_from_settings(settings), clock=clock or SystemClock()
    )
    graphql_app = OrderPulseGraphQL(services)
    websocket_app = GraphQLWebSocket(  # live subscriptions, grouped for fan-out
        services,
        graphql_app.schema,
        authenticate=lambda params: authenticate(services, bearer_token(params)),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from app.workers import start_workers

        stop = await start_workers(services)
        try:
            yield
        finally:
            await stop()
            await services.db.dispose()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await services.db.ping():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "database unavailable"}, status_code=503)

    app = Starlette(
        routes=[
            Route("/graphql", graphql_app, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        # websockets on /graphql go straight to the subscription endpoint
        middleware=[Middleware(WebSocketShortcut, path="/graphql", endpoint=websocket_app)],
        lifespan=lifespan,
    )
    app.state.services = services
    return app
