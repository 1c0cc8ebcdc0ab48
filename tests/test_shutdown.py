"""SIGTERM: the server stops accepting, closes websockets with 1012 (clients resume with `after`),
and finishes the requests in flight within ORDERPULSE_SHUTDOWN_GRACE_SECONDS. A real
`python -m app serve` process, a real websocket, and an HTTP request whose body is still arriving
when the signal comes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import websockets
from websockets.exceptions import ConnectionClosed

from tests.support.processes import ROOT, ServerProcess, run_cli, server_env

QUERY = json.dumps({"query": "{ viewer { role } }"}).encode()


async def test_sigterm_closes_websockets_1012_and_finishes_requests_in_flight(
    tmp_path: Path,
) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'shutdown.db'}", shutdown_grace_seconds="10")
    token = run_cli(
        {**env, "PYTHONPATH": str(ROOT)}, tmp_path, "token", "create", "--role", "support"
    )
    server = ServerProcess.launch(env, log_dir=tmp_path, name="server")
    try:
        await server.wait_ready()
        ws = await websockets.connect(server.endpoint.ws_url, subprotocols=["graphql-transport-ws"])  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}

        # a request in flight: its headers and half its body are sent before the signal
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = (
            f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(QUERY)}\r\n\r\n"
        ).encode()
        writer.write(head + QUERY[:10])
        await writer.drain()
        await asyncio.sleep(0.2)  # let the server start the request (no deadline depends on it)

        os.kill(server.process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1012
        # no longer accepting
        refused = False
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.close()
        except OSError:
            refused = True
        assert refused

        writer.write(QUERY[10:])
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        status_line, _, rest = response.partition(b"\r\n")
        assert status_line == b"HTTP/1.1 200 OK", response
        assert rest.split(b"\r\n\r\n", 1)[1] == b'{"data":{"viewer":{"role":"SUPPORT"}}}'
        # uvicorn re-raises the signal once it has shut down, so the status tells it was SIGTERM
        assert await asyncio.to_thread(server.process.wait, 10) in (0, -signal.SIGTERM)
        assert "Finished server process" in server.log_tail(), server.log_tail()
    finally:
        server.stop()
