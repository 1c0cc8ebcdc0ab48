"""uvicorn's protocols as `python -m app serve` runs them: its websockets protocol able to send
several text messages in one write, and its HTTP protocol holding clients to limits.

A reconnect storm replays about ten events to each of thousands of sockets, and ASGI sends one
message per `send`: with uvicorn that is one frame, one `transport.write` and so one system call
per message, where one per socket would do. This protocol (what `python -m app
serve` runs, `app.asgi.server_options`) advertises the ASGI extension `SEND_TEXTS_EXTENSION` in
the websocket scope and then accepts one more message type, `SEND_TEXTS`, whose `texts` it frames
one by one and writes together. Everything else is uvicorn's `websockets-sansio` protocol as is;
under another server the extension is absent and `app.graphql.ws.sending` sends one message at a
time.

A client that does not read cannot hold the server's memory: the app's `websocket.close` is
written behind what the transport holds without waiting for it to drain (uvicorn's `send` waits
for the transport to be writable first, for ever if the client never reads), and if the client
has not answered the close within uvicorn's close timeout, the connection is aborted, its unsent
bytes dropped (uvicorn's `transport.close()` would keep them until they are read). A websocket
ping frame is answered by uvicorn at once, outside the app's bounded send queue: while more than
`MAX_UNREAD_BYTES` wait in the transport, a ping is not answered but closes the socket (4400,
a ping flood).

It is also where slow and greedy clients are cut off (`ConnectionLimits`, from
`ORDERPULSE_HTTP_READ_TIMEOUT_SECONDS` and `ORDERPULSE_MAX_CONNECTIONS_PER_ADDRESS`): uvicorn
closes a keep-alive connection idle for `timeout_keep_alive`, but waits for ever for a request's
head or body, and takes every connection it is given. `UpgradingHttpProtocol` closes a connection
whose request head is not complete within the read timeout of its first byte (or of the
connection's opening: an idle new connection), answering 408, and one whose body is not complete
within the read timeout of its head; and, with a cap, refuses (503, closed) a connection from a
peer address that already holds that many, counting a websocket it upgraded to until it closes.

A websocket handshake goes to websockets as uvicorn hands it over (the request written out and
parsed again by websockets); handing it the request httptools had parsed saves memory but no CPU
(docs/KERNEL.md has the measurement).

Both protocols are subclasses of uvicorn's and read the state uvicorn keeps on them: the HTTP
protocol's `client`, `cycle`, `parser`, `transport` and `_should_upgrade()`; the websocket
protocol's `conn` (websockets' sans-I/O `ServerProtocol`, through its public methods),
`writable`, `disconnected`, `handshake_complete`, `initial_response`, `close_sent`,
`close_timer`, `close_timeout`, `queue` and `scope`. The versions they are tested with are in
docs/KERNEL.md (tests/graphql/test_ws_server_protocol.py, tests/test_hostile_http.py).

It also writes one INFO line per websocket, not two: uvicorn logs the accepted handshake
(`"WebSocket /graphql" [accepted]`, with the client's address), and websockets' protocol logs
`connection open` right after it on the same logger, saying nothing more. That second line is
left out; websockets' other lines (`connection closed`, its errors) are written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from app.observability import metrics

SEND_TEXTS_EXTENSION = "orderpulse.websocket.send_texts"
"""In `scope["extensions"]` when the server takes `SEND_TEXTS` messages."""
SEND_TEXTS = "orderpulse.websocket.send_texts"
"""`{"type": SEND_TEXTS, "texts": [str, ...]}`: each text one websocket message, in order."""


MAX_UNREAD_BYTES = 1024 * 1024
"""Bytes waiting in the transport past which a websocket ping frame closes the socket."""


@dataclass
class ConnectionLimits:
    """What one server's connections may take: `read_timeout_seconds` to send a request's head,
    and its body; at most `max_per_address` open connections per peer address (0: no cap). One
    instance per server: it counts the connections of each address."""

    read_timeout_seconds: float = 10.0
    max_per_address: int = 0
    open_by_address: dict[str, int] = field(default_factory=dict)

    def take(self, address: str) -> bool:
        """Count one more connection of `address`; False (not counted) at the cap."""
        held = self.open_by_address.get(address, 0)
        if self.max_per_address and held >= self.max_per_address:
            return False
        self.open_by_address[address] = held + 1
        return True

    def give_back(self, address: str) -> None:
        held = self.open_by_address.get(address, 0) - 1
        if held > 0:
            self.open_by_address[address] = held
        else:
            self.open_by_address.pop(address, None)

    def __getstate__(self) -> dict[str, Any]:
        """`serve --workers N` sends these to each worker: each counts its own connections."""
        return {**self.__dict__, "open_by_address": {}}


_TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 38\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    b"Too many connections from this address"
)
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 33\r\nconnection: close\r\n\r\n"
    b"The request was not sent in time."
)


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
        self.release_connection: Callable[[], None] | None = None
        """Gives back the connection's place under its address's cap (set by the HTTP protocol
        that upgraded it)."""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.release_connection is not None:
            self.release_connection()
            self.release_connection = None
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        """uvicorn's, plus `SEND_TEXTS_EXTENSION` in the app's scope."""
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
    """uvicorn's httptools protocol, holding clients to `limits` (see the module's docstring),
    a websocket it upgrades to included.
    `python -m app serve` gives each server its own limits (`app.asgi.server_options`)."""

    def __init__(self, *args: Any, limits: ConnectionLimits | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits or ConnectionLimits()
        self.address: str | None = None
        """The peer address whose count this connection is in (None: not counted)."""
        self.read_deadline: asyncio.TimerHandle | None = None
        self.reading_head = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else None
        if address is not None and not self.limits.take(address):
            metrics.connection_closed(kind="address_cap")
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self.address = address
        self._read_within_timeout()  # a connection that sends nothing is closed as well

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_reading_deadline()
        self._release()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_head = True
        if self.read_deadline is None:  # a later request on a kept-alive connection
            self._read_within_timeout()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.reading_head = False
        self._stop_reading_deadline()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._read_within_timeout()  # the body, if any, within a period of its own

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_reading_deadline()

    def _read_within_timeout(self) -> None:
        self.read_deadline = self.loop.call_later(
            self.limits.read_timeout_seconds, self._read_timed_out
        )

    def _stop_reading_deadline(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def _read_timed_out(self) -> None:
        """Too slow: a head in progress gets a 408; an idle connection or a request whose body
        the app is waiting for is just closed (the app sees the client leave)."""
        self.read_deadline = None
        if self.transport.is_closing():
            return
        metrics.connection_closed(kind="read_timeout")
        if self.reading_head and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMED_OUT)
        self.transport.close()

    def _release(self) -> None:
        if self.address is not None:
            self.limits.give_back(self.address)
            self.address = None

    def handle_websocket_upgrade(self) -> None:
        self._stop_reading_deadline()
        address, self.address = self.address, None  # the websocket's protocol gives it back
        super().handle_websocket_upgrade()
        protocol = self.transport.get_protocol()
        if address is None:
            return
        if isinstance(protocol, BatchingWebSocketProtocol):
            protocol.release_connection = functools.partial(self.limits.give_back, address)
        else:
            self.limits.give_back(address)
