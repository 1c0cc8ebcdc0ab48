"""The websocket protocol `python -m app serve` runs (app/graphql/ws/server_protocol.py), through a
real uvicorn and a real client: several texts in one send, the scope's addresses, its log lines,
and a handshake handed over as parsed (`UpgradingHttpProtocol`) giving the app the same scope as
one websockets parses again from bytes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from websockets import http11
from websockets.asyncio.client import connect
from websockets.http11 import Request
from websockets.streams import StreamReader

from app.asgi import server_options
from app.graphql.ws.server_protocol import (
    SEND_TEXTS,
    SEND_TEXTS_EXTENSION,
    BatchingWebSocketProtocol,
    UpgradingHttpProtocol,
    handed_request,
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
HANDSHAKES = {
    "a browser's": (
        "GET /graphql?x=1&y=%20 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: keep-alive, Upgrade\r\n{KEY}Sec-WebSocket-Version: 13\r\n"
        "Origin: http://127.0.0.1\r\nSec-WebSocket-Protocol: graphql-transport-ws, other\r\n"
        "Sec-WebSocket-Protocol: third\r\nUser-Agent: Mozilla/5.0 (X11)\t \r\n\r\n"
    ),
    "with an empty value and a tab inside one": (
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{KEY}Sec-WebSocket-Version: 13\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n"
    ),
    "with a value outside ASCII (not handed over)": (
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{KEY}Sec-WebSocket-Version: 13\r\nX-Name: Zo\xeb\r\n\r\n"
    ),
}


def parsed_by_websockets(raw: bytes) -> Request:
    reader = StreamReader()
    reader.feed_data(raw)
    reader.feed_eof()
    parser = Request.parse(reader.read_line)
    with pytest.raises(StopIteration) as done:
        next(parser)
    request: Request = done.value.value
    return request


def parts(raw: bytes) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """What uvicorn's HTTP protocol holds after parsing `raw` (lower-case names, as it keeps)."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    method, target, _ = request_line.split(b" ")
    headers = [
        (n.strip().lower(), v.strip(b" \t")) for n, _, v in (h.partition(b":") for h in lines)
    ]
    return method.decode(), target, headers


@pytest.mark.parametrize("name", HANDSHAKES)
def test_a_handed_request_is_what_websockets_parses_from_its_bytes(name: str) -> None:
    raw = HANDSHAKES[name].encode("latin-1")
    method, target, headers = parts(raw)
    handed = handed_request(method, target, headers)
    if "not handed over" in name:
        assert handed is None
        return
    assert handed is not None
    lowered = (
        raw.split(b"\r\n", 1)[0]
        + b"\r\n"
        + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        + b"\r\n"
    )  # as uvicorn writes it out for websockets' parser
    expected = parsed_by_websockets(lowered)
    assert handed.path == expected.path
    assert list(handed.headers.raw_items()) == list(expected.headers.raw_items())


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("POST", []),
        ("GET", [(b"content-length", b"0")]),
        ("GET", [(b"transfer-encoding", b"chunked")]),
        ("GET", [(b"x-long", b"a" * 9000)]),
        ("GET", [(b"x-n", b"1")] * 129),
        ("GET", [(b"x-ctl", b"a\x01b")]),
    ],
)
def test_what_websockets_might_answer_otherwise_is_not_handed_over(
    method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    assert handed_request(method, b"/", headers) is None


async def handshake_scope(raw: bytes, http: Any) -> dict[str, Any]:
    app = EchoApp()
    async with served(app, http=http) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        finally:
            writer.close()
    assert response.startswith(b"HTTP/1.1 101 "), response
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response
    (scope,) = app.scopes
    return scope


@pytest.mark.parametrize("name", HANDSHAKES)
async def test_the_app_gets_the_same_scope_whichever_way_the_handshake_went(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = HANDSHAKES[name].encode("latin-1")
    parses: list[object] = []  # websockets' own parsing of a request's header lines
    parse_headers = http11.parse_headers

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(args)
        return parse_headers(*args, **kwargs)

    monkeypatch.setattr(http11, "parse_headers", counted)
    handed = await handshake_scope(raw, UpgradingHttpProtocol)
    assert len(parses) == (1 if "not handed over" in name else 0)
    reparsed = await handshake_scope(raw, "httptools")  # uvicorn's own: bytes, parsed again
    assert len(parses) == (2 if "not handed over" in name else 1)
    for key in ("path", "raw_path", "query_string", "headers", "subprotocols", "scheme"):
        assert handed[key] == reparsed[key], key
    assert SEND_TEXTS_EXTENSION in handed["extensions"]


def test_serve_runs_the_upgrading_http_protocol() -> None:
    assert server_options(Settings())["http"] == (
        "app.graphql.ws.server_protocol:UpgradingHttpProtocol"
    )
