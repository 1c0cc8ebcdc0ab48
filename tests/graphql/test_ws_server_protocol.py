"""The websocket protocol `python -m app serve` runs (app/graphql/ws/server_protocol.py), through a
real uvicorn and a real client: several texts in one send, the scope's addresses, its log lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from websockets.asyncio.client import connect

from app.graphql.ws.server_protocol import (
    SEND_TEXTS,
    SEND_TEXTS_EXTENSION,
    BatchingWebSocketProtocol,
)


class EchoApp:
    """Accepts, records its scope, then answers each text with what the test queued for it."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        self.scopes.append(scope)
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] == "websocket.receive":
            await send(self.replies.pop(0))


@contextlib.asynccontextmanager
async def served(app: EchoApp) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, ws=BatchingWebSocketProtocol, lifespan="off", log_config=None, log_level="info"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_several_texts_arrive_as_separate_messages_in_order() -> None:
    app = EchoApp()
    app.replies = [
        {"type": SEND_TEXTS, "texts": ["one", "two", "three"]},
        {"type": "websocket.send", "text": "four"},
    ]
    async with served(app) as port, connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("go")
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
        await ws.send("again")
        got.append(await asyncio.wait_for(ws.recv(), 5))
    assert got == ["one", "two", "three", "four"]
    assert SEND_TEXTS_EXTENSION in app.scopes[0]["extensions"]


async def test_the_scope_has_the_connections_addresses() -> None:
    app = EchoApp()
    app.replies = [{"type": "websocket.send", "text": "hi"}]
    async with served(app) as port, connect(f"ws://127.0.0.1:{port}/") as ws:
        await ws.send("go")
        await asyncio.wait_for(ws.recv(), 5)
        client = ws.transport.get_extra_info("sockname")
    (scope,) = app.scopes
    assert scope["client"] == (client[0], client[1])
    assert scope["server"] == ("127.0.0.1", port)
    assert scope["scheme"] == "ws"


async def test_one_line_per_accepted_websocket() -> None:
    """uvicorn's `[accepted]` line, with the address; not websockets' `connection open` too.
    (Read on the logger itself: whether `uvicorn.error` propagates to the root logger, where
    pytest's caplog listens, depends on which uvicorn configuration ran before in the process.)"""
    app = EchoApp()
    app.replies = [{"type": "websocket.send", "text": "hi"}]
    records: list[logging.LogRecord] = []
    listener = logging.Handler(logging.INFO)
    listener.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    level = logger.level
    logger.addHandler(listener)
    logger.setLevel(logging.INFO)
    try:
        async with served(app) as port, connect(f"ws://127.0.0.1:{port}/path") as ws:
            await ws.send("go")
            await asyncio.wait_for(ws.recv(), 5)
            client = "%s:%d" % ws.transport.get_extra_info("sockname")
    finally:
        logger.removeHandler(listener)
        logger.setLevel(level)
    messages = [r.getMessage() for r in records]
    assert f'{client} - "WebSocket /path" [accepted]' in messages
    assert "connection open" not in messages
