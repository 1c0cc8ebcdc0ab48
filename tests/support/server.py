"""A real uvicorn server on a free 127.0.0.1 port, serving the test's app.

The server runs as a task on the test's own event loop, so the test, its factories, the app's
services and the FakeClock are the very same objects the server uses (the clock is moved in-thread,
and a factory's write wakes the server's fan-out exactly as a mutation would). The app's lifespan is
the `app` fixture's; the server only speaks HTTP and websockets on a real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from app.asgi import server_options

STARTUP_SECONDS = 10.0


@dataclass(frozen=True)
class LiveServer:
    host: str
    port: int

    @property
    def origin(self) -> str:
        """The server's own origin, as a browser on its pages would send it."""
        return f"http://{self.host}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"{self.origin}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/graphql"


@contextlib.asynccontextmanager
async def serve(
    app: Starlette,
    *,
    ws_ping_interval: float | None = None,
    send_buffer: int | None = None,
    uvicorn_options: dict[str, Any] | None = None,
) -> AsyncIterator[LiveServer]:
    """Serve `app` (whose lifespan the caller runs) until the block exits, with uvicorn's
    settings as `python -m app serve` has them (`app.asgi.server_options`), then `uvicorn_options`.

    `send_buffer` shrinks the kernel's send buffer of every accepted socket (they inherit the
    listening socket's), so a client that stops reading blocks the server's sends sooner.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {
        **server_options(app.state.services.settings),
        "timeout_graceful_shutdown": 2,  # tests end their own requests
        **(uvicorn_options or {}),
    }
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_interval,
        **options,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_SECONDS):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield LiveServer("127.0.0.1", port)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=STARTUP_SECONDS)
        sock.close()


@pytest.fixture
async def live_server(
    app: Starlette, uvicorn_overrides: dict[str, Any]
) -> AsyncIterator[LiveServer]:
    """The test's app on a real socket (import this fixture into a test module to use it), with
    uvicorn's settings as `python -m app serve` has them, then `uvicorn_overrides`."""
    async with serve(app, uvicorn_options=uvicorn_overrides) as server:
        yield server
