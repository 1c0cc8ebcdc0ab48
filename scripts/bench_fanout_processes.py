#!/usr/bin/env python3
"""Fan-out across two server processes: one failure reported to A reaches subscribers on A and B.

    .venv/bin/python scripts/bench_fanout_processes.py [--subscribers 500,2000] [--transport both]

For each N and transport (PostgreSQL LISTEN/NOTIFY, Redis pub/sub) it makes a PostgreSQL database,
seeds one order in PR, starts two `python -m app serve` processes (A and B; the fan-out's safety
poll set to a minute, so the wake-up can only come through the transport), opens N
`orderStatusChanged` subscribers as the order's reseller, half on A and half on B, reports one
provisioning failure to A over HTTP, and prints the delivery latency (from just before the
mutation is sent to the moment each subscriber has parsed its message) on A and on B: p50, p99,
max. Talks only to 127.0.0.1; every wait is bounded; the database is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from typing import Any

import benchlib as b
import websockets

SUBSCRIBE = "subscription { orderStatusChanged { to order { number } } }"
REPORT = """mutation($id: ID!) { reportProvisioningResult(input: {orderId: $id, outcome: FAILED,
  reason: EXTERNAL_SYSTEM_ERROR}) { order { status } userErrors { code } } }"""
REDIS_URL = "redis://127.0.0.1:6379/0"


async def subscriber(port: int, token: str, ready: asyncio.Event, out: list[float]) -> Any:
    ws = await websockets.connect(
        f"ws://127.0.0.1:{port}/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        open_timeout=60,
        ping_interval=None,
    )
    await ws.send(
        json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
    )
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))

    async def receive() -> None:
        await ready.wait()
        async with asyncio.timeout(60):
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "next":
                    assert message["payload"]["data"]["orderStatusChanged"]["to"] == "PF"
                    out.append(time.perf_counter())
                    return

    return ws, asyncio.create_task(receive())


def line(name: str, started: float, times: list[float], expected: int) -> str:
    if not times:
        return f"  {name}: nothing received of {expected}"
    ms = sorted((t - started) * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    return (
        f"  {name}: {len(ms)}/{expected} received, p50 {statistics.median(ms):7.1f} ms, "
        f"p99 {p99:7.1f} ms, max {ms[-1]:7.1f} ms"
    )


async def run(subscribers: int, transport: str) -> None:
    url = await b.create_pg_database("op_fanout")
    servers: list[b.Server] = []
    sockets: list[Any] = []
    try:
        await b.migrate(url)
        await b.seed_core(url, orders=1, customers=1, resellers=1, statuses=["PR"])
        from app.graphql.ids import to_global_id

        reseller = await b.make_token(url, "RESELLER", reseller_id=1)
        system = await b.make_token(url, "SYSTEM")
        env = {"ORDERPULSE_FANOUT_POLL_SECONDS": "60"}
        if transport == "redis":
            env["ORDERPULSE_REDIS_URL"] = REDIS_URL
        servers = [b.start_server(url, extra_env=env) for _ in range(2)]
        ready = asyncio.Event()
        on_a: list[float] = []
        on_b: list[float] = []
        tasks = []
        for i in range(subscribers):
            server, out = (servers[0], on_a) if i % 2 == 0 else (servers[1], on_b)
            ws, task = await subscriber(server.port, reseller, ready, out)
            sockets.append(ws)
            tasks.append(task)
        await asyncio.sleep(2.0)  # let every subscription register with its fan-out
        ready.set()
        conn = b.HttpConnection(servers[0].port)
        body, headers = b.graphql_request(system, REPORT, {"id": str(to_global_id("Order", 1))})
        started = time.perf_counter()
        status, payload = await conn.post("/graphql", body, headers)
        assert status == 200 and b'"PF"' in payload, payload
        await conn.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(f"{subscribers} subscribers, {transport} transport, failure reported to A:")
        print(line("on A", started, on_a, (subscribers + 1) // 2))
        print(line("on B", started, on_b, subscribers // 2), flush=True)
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for server in servers:
            server.stop()
        await b.drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--subscribers", default="500,2000")
    parser.add_argument("--transport", choices=["postgres", "redis", "both"], default="both")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    kinds = ["postgres", "redis"] if args.transport == "both" else [args.transport]
    for n in (int(x) for x in args.subscribers.split(",")):
        for kind in kinds:
            asyncio.run(run(n, kind))


if __name__ == "__main__":
    main()
