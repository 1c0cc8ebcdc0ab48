#!/usr/bin/env python3
"""What a websocket costs uvicorn itself, per implementation: handshake, one init and its ack.

    .venv/bin/python scripts/bench_ws_handshake.py [--sockets 3000] [--rounds 2]
        [--ws websockets-sansio,websockets,wsproto,ours]

For each `--ws` (uvicorn's `ws` setting; `ours` is app.kernel.uvicorn, what `python
-m app serve` runs), a uvicorn process serves a do-nothing graphql-transport-ws app (it accepts,
answers `connection_init` with `connection_ack`, and ignores the rest) with the server's own
settings (`app.asgi.server_options`, INFO logs to a file, as `serve`), and the reconnect
benchmark's Node client (scripts/reconnect/storm.mjs) opens `--sockets` sockets at once, 500 at a
time. Printed: the server's CPU per socket (user + system, from /proc) and the time until all are
acknowledged; with `--rounds`, the median. The Node client shares the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import benchlib as b

IMPLEMENTATIONS = {
    "ours": "app.kernel.uvicorn:BatchingWebSocketProtocol",
    "websockets-sansio": "websockets-sansio",
    "websockets": "websockets",
    "wsproto": "wsproto",
}


async def do_nothing(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept; ack the init; ignore the rest."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
    while (message := await receive())["type"] == "websocket.receive":
        if '"connection_init"' in (message.get("text") or ""):
            await send({"type": "websocket.send", "text": '{"type":"connection_ack"}'})


def serve(ws: str, port: int) -> None:
    import uvicorn

    from app.asgi import server_options
    from app.observability.logs import logging_config
    from app.settings import Settings

    options = {**server_options(Settings()), "ws": IMPLEMENTATIONS[ws]}
    uvicorn.run(
        "bench_ws_handshake:do_nothing",
        port=port,
        log_level="info",
        log_config=logging_config("text"),
        ws_ping_interval=20,
        ws_ping_timeout=20,
        **options,
    )


async def listening(port: int) -> None:
    """Until something accepts connections on `port` (30 s at most)."""
    async with asyncio.timeout(30):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return


async def one_storm(ws: str, sockets: int, directory: Path) -> tuple[float, float]:
    port = b.free_port()
    log = (directory / f"{ws}.log").open("ab")
    server = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, __file__, "--serve", ws, "--port", str(port)],
        cwd=Path(__file__).parent,
        env={**os.environ, "PYTHONPATH": f"{b.ROOT}:{Path(__file__).parent}"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        await listening(port)
        before = b.process_cpu_seconds(server.pid)
        storm = await b.start_storm_client()
        assert storm.stdin is not None and storm.stdout is not None
        config = {
            "url": f"ws://127.0.0.1:{port}/graphql",
            "tokens": ["t"],
            "query": "subscription { x }",
            "cursors": [],
            "starts": [-1] * sockets,
            "connectConcurrency": 500,
            "timeoutMs": 120_000,
        }
        storm.stdin.write((json.dumps(config) + "\n").encode())
        await storm.stdin.drain()
        caught = json.loads(await asyncio.wait_for(storm.stdout.readline(), 180))["caughtUp"]
        cpu = b.process_cpu_seconds(server.pid) - before
        storm.stdin.write(b"stop\n")
        await storm.stdin.drain()
        await asyncio.wait_for(storm.wait(), 30)
        if caught["acked"] != sockets:
            raise RuntimeError(f"{ws}: {caught['acked']} of {sockets} acked: {caught['problems']}")
        return cpu * 1000 / sockets, caught["ackedMs"] / 1000
    finally:
        server.terminate()
        server.wait(10)
        log.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--ws", default=",".join(IMPLEMENTATIONS))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args()


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="orderpulse-ws-") as directory:
        for _ in range(args.rounds):
            for ws in args.ws.split(","):
                cpu, seconds = await one_storm(ws, args.sockets, Path(directory))
                results.setdefault(ws, []).append((cpu, seconds))
                print(
                    f"{ws:<18} {args.sockets} sockets: {cpu:.2f} ms of server CPU each,"
                    f" all acked in {seconds:.2f} s",
                    flush=True,
                )
    if args.rounds > 1:
        for ws, runs in results.items():
            print(
                f"median of {len(runs)}: {ws:<18} {statistics.median(c for c, _ in runs):.2f} ms"
                f" per socket, all acked in {statistics.median(s for _, s in runs):.2f} s"
            )


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:  # the server process of one storm
        serve(arguments.serve, arguments.port)
    else:
        asyncio.run(main(arguments))
