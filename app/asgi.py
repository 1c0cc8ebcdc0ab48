"""The Starlette application: /graphql (POST, GET, GraphiQL, websockets), health, metrics,
workers."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.http.websocket_origin import normalize_allowed_origins

from app.access.tokens import bearer_token, viewer_for_token
from app.access.viewer import Viewer
from app.db import Clock, SystemClock, database_from_settings
from app.documents.store import DocumentStore
from app.graphql.http import GraphQLHTTP
from app.graphql.persisted import PersistedQueries
from app.graphql.schema import build_schema
from app.graphql.ws import GraphQLWebSocket, WebSocketShortcut
from app.kernel.collector import COLLECTOR, Collector, OldGarbage, tune_garbage_collector
from app.kernel.strawberry import graphql_schema
from app.kernel.uvicorn import ConnectionLimits, UpgradingHttpProtocol
from app.observability import metrics
from app.observability.logs import request_id_middleware
from app.observability.logs import write_at_once as write_logs_at_once
from app.outages import OutageMiddleware
from app.panel import panel_routes
from app.ratelimit import RateLimiter, RateLimitMiddleware
from app.services import Services
from app.settings import Settings, get_settings

log = logging.getLogger("orderpulse")


async def authenticate(services: Services, token: str | None) -> Viewer | None:
    if not token:
        return None
    async with services.db.read_connection() as conn:
        return await viewer_for_token(conn, token, now=services.clock.now())


async def cached_viewer(services: Services, token: str | None) -> Viewer | None:
    """A websocket's viewer, from the process's cache of recently used tokens."""
    return await services.viewers.viewer(token) if token else None


def vouching(limiter: RateLimiter, viewer: Viewer | None, token: str | None) -> Viewer | None:
    """`viewer`, after telling the rate limiter that its token is live (app.ratelimit)."""
    if viewer is not None and token:
        limiter.vouch(token)
    return viewer


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings that carry ours: what `python -m app serve` (and the tests) run with."""
    return {
        # a websocket message over the body limit closes the socket (1009) before it is parsed
        "ws_max_size": settings.max_body_bytes,
        # on SIGTERM: stop accepting, close websockets (1012), finish requests within the grace
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
        # permessage-deflate keeps a zlib compressor's state per socket and compresses every message
        # once per subscriber; live messages are small, so sockets stay uncompressed.
        "ws_per_message_deflate": False,
        # uvicorn's websockets-sansio protocol, plus several messages in one write (a replay)
        "ws": "app.kernel.uvicorn:BatchingWebSocketProtocol",
        # uvicorn's httptools protocol, handing that protocol an upgrade's request as parsed, and
        # closing connections too slow to send a request or over their address's cap
        "http": functools.partial(
            UpgradingHttpProtocol,
            limits=ConnectionLimits(
                read_timeout_seconds=settings.http_read_timeout_seconds,
                max_per_address=settings.max_connections_per_address,
            ),
        ),
        # an idle kept-alive connection is closed as a slow one is
        "timeout_keep_alive": settings.http_read_timeout_seconds,
        # X-Forwarded-For is believed from the trusted proxies only, none by default (uvicorn's
        # own default trusts 127.0.0.1: anyone on the host could pick their address)
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": sorted(settings.forwarded_allow_ips) or None,
        # uvloop, with servers that accept every waiting connection at each loop turn
        "loop": "app.kernel.event_loop:new_event_loop",
    }


def cors_origins(settings: Settings) -> list[str]:
    """ORDERPULSE_ALLOWED_ORIGINS as browsers send them (scheme://host[:port], no default port)."""
    try:
        return sorted(normalize_allowed_origins(sorted(settings.allowed_origins)))
    except ValueError as exc:
        raise ValueError(f"ORDERPULSE_ALLOWED_ORIGINS: {exc}") from None


async def readiness_problems(services: Services, state: Any, limiter: RateLimiter) -> list[str]:
    """Why this process should not get traffic now: the database does not answer, the
    cross-process transport (LISTEN connection or Redis) is down, a background worker died, or the
    shared rate-limit store is unreachable. Empty when ready."""
    problems = [] if await services.db.ping() else ["the database does not answer"]
    workers = getattr(state, "workers", None)
    if workers is None:
        problems.append("the background workers have not started")
    else:
        problems += workers.problems()
    if limiter.is_shared and not await limiter.storage_reachable():
        problems.append("the rate limit store (Redis) does not answer")
    return problems


