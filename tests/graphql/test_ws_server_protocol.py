"""The websocket protocol `python -m app serve` runs (app/kernel/uvicorn.py), through a
real uvicorn and a real client: several texts in one send, the scope's addresses, its log lines,
and every kind of handshake getting the same answer and the same scope for the app through our
HTTP protocol (`UpgradingHttpProtocol`) as through uvicorn's own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from app.asgi import server_options
from app.kernel.uvicorn import (
    SEND_TEXTS,
    SEND_TEXTS_EXTENSION,
    BatchingWebSocketProtocol,
    ConnectionLimits,
    UpgradingHttpProtocol,
)
from app.settings import Settings


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
async def served(app: EchoApp, http: Any = UpgradingHttpProtocol) -> AsyncIterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        http=http,
        ws=BatchingWebSocketProtocol,
        ws_per_message_deflate=False,  # as `serve` runs (app.asgi.server_options)
        lifespan="off",
        log_config=None,
        log_level="info",
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


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example, for KEY
PLAIN = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"


def request(lines: str, first: str = "GET / HTTP/1.1") -> str:
    return f"{first}\r\n{lines}\r\n"


HANDSHAKES: dict[str, str] = {
    "a browser's": request(
        "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        f"{KEY}Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n"
        "Sec-WebSocket-Protocol: graphql-transport-ws, other\r\n"
        "Sec-WebSocket-Protocol: third\r\nUser-Agent: Mozilla/5.0 (X11)\t \r\n",
        "GET /graphql?x=1&y=%20 HTTP/1.1",
    ),
    "another browser's, offering an extension": request(
        f"Host: h\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n{KEY}"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        "GET /a%2Fb%20c HTTP/1.1",
    ),
    "with an empty value and a tab inside one": request(
        f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nX-Empty:\r\nX-Tab: a\tb\r\n"
    ),
    "with a value outside ASCII": request(
        f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nX-Name: Zo\xeb\r\n"
    ),
    "without an upgrade in Connection": request(
        f"Host: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{KEY}"
    ),
    "upgrading to another protocol as well": request(
        f"Host: h\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n{KEY}"
    ),
    # though httptools reads an upgrade
    "with a Connection websockets cannot read": request(
        f"Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade, @\r\n{KEY}"
    ),
    "with empty elements in Connection": request(
        f"Host: h\r\nUpgrade: websocket\r\nConnection: ,Upgrade,,x\r\n{KEY}"
        "Sec-WebSocket-Version: 13\r\n"
    ),
    "without a key": request(f"{PLAIN}Sec-WebSocket-Version: 13\r\n"),
    "with a key of 3 bytes": request(
        f"{PLAIN}Sec-WebSocket-Key: AAAA\r\nSec-WebSocket-Version: 13\r\n"
    ),
    "with a key not in base64": request(
        f"{PLAIN}Sec-WebSocket-Key: !!!!dGhlIHNhbXBsZSBub25j\r\nSec-WebSocket-Version: 13\r\n"
    ),
    "with two keys": request(f"{PLAIN}{KEY}{KEY}Sec-WebSocket-Version: 13\r\n"),
    "of another version": request(f"{PLAIN}{KEY}Sec-WebSocket-Version: 8\r\n"),
    "without a version": request(f"{PLAIN}{KEY}"),
    "from two origins": request(
        f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nOrigin: http://a\r\nOrigin: http://b\r\n"
    ),
    "offering a subprotocol websockets cannot read": request(
        f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a b\r\n"
    ),
    "with another method": request(
        f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n", "POST / HTTP/1.1"
    ),
}


async def handshake(raw: bytes, http: Any) -> tuple[list[bytes], bytes, dict[str, Any] | None]:
    """The response's status line and headers (but `Date`), its body, and the app's scope (None
    when the handshake was refused before the app, or not answered)."""
    app = EchoApp()
    async with served(app, http=http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 3)
            except TimeoutError:  # (websockets 14 leaves a POST unanswered, either way)
                head = b"(no answer)"
            lengths = [h for h in head.lower().split(b"\r\n") if h.startswith(b"content-length:")]
            size = int(lengths[0].partition(b":")[2]) if lengths else 0
            body = await asyncio.wait_for(reader.readexactly(size), 5)
        finally:
            writer.close()
    lines = [h for h in head.split(b"\r\n") if h and not h.lower().startswith(b"date:")]
    return lines, body, (app.scopes[0] if app.scopes else None)


@pytest.mark.parametrize("name", HANDSHAKES)
async def test_a_handshake_gets_the_same_answer_and_scope_as_through_uvicorn_s_own_protocol(
    name: str,
) -> None:
    raw = HANDSHAKES[name].encode("latin-1")
    ours = await handshake(raw, UpgradingHttpProtocol)
    uvicorns = await handshake(raw, "httptools")
    assert ours[:2] == uvicorns[:2]
    ours_scope, uvicorns_scope = ours[2], uvicorns[2]
    if ours_scope is None or uvicorns_scope is None:
        assert ours_scope is uvicorns_scope is None
        return
    for key in set(ours_scope) | set(uvicorns_scope):
        if key not in ("client", "server"):  # two connections: other ports
            assert ours_scope[key] == uvicorns_scope[key], key
    assert SEND_TEXTS_EXTENSION in ours_scope["extensions"]


async def test_a_browser_s_handshake_is_accepted() -> None:
    raw = HANDSHAKES["a browser's"].encode()
    lines, _, scope = await handshake(raw, UpgradingHttpProtocol)
    assert lines[0].startswith(b"HTTP/1.1 101 ")
    assert f"Sec-WebSocket-Accept: {ACCEPT}".encode() in lines
    assert scope is not None
    assert scope["subprotocols"] == ["graphql-transport-ws", "other", "third"]


def test_serve_runs_the_upgrading_http_protocol() -> None:
    http = server_options(Settings())["http"]  # with the server's own connection limits
    assert http.func is UpgradingHttpProtocol
    assert http.keywords == {"limits": ConnectionLimits(read_timeout_seconds=10.0)}
    assert pickle.loads(pickle.dumps(http)).func is UpgradingHttpProtocol  # `--workers N`
