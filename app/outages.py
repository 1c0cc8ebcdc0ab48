"""A dependency that is down: how it is recognised, and what a client gets (SPEC 8).

A request that cannot be served because the database (or Redis, where a request needs it) is down,
restarting or unreachable gets HTTP 503 with `Retry-After` and one error coded
`SERVICE_UNAVAILABLE`, never a bare 500; a websocket's `connection_init` that cannot be checked is
closed with 1013 (try again later); an operation over a websocket gets an `error` message with the
same code. `is_outage` is the one rule for "this failure is the dependency's, not a bug": a refused
or dropped connection, a server shutting down or starting up, a time limit run out
(`ORDERPULSE_DATABASE_TIMEOUT_SECONDS`: a partition drops packets without a reset, and only a time
limit notices).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from typing import Any

from graphql import GraphQLError

log = logging.getLogger("orderpulse.outages")

SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
RETRY_AFTER_SECONDS = 2
"""What `Retry-After` says: a restart or a failover takes a few seconds; clients back off more."""
TRY_AGAIN_LATER = 1013
"""The websocket close code of a handshake that cannot be completed now (RFC 6455 registry)."""
MESSAGE = "The service is temporarily unavailable: try again later"


class DependencyUnavailable(Exception):
    """Raised where a request finds that a dependency is down (answered with 503)."""


def _outage_types() -> tuple[type[BaseException], ...]:
    import asyncpg  # type: ignore[import-untyped]
    import redis.exceptions
    import sqlalchemy.exc

    return (
        DependencyUnavailable,
        ConnectionError,  # refused, reset, aborted
        TimeoutError,  # a time limit ran out (asyncio's is the builtin)
        socket.gaierror,  # the host's name does not resolve
        asyncpg.PostgresConnectionError,  # the connection failed or was lost
        asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
        asyncpg.CannotConnectNowError,  # the server is starting up or shutting down
        asyncpg.AdminShutdownError,  # terminated by a restart
        asyncpg.CrashShutdownError,
        asyncpg.TooManyConnectionsError,
        sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time
        sqlalchemy.exc.InterfaceError,
        sqlalchemy.exc.DisconnectionError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    )


_TYPES: tuple[type[BaseException], ...] | None = None


def is_outage(error: BaseException | None) -> bool:
    """Whether `error` (or what caused it) says a dependency is down or out of reach."""
    global _TYPES
    if _TYPES is None:
        _TYPES = _outage_types()
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, _TYPES) or _unreachable(error) or _broken_protocol(error):
            return True
        if getattr(error, "connection_invalidated", False):  # SQLAlchemy: a disconnect
            return True
        orig = getattr(error, "orig", None)  # SQLAlchemy's wrapped DBAPI error
        error = orig if isinstance(orig, BaseException) else (error.__cause__ or error.__context__)
        seen += 1
    return False


_UNREACHABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH,
                errno.ETIMEDOUT, errno.EADDRNOTAVAIL}  # fmt: skip


def _unreachable(error: BaseException) -> bool:
    """An OSError of a connection (asyncpg trying several addresses raises a plain OSError
    naming each one's)."""
    if not isinstance(error, OSError):
        return False
    return error.errno in _UNREACHABLE or str(error).startswith("Multiple exceptions")


def _broken_protocol(error: BaseException) -> bool:
    """asyncpg's protocol found its connection broken mid-operation: the server's "terminating
    connection" arrived and the connection closed before the protocol was ready again (SQLAlchemy
    calls the same error a disconnect, finding the connection closed). Other internal errors of
    asyncpg are not outages."""
    import asyncpg

    if not isinstance(error, asyncpg.InternalClientError):
        return False
    text = str(error)
    return text == "not connected" or (
        text.startswith("cannot switch to state")
        and ("another operation (2)" in text or '"failed" state' in text)
    )


def unavailable_error() -> dict[str, Any]:
    """The GraphQL error a client gets (HTTP body and websocket `error` payload alike)."""
    return {
        "message": MESSAGE,
        "extensions": {"code": SERVICE_UNAVAILABLE, "retryAfter": RETRY_AFTER_SECONDS},
    }


def unavailable_graphql_error(error: GraphQLError) -> GraphQLError:
    """`error` (one a resolver raised because a dependency is down) as `unavailable_error`: same
    place in the document and the result, no detail of the failure."""
    found = unavailable_error()
    return GraphQLError(
        found["message"],
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=found["extensions"],
    )


def is_unavailable_error(error: Any) -> bool:
    """Whether a GraphQL error (a `GraphQLError`) is `unavailable_error`'s."""
    extensions = getattr(error, "extensions", None) or {}
    return bool(extensions.get("code") == SERVICE_UNAVAILABLE)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


def dependency(error: BaseException) -> str:
    """Which dependency an outage (`is_outage`) came from, as far as its errors tell: "Redis" or
    "the database" (asyncpg or SQLAlchemy), by the errors' types or the driver code they were
    raised in (a refused connection is a plain OSError); else "a dependency"."""
    seen: BaseException | None = error
    for _ in range(10):
        if seen is None:
            break
        modules = [type(seen).__module__]
        tb = seen.__traceback__
        while tb is not None:
            modules.append(str(tb.tb_frame.f_globals.get("__name__", "")))
            tb = tb.tb_next
        for module in reversed(modules):  # the innermost frame first, the type last
            if module.startswith("redis"):
                return "Redis"
            if module.startswith(("asyncpg", "sqlalchemy")):
                return "the database"
        orig = getattr(seen, "orig", None)
        seen = orig if isinstance(orig, BaseException) else (seen.__cause__ or seen.__context__)
    return "a dependency"


def log_failure(logger: logging.Logger, message: str, error: BaseException, *args: object) -> bool:
    """Log a failure that a background worker will retry, and return whether it was an outage.

    An outage (`is_outage`) is one WARNING line naming the dependency and what failed, without a
    traceback: a database away for a minute is dozens of them, and none is a bug. Anything else
    is ERROR with its traceback. `message` and `args` as for `logger.warning`."""
    if is_outage(error):
        logger.warning(
            f"{message}: %s is down or out of reach (%s)", *args, dependency(error), describe(error)
        )
        return True
    logger.error(message, *args, exc_info=error)
    return False


class OutageMiddleware:
    """Pure ASGI: an HTTP request whose handling raised an outage (`is_outage`) before its
    response started is answered 503 with `Retry-After` and `unavailable_error`, logged once at
    WARNING without a traceback (an outage under load is thousands of them)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as error:
            if started or not is_outage(error):
                raise
            log.warning("answered 503 to %s: %s", scope.get("path"), describe(error))
            body = json.dumps({"errors": [unavailable_error()]}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