def serve_app() -> Starlette:
    """The app as `python -m app serve` runs it (in each worker): the garbage collector is tuned
    for many long-lived sockets once the lifespan has started (app/kernel/collector.py)."""
    return create_app(tune_runtime=True)


def create_app(
    settings: Settings | None = None, *, clock: Clock | None = None, tune_runtime: bool = False
) -> Starlette:
    """The ASGI app. Background workers start with the lifespan."""
    settings = settings or get_settings()
    services = Services(
        settings=settings, db=database_from_settings(settings), clock=clock or SystemClock()
    )
    schema = build_schema(settings)
    persisted = PersistedQueries(
        DocumentStore(services.db, max_per_token=settings.max_persisted_per_token),
        trusted_only=settings.trusted_documents_only,
        clock=services.clock,
        guards=schema.guards,
        schema=graphql_schema(schema),
    )

    limiter = RateLimiter.from_settings(settings)

    async def http_viewer(request: Request) -> tuple[Viewer | None, str | None]:
        token = bearer_token(request.headers)
        return vouching(limiter, await authenticate(services, token), token), token

    async def websocket_viewer(params: Mapping[str, Any]) -> Viewer | None:
        token = bearer_token(params)
        return vouching(limiter, await cached_viewer(services, token), token)

    graphql_http = GraphQLHTTP(services, schema, authenticate=http_viewer, persisted=persisted)
    websocket_app = GraphQLWebSocket(  # live subscriptions, grouped for fan-out
        services,
        schema,
        authenticate=websocket_viewer,
        persisted=persisted,
        limiter=limiter,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from app.workers import STOP_GRACE_SECONDS, start_workers

        workers = await start_workers(services)
        app.state.workers = workers
        old_garbage = None
        if tune_runtime:
            tune_garbage_collector()
            if COLLECTOR is Collector.GENERATIONAL:
                old_garbage = asyncio.get_running_loop().create_task(
                    OldGarbage().run(), name="orderpulse-old-garbage"
                )
        try:
            yield
        finally:
            if old_garbage is not None:
                old_garbage.cancel()
            write_logs_at_once()  # uvicorn ends the process right after its last lines
            await workers.stop()
            try:  # bounded like the workers' stop: a dropped connection must not hold shutdown
                await asyncio.wait_for(services.db.dispose(), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.warning("closing the database connections took over %.0f s", STOP_GRACE_SECONDS)
            metrics.worker_exiting()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        problems = await readiness_problems(services, app.state, limiter)
        if not problems:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)

    outbox_gauges = metrics.OutboxGauges(services.db.read, services.clock.now)
    metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None

    async def metrics_endpoint(request: Request) -> Response:
        if not metrics.scrape_allowed(request.headers.getlist("authorization"), metrics_token):
            return Response("Unauthorized\n", 401, headers={"WWW-Authenticate": "Bearer"})
        outbox = await outbox_gauges.state()
        return Response(metrics.exposition(outbox), media_type=metrics.CONTENT_TYPE)

    app = WebSocketShortcut(  # websockets on /graphql: straight to the subscription endpoint
        websocket_path="/graphql",
        websocket_endpoint=websocket_app,
        routes=[
            Route("/graphql", graphql_http.handle, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *panel_routes(),
            Route("/metrics", metrics_endpoint),
        ],
        middleware=[
            request_id_middleware(),  # X-Request-ID on every HTTP response, ids in the logs
            # browsers from the allowed origins may call the API (preflight answered here)
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins(settings),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
                max_age=600,
            ),
            # a dependency down: 503 with Retry-After, never a bare 500 (request id, CORS kept)
            Middleware(OutageMiddleware),
            # each GraphQL operation spends its token's budget (429 over it; CORS headers kept)
            Middleware(RateLimitMiddleware, path="/graphql", limiter=limiter),
        ],
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,  # 413 before anything reads the body
    )
    app.state.services = services
    app.state.schema = schema
    return app
