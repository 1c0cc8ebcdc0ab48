"""A token's websockets: capped in number (4429), closed when it is revoked (4403)."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack

import pytest
from websockets.exceptions import ConnectionClosed

from app.access.tokens import revoke_token
from app.services import Services
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.ws import ws_client

CHANGES = "subscription { orderStatusChanged { to } }"


async def init_answer(server: LiveServer, token: str) -> object:
    """connection_ack, or the (code, reason) the socket was closed with, for a new socket."""
    async with ws_client(server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        try:
            return await ws.receive()
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None


@pytest.mark.parametrize("settings_overrides", [{"max_sockets_per_token": 2}])
async def test_one_socket_more_than_a_token_may_have_is_closed_4429(
    live_server: LiveServer, factory: Factory
) -> None:
    token = await factory.token("SUPPORT")
    other = await factory.token("SUPPORT")
    ack = {"type": "connection_ack"}
    async with AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(ws_client(live_server.ws_url)) for _ in range(2)]
        for ws in sockets:
            assert await ws.init(token) == ack
        assert await init_answer(live_server, token) == (
            4429,
            "Too many open websockets for this token",
        )
        assert await init_answer(live_server, other) == ack
        await sockets[0].connection.close()
        async with asyncio.timeout(5):  # until the server has seen the socket go
            while (answer := await init_answer(live_server, token)) != ack:
                assert answer == (4429, "Too many open websockets for this token")
        assert await sockets[1].until_pong() == []


@pytest.mark.parametrize("settings_overrides", [{"token_check_seconds": 0.2}])
async def test_revoking_a_token_closes_its_open_sockets_4403(
    live_server: LiveServer, factory: Factory, services: Services
) -> None:
    token = await factory.token("SUPPORT")
    kept = await factory.token("SUPPORT")
    async with AsyncExitStack() as stack:
        revoked_sockets = []
        for _ in range(2):
            ws = await stack.enter_async_context(ws_client(live_server.ws_url))
            assert await ws.init(token) == {"type": "connection_ack"}
            await ws.subscribe("1", CHANGES)
            assert await ws.until_pong() == []
            revoked_sockets.append(ws)
        survivor = await stack.enter_async_context(ws_client(live_server.ws_url))
        assert await survivor.init(kept) == {"type": "connection_ack"}
        async with services.transaction() as session:
            assert await revoke_token(session, token=token, now=services.clock.now())
        started = time.monotonic()
        for ws in revoked_sockets:
            assert await ws.closed_with(timeout=5) == (4403, "Forbidden")
        assert time.monotonic() - started < 5
        assert await survivor.until_pong() == []
        assert services.fanout.audience_count == 0
