"""The websocket protocol `python -m app serve` runs (app/kernel/uvicorn.py), through a
real uvicorn and a real client: several texts in one send, the scope's addresses, its log lines,
and a handshake taken as uvicorn parsed it (`UpgradingHttpProtocol`) only where websockets would
accept it, with the same answer and the same scope for the app as uvicorn's own way (the request
written out as bytes for websockets to parse again)."""

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
from websockets import http11
from websockets.asyncio.client import connect
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from app.asgi import server_options
from app.kernel.uvicorn import (
    SEND_TEXTS,
    SEND_TEXTS_EXTENSION,
    BatchingWebSocketProtocol,
    ConnectionLimits,
    UpgradingHttpProtocol,
    accept_value,
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


FAST = "taken as parsed"
BYTES = "websockets reads the bytes"
HTTP = "not a websocket upgrade to uvicorn"  # answered as an HTTP request either way
HANDSHAKES: dict[str, tuple[str, str]] = {
    "a browser's": (
        FAST,
        request(
            "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            f"{KEY}Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws, other\r\n"
            "Sec-WebSocket-Protocol: third\r\nUser-Agent: Mozilla/5.0 (X11)\t \r\n",
            "GET /graphql?x=1&y=%20 HTTP/1.1",
        ),
    ),
    "another browser's, offering an extension": (
        FAST,
        request(
            f"Host: h\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n{KEY}"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            "GET /a%2Fb%20c HTTP/1.1",
        ),
    ),
    "with an empty value and a tab inside one": (
        FAST,
        request(f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nX-Empty:\r\nX-Tab: a\tb\r\n"),
    ),
    "with a value outside ASCII": (
        BYTES,
        request(f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nX-Name: Zo\xeb\r\n"),
    ),
    "without an upgrade in Connection": (
        HTTP,
        request(f"Host: h\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n{KEY}"),
    ),
    "upgrading to another protocol as well": (
        HTTP,
        request(f"Host: h\r\nUpgrade: websocket, h2c\r\nConnection: Upgrade\r\n{KEY}"),
    ),
    "with a Connection websockets cannot read": (  # though httptools reads an upgrade
        BYTES,
        request(f"Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade, @\r\n{KEY}"),
    ),
    "with empty elements in Connection": (
        FAST,
        request(
            f"Host: h\r\nUpgrade: websocket\r\nConnection: ,Upgrade,,x\r\n{KEY}"
            "Sec-WebSocket-Version: 13\r\n"
        ),
    ),
    "without a key": (BYTES, request(f"{PLAIN}Sec-WebSocket-Version: 13\r\n")),
    "with a key of 3 bytes": (
        BYTES,
        request(f"{PLAIN}Sec-WebSocket-Key: AAAA\r\nSec-WebSocket-Version: 13\r\n"),
    ),
    "with a key not in base64": (
        BYTES,
        request(
            f"{PLAIN}Sec-WebSocket-Key: !!!!dGhlIHNhbXBsZSBub25j\r\nSec-WebSocket-Version: 13\r\n"
        ),
    ),
    "with two keys": (BYTES, request(f"{PLAIN}{KEY}{KEY}Sec-WebSocket-Version: 13\r\n")),
    "of another version": (BYTES, request(f"{PLAIN}{KEY}Sec-WebSocket-Version: 8\r\n")),
    "without a version": (BYTES, request(f"{PLAIN}{KEY}")),
    "from two origins": (
        BYTES,
        request(
            f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nOrigin: http://a\r\nOrigin: http://b\r\n"
        ),
    ),
    "offering a subprotocol websockets cannot read": (
        BYTES,
        request(f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a b\r\n"),
    ),
    "with another method": (
        BYTES,
        request(
            f"{PLAIN}{KEY}Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n", "POST / HTTP/1.1"
        ),
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
    """What uvicorn's HTTP protocol hands over after parsing `raw`: lower-case names, as it keeps
    them, and values without the whitespace around them, as `UpgradingHttpProtocol` strips it."""
    head, _, _ = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.split(b"\r\n")
    method, target, _ = request_line.split(b" ")
    headers = [
        (n.strip().lower(), v.strip(b" \t")) for n, _, v in (h.partition(b":") for h in lines)
    ]
    return method.decode(), target, headers


@pytest.mark.parametrize("name", HANDSHAKES)
def test_a_handshake_is_taken_as_parsed_only_where_websockets_would_accept_it(name: str) -> None:
    way, text = HANDSHAKES[name]
    method, target, headers = parts(text.encode("latin-1"))
    accept = accept_value(method, target, headers)
    assert (accept is not None) == (way == FAST)
    if accept is None:
        return
    written = (  # as uvicorn writes it out for websockets' parser
        f"{method} ".encode()
        + target
        + b" HTTP/1.1\r\n"
        + b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        + b"\r\n"
    )
    response = ServerProtocol().accept(parsed_by_websockets(written))
    assert response.status_code == 101
    assert response.headers["Sec-WebSocket-Accept"] == accept == ACCEPT


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("GET", [(b"content-length", b"0")]),
        ("GET", [(b"transfer-encoding", b"chunked")]),
        ("GET", [(b"x-long", b"a" * 9000)]),
        ("GET", [(b"x-n", b"1")] * 129),
        ("GET", [(b"x-ctl", b"a\x01b")]),
    ],
)
def test_what_websockets_might_read_otherwise_is_not_taken_as_parsed(
    method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    valid = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-key", KEY.split(": ")[1].strip().encode()),
        (b"sec-websocket-version", b"13"),
    ]
    assert accept_value(method, b"/", valid) == ACCEPT
    assert accept_value(method, b"/", valid + headers) is None


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
async def test_a_handshake_gets_the_same_answer_and_scope_whichever_way_it_went(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    way, text = HANDSHAKES[name]
    raw = text.encode("latin-1")
    parses: list[object] = []  # websockets' own parsing of a request's header lines
    parse_headers = http11.parse_headers

    def counted(*args: Any, **kwargs: Any) -> Any:
        parses.append(args)
        return parse_headers(*args, **kwargs)

    monkeypatch.setattr(http11, "parse_headers", counted)
    ours = await handshake(raw, UpgradingHttpProtocol)
    ours_parses = len(parses)
    uvicorns = await handshake(raw, "httptools")  # uvicorn's own: bytes, parsed again
    uvicorns_parses = len(parses) - ours_parses
    if way == FAST:
        assert (ours_parses, uvicorns_parses) == (0, 1)
    else:  # uvicorn's own way, whatever it does with it in this version
        assert ours_parses == uvicorns_parses
    assert ours[:2] == uvicorns[:2]
    ours_scope, uvicorns_scope = ours[2], uvicorns[2]
    if way == FAST:
        assert ours[0][0].startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {ACCEPT}".encode() in ours[0]
    if ours_scope is None or uvicorns_scope is None:
        assert ours_scope is uvicorns_scope is None
        return
    for key in set(ours_scope) | set(uvicorns_scope):
        if key not in ("client", "server"):  # two connections: other ports
            assert ours_scope[key] == uvicorns_scope[key], key
    assert SEND_TEXTS_EXTENSION in ours_scope["extensions"]


def test_serve_runs_the_upgrading_http_protocol() -> None:
    http = server_options(Settings())["http"]  # with the server's own connection limits
    assert http.func is UpgradingHttpProtocol
    assert http.keywords == {"limits": ConnectionLimits(read_timeout_seconds=10.0)}
    assert pickle.loads(pickle.dumps(http)).func is UpgradingHttpProtocol  # `--workers N`
