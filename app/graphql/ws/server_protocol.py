"""uvicorn's websockets protocol, able to send several text messages in one write.

A reconnect storm replays about ten events to each of thousands of sockets, and ASGI sends one
message per `send`: with uvicorn that is one frame, one `transport.write` and so one system call
per message, about a quarter of the server's time in a storm. This protocol (what `python -m app
serve` runs, `app.asgi.server_options`) advertises the ASGI extension `SEND_TEXTS_EXTENSION` in
the websocket scope and then accepts one more message type, `SEND_TEXTS`, whose `texts` it frames
one by one and writes together. Everything else is uvicorn's `websockets-sansio` protocol as is;
under another server the extension is absent and `app.graphql.ws.sending` sends one message at a
time.

It also keeps one of the two INFO lines each websocket cost: uvicorn logs the accepted handshake
(`"WebSocket /graphql" [accepted]`, with the client's address), and websockets' protocol logged
`connection open` right after it on the same logger, saying nothing more. The second line is no
longer written; websockets' other lines (`connection closed`, its errors) are.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

SEND_TEXTS_EXTENSION = "orderpulse.websocket.send_texts"
"""In `scope["extensions"]` when the server takes `SEND_TEXTS` messages."""
SEND_TEXTS = "orderpulse.websocket.send_texts"
"""`{"type": SEND_TEXTS, "texts": [str, ...]}`: each text one websocket message, in order."""


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
