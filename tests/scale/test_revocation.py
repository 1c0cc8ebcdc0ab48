"""Revoking a token ends its open websockets on every server process within 5 s (close 4403).

Two `python -m app serve` processes on one PostgreSQL database, with the default settings; the
token is revoked with the command line, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.support.api import Factory
from tests.support.processes import ROOT, ServerProcess, run_app

pytestmark = pytest.mark.postgres

CHANGES = "subscription { orderStatusChanged { to } }"


async def open_subscription(server: ServerProcess, token: str) -> websockets.ClientConnection:
    ws = await websockets.connect(server.endpoint.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    async with asyncio.timeout(10):
        assert json.loads(await ws.recv()) == {"type": "connection_ack"}
    payload = {"query": CHANGES}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    await ws.send(json.dumps({"type": "ping"}))
    async with asyncio.timeout(10):
        assert json.loads(await ws.recv()) == {"type": "pong"}
    return ws


async def close_code(ws: websockets.ClientConnection, timeout: float) -> tuple[int, str] | None:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None


async def test_a_revoked_tokens_sockets_close_on_every_process_within_5_seconds(
    two_servers: list[ServerProcess], scale_database_url: str, rows: Factory, tmp_path: object
) -> None:
    a, b = two_servers
    token = await rows.token("SUPPORT")
    kept = await rows.token("SUPPORT")
    revoked_sockets = [await open_subscription(server, token) for server in (a, b)]
    kept_sockets = [await open_subscription(server, kept) for server in (a, b)]
    env = {**os.environ, "ORDERPULSE_DATABASE_URL": scale_database_url, "PYTHONPATH": str(ROOT)}
    revoked = await asyncio.to_thread(run_app, env, tmp_path, "token", "revoke", stdin=token)
    assert revoked.returncode == 0, revoked.stderr
    started = time.monotonic()
    codes = await asyncio.gather(*(close_code(ws, timeout=5) for ws in revoked_sockets))
    elapsed = time.monotonic() - started
    assert codes == [(4403, "Forbidden"), (4403, "Forbidden")]
    assert elapsed < 5
    for ws in kept_sockets:
        await ws.send(json.dumps({"type": "ping"}))
        async with asyncio.timeout(5):
            assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.close()
