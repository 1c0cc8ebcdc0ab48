#!/usr/bin/env python3
"""Incident benchmark (SPEC 10): resubmitting an incident of 1,000 orders with 1,000 open panels.

    .venv/bin/python scripts/bench_incident.py                       # PostgreSQL, 1000 / 1000
    .venv/bin/python scripts/bench_incident.py --database sqlite --orders 200 --panels 200

It migrates a fresh database, seeds `--resellers` resellers with one customer each and
`--orders` orders in PR spread over them, starts `python -m app serve` (one process, 127.0.0.1, a
free port), and has the provisioning platform report every order FAILED with one reason over
HTTP (`--concurrency` clients): the first `ORDERPULSE_INCIDENT_THRESHOLD` open an incident, the
rest join it. It prints that phase's failures per second (each one decides about the incident
under its reason's lock). Then `--panels` websocket subscribers (`orderStatusChanged`, as the
panel subscribes) connect from `--client-processes` separate processes: reseller panels spread
over the resellers (each sees its reseller's orders) and `--support-panels` of them support's
(each sees every order). Then support calls `resubmitIncidentOrders` once, and the script prints:

- until all are PR: from just before the mutation is sent to its answer (the orders' changes,
  events and history commit in its one transaction);
- until every panel has seen every change: to the moment the last expected `PF -> PR` change
  reached the last subscriber's process (bytes timestamped as they arrive; CLOCK_MONOTONIC is
  shared by the processes of one machine), with p50/p99 over the panels' last arrivals;
- the server's CPU seconds over that window (steadier than wall time on a shared machine).

Talks only to 127.0.0.1, stops by itself (every wait is bounded), and removes what it made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlib as b

REASON = "EXTERNAL_SYSTEM_ERROR"
SUBSCRIPTION = """subscription Panel($after: String) {
  orderStatusChanged(after: $after) { cursor from to order { id number status version } } }"""
FAIL = """mutation($o: ID!) { reportProvisioningResult(input: {orderId: $o, outcome: FAILED,
    reason: EXTERNAL_SYSTEM_ERROR}) { order { status incident { id } } userErrors { code } } }"""
RESUBMIT = """mutation($i: ID!) { resubmitIncidentOrders(input: {incidentId: $i,
    comment: "bench"}) { resubmitted skipped incident { pendingCount } userErrors { code } } }"""
INCIDENTS = "{ incidents(filter: {status: OPEN}) { edges { node { id orderCount } } } }"
SOCKETS_PER_TOKEN = 40  # under ORDERPULSE_MAX_SOCKETS_PER_TOKEN (50)
CONNECT_CONCURRENCY = 100
READY_TIMEOUT = 300.0
DELIVERY_TIMEOUT = 120.0


# --- the panels (client processes) --------------------------------------------------------------


def client_main() -> None:
    """A client process: its panels come as one JSON line on stdin; it answers on stdout."""
    spec = json.loads(sys.stdin.readline())
    asyncio.run(run_panels(spec))


async def run_panels(spec: dict[str, Any]) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{spec['port']}/graphql"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    go = asyncio.Event()
    results: list[tuple[int, int, float | None]] = []  # (expected, got, last arrival)

    async def panel(token: str, expected: int, ready: asyncio.Future[None]) -> None:
        async with gate:
            socket = await connect(url, subprotocols=["graphql-transport-ws"], max_queue=None)  # type: ignore[list-item]
            await socket.send(
                json.dumps(
                    {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
                )
            )
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            payload = {"query": SUBSCRIPTION, "variables": {}}
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            await socket.send(json.dumps({"type": "ping"}))  # answered once the subscribe is in
            while json.loads(await socket.recv())["type"] != "pong":
                pass
        ready.set_result(None)
        got, last = 0, None
        try:
            await go.wait()
            async with asyncio.timeout(DELIVERY_TIMEOUT):
                while got < expected:
                    raw = await socket.recv()
                    at = time.monotonic()
                    if '"to":"PR"' in raw or '"to": "PR"' in raw:
                        got, last = got + 1, at
        except TimeoutError:
            pass
        finally:
            results.append((expected, got, last))
            await socket.close()

    readies = []
    tasks = []
    loop = asyncio.get_running_loop()
    for item in spec["panels"]:
        ready: asyncio.Future[None] = loop.create_future()
        readies.append(ready)
        tasks.append(asyncio.create_task(panel(item["token"], item["expected"], ready)))
    await asyncio.wait_for(asyncio.gather(*readies), READY_TIMEOUT)
    say({"ready": len(readies)})
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    go.set()
    await asyncio.gather(*tasks)
    say({"results": results})


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def read_line(process: subprocess.Popen[str], key: str) -> dict[str, Any]:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process ended before {key!r}")
        message: dict[str, Any] = json.loads(line)
        if key in message:
            return message


# --- the run ----------------------------------------------------------------------------------


async def seed(
    url: str, args: argparse.Namespace
) -> tuple[list[str], dict[int, list[str]], list[str], list[str], dict[int, int]]:
    """Orders (global ids), reseller tokens by reseller, support and system tokens, and how many
    orders each reseller has."""
    from app.graphql.ids import to_global_id

    await b.migrate(url)
    seeded = await b.seed_core(
        url, orders=args.orders, customers=args.resellers, resellers=args.resellers, statuses=["PR"]
    )
    order_ids = await seeded.order_ids(url)
    per_reseller = {r: 0 for r in seeded.reseller_ids}
    customers = sorted(seeded.customer_ids)
    # seed_core: order i belongs to customer i % customers, customer c to reseller c % resellers
    for i in range(args.orders):
        customer_index = i % len(customers)
        per_reseller[seeded.reseller_ids[customer_index % args.resellers]] += 1
    reseller_panels = args.panels - args.support_panels
    tokens_each = max(1, math.ceil(reseller_panels / args.resellers / SOCKETS_PER_TOKEN))
    reseller_tokens = {
        r: await b.make_tokens(url, "RESELLER", tokens_each, reseller_id=r)
        for r in seeded.reseller_ids
    }
    support = await b.make_tokens(
        url, "SUPPORT", max(1, math.ceil(args.support_panels / SOCKETS_PER_TOKEN))
    )
    system = await b.make_tokens(url, "SYSTEM", 1)
    return (
        [str(to_global_id("Order", pk)) for pk in order_ids],
        reseller_tokens,
        support,
        system,
        per_reseller,
    )


async def report_failures(port: int, token: str, order_ids: list[str], concurrency: int) -> float:
    """Every order reported FAILED with one reason; the seconds it took."""
    queue = list(order_ids)
    headers = {"Authorization": f"Bearer {token}"}

    async def worker() -> None:
        connection = b.HttpConnection(port)
        while queue:
            order_id = queue.pop()
            body = json.dumps({"query": FAIL, "variables": {"o": order_id}}).encode()
            status, answer = await connection.post("/graphql", body, headers)
            data = json.loads(answer)
            assert status == 200 and "errors" not in data, answer[:300]
            assert data["data"]["reportProvisioningResult"]["userErrors"] == [], answer[:300]

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


async def graphql(
    port: int, token: str, query: str, variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    connection = b.HttpConnection(port)
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    status, answer = await connection.post("/graphql", body, {"Authorization": f"Bearer {token}"})
    data: dict[str, Any] = json.loads(answer)
    assert status == 200 and "errors" not in data, answer[:300]
    return data["data"]


def server_cpu_seconds(server: b.Server) -> float:
    """CPU seconds used so far by the server's processes (not its database's)."""
    pgid = os.getpgid(server.process.pid)
    return sum(b.process_cpu_seconds(pid) for pid in b.group_pids(pgid))


def run(args: argparse.Namespace, directory: Path) -> None:
    if args.database == "postgres":
        url = asyncio.run(b.create_pg_database("op_bench_incident"))
    else:
        url = b.sqlite_url(directory)
    server = None
    clients: list[subprocess.Popen[str]] = []
    try:
        order_ids, reseller_tokens, support_tokens, (system,), per_reseller = asyncio.run(
            seed(url, args)
        )
        server = b.start_server(
            url,
            extra_env={
                "ORDERPULSE_SMTP_URL": "",
                "ORDERPULSE_INCIDENT_THRESHOLD": "5",
                "ORDERPULSE_WS_QUEUE_SIZE": str(max(256, args.orders + 16)),
            },
        )
        seconds = asyncio.run(report_failures(server.port, system, order_ids, args.concurrency))
        print(
            f"{len(order_ids)} failures with one reason: {seconds:.2f} s, "
            f"{len(order_ids) / seconds:.0f}/s ({args.concurrency} clients)"
        )
        (incident,) = asyncio.run(graphql(server.port, support_tokens[0], INCIDENTS))["incidents"][
            "edges"
        ]
        assert incident["node"]["orderCount"] == args.orders, incident

        panels: list[dict[str, Any]] = []
        reseller_ids = sorted(reseller_tokens)
        for i in range(args.panels - args.support_panels):
            reseller = reseller_ids[i % len(reseller_ids)]
            tokens = reseller_tokens[reseller]
            panels.append(
                {
                    "token": tokens[(i // len(reseller_ids)) % len(tokens)],
                    "expected": per_reseller[reseller],
                }
            )
        for i in range(args.support_panels):
            panels.append(
                {"token": support_tokens[i // SOCKETS_PER_TOKEN], "expected": args.orders}
            )
        for k in range(args.client_processes):
            process = subprocess.Popen(
                [sys.executable, __file__, "--client"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert process.stdin is not None
            process.stdin.write(
                json.dumps({"port": server.port, "panels": panels[k :: args.client_processes]})
                + "\n"
            )
            process.stdin.flush()
            clients.append(process)
        for process in clients:
            read_line(process, "ready")
        print(
            f"{len(panels)} panels subscribed ({args.support_panels} support, the rest resellers')"
        )
        time.sleep(1.0)

        for process in clients:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        cpu_before = server_cpu_seconds(server)
        t0 = time.monotonic()
        answer = asyncio.run(
            graphql(server.port, support_tokens[0], RESUBMIT, {"i": incident["node"]["id"]})
        )
        all_pr = time.monotonic() - t0
        payload = answer["resubmitIncidentOrders"]
        assert payload["userErrors"] == [] and payload["resubmitted"] == args.orders, payload
        lasts: list[float] = []
        missing = 0
        for process in clients:
            for expected, got, last in read_line(process, "results")["results"]:
                missing += expected - got
                if last is not None:
                    lasts.append((last - t0) * 1000)
        cpu = server_cpu_seconds(server) - cpu_before
        print(
            f"resubmitIncidentOrders of {args.orders} orders: all PR after {all_pr * 1000:.0f} ms"
        )
        print(
            f"every panel saw every change after {max(lasts):.0f} ms "
            f"(per panel, the last change: p50 {b.percentile(lasts, 50):.0f} ms, "
            f"p99 {b.percentile(lasts, 99):.0f} ms); changes missing: {missing}"
        )
        print(f"server process CPU from the mutation to the last delivery: {cpu:.2f} s")
    finally:
        for process in clients:
            if process.poll() is None:
                process.kill()
        if server is not None:
            server.stop()
        if args.database == "postgres":
            asyncio.run(b.drop_pg_database(url))


def main() -> None:
    if "--client" in sys.argv:
        client_main()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--panels", type=int, default=1000)
    parser.add_argument("--support-panels", type=int, default=10)
    parser.add_argument("--resellers", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--client-processes", type=int, default=2)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="orderpulse-bench-incident-"))
    try:
        run(args, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
