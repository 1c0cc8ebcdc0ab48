"""uvicorn's websockets protocol, able to send several text messages in one write.

A reconnect storm replays about ten events to each of thousands of sockets, and ASGI sends one
message per `send`: with uvicorn that is one frame, one `transport.write` and so one system call
per message, about a quarter of the server's time in a storm. This protocol (what `python -m app
serve` runs, `app.asgi.server_options`) advertises the ASGI extension `SEND_TEXTS_EXTENSION` in
the websocket scope and then accepts one more message type, `SEND_TEXTS`, whose `texts` it frames
one by one and writes together. Everything else is uvicorn's `websockets-sansio` protocol as is;
under another server the extension is absent and `app.graphql.ws.sending` sends one message at a
time.

Its handshake starts from the request uvicorn's HTTP protocol has already parsed (httptools, in C):
`UpgradingHttpProtocol`, the HTTP protocol `serve` runs, hands it over as websockets' `Request`
instead of writing it back out as bytes for websockets' own parser (Python) to read again (about
8% of the event loop's samples in a reconnect storm's profile). Only a request that parser would
take as it is goes this way (`handed_request`); any other (a method not GET, a body, an over-long
line, too many headers, a byte outside ASCII) still goes to it as bytes and gets its answer.

It also keeps one of the two INFO lines each websocket cost: uvicorn logs the accepted handshake
(`"WebSocket /graphql" [accepted]`, with the client's address), and websockets' protocol logged
`connection open` right after it on the same logger, saying nothing more. The second line is no
longer written; websockets' other lines (`connection closed`, its errors) are.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.protocol import Protocol

SEND_TEXTS_EXTENSION = "orderpulse.websocket.send_texts"
"""In `scope["extensions"]` when the server takes `SEND_TEXTS` messages."""
SEND_TEXTS = "orderpulse.websocket.send_texts"
"""`{"type": SEND_TEXTS, "texts": [str, ...]}`: each text one websocket message, in order."""


_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
"""A header name websockets' parser accepts (its `_token_re`)."""
_ASCII_VALUE = re.compile(rb"[\x09\x20-\x7e]*")
"""A header value websockets' parser accepts and decodes alike in every version (ASCII only)."""


def handed_request(
    method: str, target: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> Request | None:
    """The websocket handshake request websockets' parser would read from these parts, or None
    where it might read or answer otherwise (the caller then hands it the bytes)."""
    if method != "GET":
        return None
    if len(target) + len(" GET HTTP/1.1\r\n") > MAX_LINE_LENGTH or not target.isascii():
        return None
    parsed = Headers()
    for count, (name, value) in enumerate(headers, 1):
        if count > MAX_NUM_HEADERS or name in (b"transfer-encoding", b"content-length"):
            return None
        value = value.strip(b" \t")
        if len(name) + len(value) + 4 > MAX_LINE_LENGTH:
            return None
        if not _TOKEN.fullmatch(name) or not _ASCII_VALUE.fullmatch(value):
            return None
        parsed[name.decode()] = value.decode()
    return Request(target.decode(), parsed)


class _WithoutOpenLine(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets' logger, minus its `connection open` line (uvicorn's `[accepted]` line says it,
    with the client's address)."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if msg != "connection open":
            super().info(msg, *args, **kwargs)


class BatchingWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's `websockets-sansio` protocol plus `SEND_TEXTS` (several messages, one write)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.logger = _WithoutOpenLine(self.conn.logger, {})

    def start_from(self, request: Request) -> None:
        """The handshake `request`, already parsed: answer it; frames are read from here on."""
        conn = self.conn
        conn.parser = Protocol.parse(conn)  # what websockets' parser goes on to after a request
        next(conn.parser)
        self.handle_connect(request)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only for a handshake the app is to answer
        if scope is not None:
            scope["extensions"][SEND_TEXTS_EXTENSION] = {}

    async def send(self, message: Any) -> None:
        if message["type"] != SEND_TEXTS:
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if not self.handshake_complete or self.initial_response is not None:
            raise RuntimeError(f"'{SEND_TEXTS}' before the websocket was accepted.")
        if self.close_sent:
            raise RuntimeError(f"Unexpected ASGI message '{SEND_TEXTS}' after 'websocket.close'.")
        conn = self.conn
        try:
            for text in message["texts"]:
                conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        self.transport.write(b"".join(conn.data_to_send()))


class UpgradingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing a websocket upgrade to `BatchingWebSocketProtocol`
    as the request it parsed (see the module's docstring)."""

    def handle_websocket_upgrade(self) -> None:
        ws_protocol = self.ws_protocol_class
        request = handed_request(self.scope["method"], self.url, self.scope["headers"])
        if (
            request is None
            or ws_protocol is None
            or not issubclass(ws_protocol, BatchingWebSocketProtocol)
        ):
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        protocol = ws_protocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.start_from(request)
        self.transport.set_protocol(protocol)
