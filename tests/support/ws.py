"""A graphql-transport-ws client over a real websocket (the `websockets` library), for tests."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

PROTOCOL = "graphql-transport-ws"
TIMEOUT = 5.0


class WSClient:
    """One websocket; every wait is bounded by `TIMEOUT` seconds."""

    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.connection.send(message if isinstance(message, str) else json.dumps(message))

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        message: dict[str, Any] = json.loads(raw)
        return message

    async def receive_text(self, timeout: float = TIMEOUT) -> str:
        """The next message as the server wrote it (to compare two servers byte for byte)."""
        raw = await asyncio.wait_for(self.connection.recv(), timeout)
        assert isinstance(raw, str), raw
        return raw

    async def init(self, token: str | None, *, key: str = "Authorization") -> dict[str, Any]:
        """connection_init with the token; return the server's answer (connection_ack)."""
        payload = {key: f"Bearer {token}"} if token is not None else {}
        await self.send({"type": "connection_init", "payload": payload})
        return await self.receive()

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        await self.send({"id": id, "type": "subscribe", "payload": payload})

    async def next(self, id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message, which must be a `next` without errors for `id`; its data."""
        message = await self.receive(timeout)
        assert message["type"] == "next" and message["id"] == id, message
        assert "errors" not in message["payload"], message
        data: dict[str, Any] = message["payload"]["data"]
        return data

    async def until_pong(self, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Ping, then every message that arrives before the pong (the server answers in order)."""
        await self.send({"type": "ping"})
        messages = []
        async with asyncio.timeout(timeout):
            while (message := await self.receive()).get("type") != "pong":
                messages.append(message)
        return messages

    async def nothing_within(self, seconds: float) -> None:
        """Assert no message arrives within `seconds`."""
        try:
            message = await asyncio.wait_for(self.connection.recv(), seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected message {message!r}")

    async def closed_with(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None]:
        """Wait for the server to close the socket (ignoring messages); its code and reason."""
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.connection.recv()
            except ConnectionClosed as closed:
                frame = closed.rcvd
                return (frame.code, frame.reason) if frame else (None, None)


@asynccontextmanager
async def ws_client(
    url: str,
    *,
    subprotocols: list[str] | None = None,
    origin: str | None = None,
    max_queue: int | None = 1024,
    receive_buffer: int | None = None,
    open_timeout: float = TIMEOUT,
) -> AsyncIterator[WSClient]:
    """A client socket; `receive_buffer` shrinks its kernel buffer (to play a stuck client)."""
    protocols = [PROTOCOL] if subprotocols is None else subprotocols
    sock = None
    if receive_buffer is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        sock.connect((host, int(port)))
    async with connect(
        url,
        sock=sock,
        subprotocols=protocols,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=open_timeout,
        close_timeout=1,
        ping_interval=None,
        compression=None,
        max_queue=max_queue,
    ) as connection:
        yield WSClient(connection)


@asynccontextmanager
async def connected(url: str, token: str, **options: Any) -> AsyncIterator[WSClient]:
    """A socket past `connection_ack` (`options` go to `ws_client`)."""
    async with ws_client(url, **options) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        yield ws
