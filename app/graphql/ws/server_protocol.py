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
`UpgradingHttpProtocol`, the HTTP protocol `serve` runs, checks it as websockets' `ServerProtocol`
would (`accept_value`) and hands it over with its `Sec-WebSocket-Accept` value, and the app's scope
is made from it as uvicorn makes it (`BatchingWebSocketProtocol.start_accepted`). uvicorn would
write the request back out as bytes for websockets' own parser (Python) to read again, into a
`Request` and `Headers`, and websockets would check it through those and write a `Date` header that
uvicorn then deletes. What an open socket keeps is 3 KB smaller this way (21 KB instead of 24 in a
10,000-socket storm); the instructions per handshake are the same within 1%
(scripts/bench_handshake_instructions.py). Only a request websockets would accept as it is goes
this way; any other (a method not GET, a bad key or version, a header websockets would read
otherwise or refuse) still goes to it as bytes and gets its answer.

A client that does not read cannot hold the server's memory: the app's `websocket.close` is
written behind what the transport holds without waiting for it to drain (uvicorn's `send` waits
for the transport to be writable first, for ever if the client never reads), and if the client
has not answered the close within uvicorn's close timeout, the connection is aborted, its unsent
bytes dropped (uvicorn's `transport.close()` would keep them until they are read). A websocket
ping frame is answered by uvicorn at once, outside the app's bounded send queue: while more than
`MAX_UNREAD_BYTES` wait in the transport, a ping is not answered but closes the socket (4400,
a ping flood).

It also keeps one of the two INFO lines each websocket cost: uvicorn logs the accepted handshake
(`"WebSocket /graphql" [accepted]`, with the client's address), and websockets' protocol logged
`connection open` right after it on the same logger, saying nothing more. The second line is no
longer written; websockets' other lines (`connection closed`, its errors) are.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import logging
import re
from typing import Any
from urllib.parse import unquote

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderFormat, InvalidState
from websockets.headers import parse_connection, parse_subprotocol, parse_upgrade
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Response
from websockets.protocol import Protocol
from websockets.typing import Origin
from websockets.utils import accept_key

from app.observability import metrics

SEND_TEXTS_EXTENSION = "orderpulse.websocket.send_texts"
"""In `scope["extensions"]` when the server takes `SEND_TEXTS` messages."""
SEND_TEXTS = "orderpulse.websocket.send_texts"
"""`{"type": SEND_TEXTS, "texts": [str, ...]}`: each text one websocket message, in order."""


_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
"""A header name websockets' parser accepts (its `_token_re`)."""
_ASCII_VALUE = re.compile(rb"[\x09\x20-\x7e]*")
"""A header value websockets' parser accepts and decodes alike in every version (ASCII only)."""


def accept_value(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The `Sec-WebSocket-Accept` value of a handshake request (its header values stripped of
    the whitespace around them, as websockets' parser strips it) that websockets' `ServerProtocol`
    (no extensions, subprotocols or origins of its own: uvicorn's, with per-message deflate off)
    would accept as it is after reading it from these parts as uvicorn writes them out; None for
    any other request, which goes to websockets as bytes for its own answer.

    It checks what `ServerProtocol.process_request` checks, with websockets' own header parsers,
    and, for the request to be read at all, what its request parser would refuse or read otherwise
    (an over-long line, too many headers, a byte outside ASCII, a body)."""
    if method != "GET":
        return None
    if len(target) + len(" GET HTTP/1.1\r\n") > MAX_LINE_LENGTH or not target.isascii():
        return None
    if len(headers) > MAX_NUM_HEADERS:
        return None
    key: bytes | None = None
    version: bytes | None = None
    connection: list[str] = []
    upgrade: list[str] = []
    origins = 0
    try:
        for name, value in headers:
            if len(name) + len(value) + 4 > MAX_LINE_LENGTH:
                return None
            if not _TOKEN.fullmatch(name) or not _ASCII_VALUE.fullmatch(value):
                return None
            if name == b"connection":
                connection += parse_connection(value.decode())
            elif name == b"upgrade":
                upgrade += parse_upgrade(value.decode())
            elif name == b"sec-websocket-key":
                if key is not None:
                    return None
                key = value
            elif name == b"sec-websocket-version":
                if version is not None:
                    return None
                version = value
            elif name == b"sec-websocket-protocol":
                parse_subprotocol(value.decode())
            elif name == b"origin":
                origins += 1
            elif name in (b"transfer-encoding", b"content-length"):
                return None
    except InvalidHeaderFormat:
        return None
    if not any(option.lower() == "upgrade" for option in connection):
        return None
    if len(upgrade) != 1 or upgrade[0].lower() != "websocket":
        return None
    if key is None or version != b"13" or origins > 1:
        return None
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return accept_key(key.decode())


MAX_UNREAD_BYTES = 1024 * 1024
"""Bytes waiting in the transport past which a websocket ping frame closes the socket."""


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

    def start_accepted(
        self, target: bytes, headers: list[tuple[bytes, bytes]], accept: str
    ) -> None:
        """A handshake request that `accept_value` found valid, as uvicorn's HTTP protocol parsed
        it (its target, and its headers with lower-case names), and that value: the app gets the
        scope uvicorn's `handle_connect` gives it from websockets' `Request`, and the handshake
        response websockets' `accept` makes is sent when the app accepts; frames are read from
        here on."""
        conn = self.conn
        conn.parser = Protocol.parse(conn)  # what websockets' parser goes on to after a request
        next(conn.parser)
        conn.accept_called = True  # as `ServerProtocol.accept` leaves it; it names a refusal
        conn.origin = next((Origin(v.decode()) for n, v in headers if n == b"origin"), None)
        self.response = Response(
            101,
            "Switching Protocols",
            Headers(
                Date=self.http_date(),
                Upgrade="websocket",
                Connection="Upgrade",
                **{"Sec-WebSocket-Accept": accept},
            ),
        )
        self.handshake_initiated = True
        raw_path, _, query_string = target.partition(b"?")
        subprotocols: list[str] = []
        for name, value in headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(token.strip() for token in value.decode().split(","))
        self.scope = {
            "type": "websocket",
            "asgi": {"version": self.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": self.scheme,
            "server": self.server,
            "client": self.client,
            "root_path": self.root_path,
            "path": self.root_path + unquote(raw_path.decode("ascii")),
            "raw_path": self.root_path.encode("ascii") + raw_path,
            "query_string": query_string,
            "headers": headers,
            "subprotocols": subprotocols,
            "state": self.app_state.copy(),
            "extensions": {"websocket.http.response": {}, SEND_TEXTS_EXTENSION: {}},
        }
        self.queue.put_nowait({"type": "websocket.connect"})
        task = self.loop.create_task(self.run_asgi())
        task.add_done_callback(self.on_task_complete)
        self.tasks.add(task)

    def http_date(self) -> str:
        """The HTTP `Date` of now: uvicorn's, renewed every second (as websockets' own)."""
        for name, value in self.default_headers:
            if name == b"date":
                return value.decode("latin-1")
        return email.utils.formatdate(usegmt=True)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # set only for a handshake the app is to answer
        if scope is not None:
            scope["extensions"][SEND_TEXTS_EXTENSION] = {}

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close":
            await self.send_close(message)
            return
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

    async def send_close(self, message: Any) -> None:
        """uvicorn's `websocket.close`, without waiting for a client that may never read: the
        close frame goes behind what is buffered, and the connection is aborted if the client
        has not answered it in time (see the module's docstring)."""
        accepted = self.handshake_complete and self.initial_response is None
        if accepted and not self.close_sent and not self.disconnected:
            self.writable.set()  # uvicorn's send waits for this first; the close need not
        await super().send(message)
        if self.close_timer is not None:  # uvicorn's: `transport.close` after close_timeout
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.close_or_abort)

    def close_or_abort(self) -> None:
        """Close the connection; abort it if unsent bytes remain (the client does not read)."""
        self.close_timer = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def handle_ping(self) -> None:
        if self.transport.get_write_buffer_size() <= MAX_UNREAD_BYTES:
            super().handle_ping()
            return
        self.conn.data_to_send()  # the pong websockets made: not sent
        if self.close_sent or self.transport.is_closing():
            return
        metrics.websocket_overflowed(reason="answers")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 4400})
        self.conn.send_close(4400, "Too many pings not read")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.close_timer = self.loop.call_later(self.close_timeout, self.close_or_abort)


class UpgradingHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, handing a websocket upgrade to `BatchingWebSocketProtocol`
    as the request it parsed (see the module's docstring)."""

    def handle_websocket_upgrade(self) -> None:
        ws_protocol = self.ws_protocol_class
        if (
            ws_protocol is None
            or not issubclass(ws_protocol, BatchingWebSocketProtocol)
            or self.config.ws_per_message_deflate  # extensions to negotiate: websockets does
        ):
            super().handle_websocket_upgrade()
            return
        # as websockets reads them: without the whitespace around a value (httptools keeps it)
        headers = [(name, value.strip(b" \t")) for name, value in self.scope["headers"]]
        accept = accept_value(self.scope["method"], self.url, headers)
        if accept is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        protocol = ws_protocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        protocol.connection_made(self.transport)
        protocol.start_accepted(self.url, headers, accept)
        self.transport.set_protocol(protocol)
