"""The Starlette application: /graphql (POST, GraphiQL, websockets), health, background work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types.unset import UNSET, UnsetType

from app.access.tokens import viewer_for_token
from app.access.viewer import Viewer
from app.db import Clock, SystemClock, database_from_settings
from app.graphql.context import Context
from app.graphql.loaders import Loaders
from app.graphql.schema import build_schema
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
    def __init__(self, services: Services) -> None:
        super().__init__(
            build_schema(services.settings),
            graphql_ide="graphiql",
            allow_queries_via_get=False,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            connection_init_wait_timeout=timedelta(
                seconds=services.settings.ws_init_timeout_seconds
            ),
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

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params
        token = bearer_token(params) if isinstance(params, Mapping) else None
        viewer = await authenticate(self.services, token)
        if viewer is None:
            raise ConnectionRejectionError({"message": "a valid token is required"})
        context.viewer = viewer
        context.token = token
        return UNSET  # type: ignore[no-any-return]


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> Starlette:
    """The ASGI app. Background workers start with the lifespan."""
    settings = settings or get_settings()
    services = Services(
        settings=settings, db=database_from_settings(settings), clock=clock or SystemClock()
    )
    graphql_app = OrderPulseGraphQL(services)

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
            WebSocketRoute("/graphql", graphql_app),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.services = services
    return app
