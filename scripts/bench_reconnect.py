#!/usr/bin/env python3
"""Reconnect-storm benchmark: N panels come back at once after a deploy, each resuming with `after`.

    .venv/bin/python scripts/bench_reconnect.py [--subscribers 10000] [--backlog 20]
        [--workers 1] [--peer] [--database sqlite|postgres] [--server-env NAME=VALUE ...]
        [--baseline PATH] [--rounds N] [--py-spy PREFIX]

1. Migrates and seeds a fresh database (SQLite in a temporary directory, or a throwaway
   PostgreSQL database), starts `python -m app serve` on a free port, and writes `--backlog`
   status changes of one order (failures and resubmits, through the API) into the event log.
2. One Node process (scripts/reconnect/storm.mjs, raw graphql-transport-ws clients on the `ws`
   package; `npm ci` there on first use) opens N sockets as fast as it can (a connect window of
   `--connect-window` sockets at a time), each with its `connection_init` token (the order's
   reseller; one token per 40 sockets, under the per-token socket cap) and an
   `orderStatusChanged(after: $after)` subscription resuming from a cursor spread evenly over the
   backlog (client i resumes after backlog event i mod K). Each client checks that it receives
   exactly the events after its cursor, in order, once. Printed: the time until every client is
   caught up, the time until every `connection_ack`, and then one live change published through
   the API, its delivery p50/p99 to all N (proves every client is live).
3. While the storm lasts, two probes post a small panel query (`orders(first: 10)`) over HTTP
   every 50 ms, one on a new connection each time (a page being loaded), one over a kept-alive
   connection (an open panel); their p99s are printed (HTTP must still answer during the storm).
   A new connection first waits to be accepted behind the storm's connections (up
   to `--connect-window` of them): that wait is most of its time.
4. The server's peak RSS (VmHWM) and its growth per connected client after the storm.
5. With `--baseline PATH` (another checkout, e.g. /work/main), the same storm also runs against
   that checkout's server, just before this one's, for each worker count: an A/B in one run.
   `--rounds N` repeats the whole sequence N times (the machine's load varies) and prints the
   median time and server CPU per client of each server.
6. With `--peer`, the same client process runs against a Node graphql-js + graphql-ws server with
   in-memory pub/sub (scripts/reconnect/peer.mjs; no log, so no replay: its clients connect with
   no `after`), in every round after ours, and each round's ratio of the two storm times is
   printed, and with `--rounds N` their median.
7. `--py-spy PREFIX` samples every OrderPulse server process while its storm lasts (py-spy's
   collapsed stacks, idle frames left out: PREFIX-rROUND-wWORKERS-PID.txt).

The load generator (Node) shares the machine's cores with the server, so figures are a floor;
compare the ratio. Talks only to 127.0.0.1, stops by itself (every wait is bounded), and removes
its files and databases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as b

SUBSCRIPTION = """subscription Resume($after: String) {
  orderStatusChanged(after: $after) { cursor from to order { id number status version } }
}"""
PANEL_PROBE = "{ orders(first: 10) { edges { node { number status } } } }"
SOCKETS_PER_TOKEN = 40


@dataclass
class StormResult:
    name: str
    clients: int
    acked_ms: float
    caught_up_ms: float | None
    caught_up: int
    closed_early: int
    problems: list[str]
    live_received: int
    live_p50_ms: float
    live_p99_ms: float
    http_p99_ms: float | None
    http_requests: int
    http_failures: int
    kept_http_p99_ms: float | None
    kept_http_requests: int
    peak_rss_mb: float | None
    cpu_ms_per_client: float
    client_cpu_ms_per_client: float
    rss_per_client_kb: float | None
    peer_ratio: float | None = None  # this run's time over the peer's in the same round


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (robust to a busy machine)."""
    return sum(map(b.process_cpu_seconds, pids))


def process_tree(pid: int) -> list[int]:
    """The server and its worker processes (uvicorn's --workers children)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(p) for p in out.split())]


async def post_graphql(port: int, token: str, query: str, variables: dict[str, Any]) -> Any:
    conn = b.HttpConnection(port)
    try:
        body, headers = b.graphql_request(token, query, variables)
        status, payload = await conn.post("/graphql", body, headers)
        parsed = json.loads(payload)
        if status != 200 or parsed.get("errors"):
            raise RuntimeError(f"{status}: {payload[:300]!r}")
        return parsed["data"]
    finally:
        await conn.close()


REPORT = """mutation($id: ID!) { reportProvisioningResult(input: {orderId: $id, outcome: FAILED,
  reason: EXTERNAL_SYSTEM_ERROR}) { order { status } userErrors { message } } }"""
RESUBMIT = """mutation($id: ID!) { performOrderAction(input: {orderId: $id, action: RESUBMIT})
  { order { status } userErrors { message } } }"""


class OrderPulseTarget:
    """OrderPulse with a backlog of K events of one order, seen by that order's reseller."""

    def __init__(
        self,
        database: str,
        workers: int,
        directory: Path,
        server_env: dict[str, str],
        root: Path = b.ROOT,
    ) -> None:
        self.root = root
        self.database = database
        self.workers = workers
        self.directory = directory
        self.server_env = server_env
        self.url = ""
        self.server: b.Server | None = None
        self.order_id = ""
        self.support = ""
        self.tokens: list[str] = []
        self.toggles = 0

    async def start(self, clients: int, backlog: int) -> list[str]:
        if self.database == "postgres":
            self.url = await b.create_pg_database("op_bench_reconnect")
        else:
            self.url = b.sqlite_url(self.directory)
        await b.migrate(self.url)
        seeded = await b.seed_core(self.url, orders=200, customers=10, resellers=2)
        self.support = await b.make_token(self.url, "SUPPORT")
        reseller = seeded.reseller_ids[0]
        self.tokens = [
            await b.make_token(self.url, "RESELLER", reseller_id=reseller)
            for _ in range(max(1, -(-clients // SOCKETS_PER_TOKEN)))
        ]
        self.server = b.start_server(
            self.url, workers=self.workers, extra_env=self.server_env, root=self.root
        )
        data = await post_graphql(
            self.server.port,
            self.tokens[0],
            "{ orders(first: 100, filter: {status: [PR]}) { edges { node { id } } } }",
            {},
        )
        self.order_id = data["orders"]["edges"][0]["node"]["id"]
        for _ in range(backlog):
            await self.publish()
        history = await post_graphql(
            self.server.port,
            self.support,
            "query($id: ID!) { order(id: $id) { history { cursor } } }",
            {"id": self.order_id},
        )
        return [h["cursor"] for h in history["order"]["history"]][-backlog:]

    async def publish(self) -> None:
        """One status change of the order: alternately a failure report and a resubmit."""
        assert self.server is not None
        mutation = REPORT if self.toggles % 2 == 0 else RESUBMIT
        self.toggles += 1
        data = await post_graphql(self.server.port, self.support, mutation, {"id": self.order_id})
        payload = next(iter(data.values()))
        if payload["userErrors"]:
            raise RuntimeError(payload["userErrors"])

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.port

    @property
    def pids(self) -> list[int]:
        assert self.server is not None
        return process_tree(self.server.process.pid)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.database == "postgres" and self.url:
            await b.drop_pg_database(self.url)


class PeerTarget:
    """The Node graphql-ws server: no log, so its clients connect without `after`."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.port = b.free_port()
        self.tokens = ["peer-token"]

    async def start(self, clients: int, backlog: int) -> list[str]:
        self.process = await asyncio.to_thread(
            subprocess.Popen,
            ["node", str(b.STORM_DIR / "peer.mjs"), str(self.port), self.tokens[0]],
            cwd=b.STORM_DIR,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), 30)
        if line.strip() != b"listening":
            raise RuntimeError(f"peer did not start: {line!r}")
        return []

    async def publish(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(
            b"POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n"
        )
        await reader.read()
        writer.close()

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid]

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(os.getpgid(self.process.pid), signal.SIGTERM)
            self.process.wait(10)


async def http_probe(
    port: int, token: str, stop: asyncio.Event, *, keep_alive: bool
) -> tuple[list[float], int]:
    """Post a small panel query every 50 ms until `stop`; latencies of those that answered.

    `keep_alive`: over one connection (an open panel), else a new connection each time (a page
    being loaded: it also waits for the server to accept it, behind the storm's connections)."""
    latencies: list[float] = []
    failures = 0
    body, headers = b.graphql_request(token, PANEL_PROBE)
    conn = b.HttpConnection(port)
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status, payload = await asyncio.wait_for(conn.post("/graphql", body, headers), 30)
            if status == 200 and b'"errors"' not in payload:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            failures += 1
            await conn.close()
            conn = b.HttpConnection(port)
        if not keep_alive:
            await conn.close()
            conn = b.HttpConnection(port)
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass
    await conn.close()
    return latencies, failures


async def run_storm(
    name: str,
    target: OrderPulseTarget | PeerTarget,
    *,
    clients: int,
    backlog: int,
    connect_window: int,
    wait_seconds: float,
    py_spy: str | None = None,
) -> StormResult:
    cursors = await target.start(clients, backlog)
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        starts = [i % len(cursors) for i in range(clients)] if cursors else [-1] * clients
        url = f"ws://127.0.0.1:{target.port}/graphql"
        rss_before = sum(b.proc_status_kb(pid, "VmRSS") for pid in target.pids)
        cpu_before = cpu_seconds(target.pids)
        storm = await b.start_storm_client()
        assert storm.stdin is not None and storm.stdout is not None
        config = {
            "url": url,
            "tokens": target.tokens,
            "query": SUBSCRIPTION,
            "cursors": cursors,
            "starts": starts,
            "connectConcurrency": connect_window,
            "timeoutMs": wait_seconds * 1000,
        }
        stop_probe = asyncio.Event()
        probe_token = target.tokens[0]
        probes = (
            [
                asyncio.create_task(
                    http_probe(target.port, probe_token, stop_probe, keep_alive=keep_alive)
                )
                for keep_alive in (False, True)
            ]
            if isinstance(target, OrderPulseTarget)
            else None
        )
        if py_spy is not None and isinstance(target, OrderPulseTarget):
            assert target.server is not None
            profilers = b.start_py_spy(target.server.process.pid, py_spy)
            await asyncio.sleep(1.0)  # py-spy attaches
        client_cpu_before = cpu_seconds([storm.pid])
        storm.stdin.write((json.dumps(config) + "\n").encode())
        await storm.stdin.drain()
        line = await asyncio.wait_for(storm.stdout.readline(), wait_seconds + 60)
        b.stop_py_spy(profilers)
        stop_probe.set()
        (latencies, failures), (kept, kept_failures) = (
            [await probe for probe in probes] if probes is not None else [([], 0), ([], 0)]
        )
        caught = json.loads(line)["caughtUp"]
        cpu_storm = cpu_seconds(target.pids) - cpu_before
        client_cpu = cpu_seconds([storm.pid]) - client_cpu_before
        await asyncio.sleep(1.0)  # settle before measuring memory
        rss_after = sum(b.proc_status_kb(pid, "VmRSS") for pid in target.pids)
        peak = sum(b.proc_status_kb(pid, "VmHWM") for pid in target.pids)
        storm.stdin.write(b"probe\n")
        await storm.stdin.drain()
        await target.publish()
        live_line = await asyncio.wait_for(storm.stdout.readline(), wait_seconds + 60)
        live = json.loads(live_line)["probe"]
        storm.stdin.write(b"stop\n")
        await storm.stdin.drain()
        await asyncio.wait_for(storm.wait(), 30)
        times = live["times"]
        return StormResult(
            name=name,
            clients=clients,
            acked_ms=caught["ackedMs"],
            caught_up_ms=caught["allCaughtUpMs"],
            caught_up=caught["caughtUp"],
            closed_early=caught["closedEarly"],
            problems=caught["problems"] + live["problems"],
            live_received=live["received"],
            live_p50_ms=statistics.median(times) if times else float("nan"),
            live_p99_ms=b.percentile(times, 99),
            http_p99_ms=b.percentile(latencies, 99) * 1000 if probes is not None else None,
            http_requests=len(latencies),
            http_failures=failures + kept_failures,
            kept_http_p99_ms=b.percentile(kept, 99) * 1000 if probes is not None else None,
            kept_http_requests=len(kept),
            peak_rss_mb=peak / 1024,
            cpu_ms_per_client=cpu_storm * 1000 / clients,
            client_cpu_ms_per_client=client_cpu * 1000 / clients,
            rss_per_client_kb=(rss_after - rss_before) / clients,
        )
    finally:
        await target.stop()


def report(result: StormResult) -> None:
    caught = (
        f"{result.caught_up_ms / 1000:6.2f} s"
        if result.caught_up_ms is not None
        else f"NOT ALL ({result.caught_up}/{result.clients})"
    )
    http = (
        f"HTTP p99 {result.http_p99_ms:.0f} ms over {result.http_requests} requests on new"
        f" connections, {result.kept_http_p99_ms:.0f} ms over {result.kept_http_requests} on a"
        f" kept-alive one ({result.http_failures} failed)"
        if result.http_p99_ms is not None
        else "HTTP n/a"
    )
    wall_ms = result.caught_up_ms if result.caught_up_ms is not None else result.acked_ms
    cpu_ms = (result.cpu_ms_per_client + result.client_cpu_ms_per_client) * result.clients
    busy = f" (together {cpu_ms / wall_ms:.1f} of {os.cpu_count()} cores busy)" if wall_ms else ""
    print(
        f"{result.name:<28} {result.clients} clients: all caught up and subscribed {caught}"
        f" (all acked {result.acked_ms / 1000:.2f} s); live change to {result.live_received}/"
        f"{result.clients}: p50 {result.live_p50_ms:.0f} ms p99 {result.live_p99_ms:.0f} ms;"
        f" {http}; server CPU {result.cpu_ms_per_client:.2f} ms/client, load generator's"
        f" {result.client_cpu_ms_per_client:.2f}{busy};"
        f" peak RSS {result.peak_rss_mb:.0f} MB, {result.rss_per_client_kb:.1f} KB/client;"
        f" closed early {result.closed_early}",
        flush=True,
    )
    for problem in result.problems[:5]:
        print(f"    problem: {problem}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--backlog", type=int, default=20, help="events to resume across (K)")
    parser.add_argument("--workers", default="1", help="comma-separated, e.g. 1,2")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--connect-window", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--peer", action="store_true", help="also run the Node graphql-ws peer")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout whose server runs the same storm first (A/B in one run)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="repeat all storms N times")
    parser.add_argument(
        "--py-spy",
        metavar="PREFIX",
        help="profile each OrderPulse server process during the storm (py-spy, collapsed stacks:"
        " PREFIX-rROUND-wWORKERS-PID.txt)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the server, e.g. ORDERPULSE_WS_ADMISSION_CONCURRENCY=8 (repeatable)",
    )
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    b.ensure_storm_modules()
    results: list[StormResult] = []
    roots = [("baseline ", args.baseline.resolve())] if args.baseline else []
    roots.append(("", b.ROOT))
    worker_counts = [int(w) for w in args.workers.split(",")]
    peers: list[StormResult] = []
    for round_number in range(1, args.rounds + 1):
        for workers in worker_counts:
            for label, root in roots:
                directory = Path(tempfile.mkdtemp(prefix="orderpulse-reconnect-"))
                name = f"{label}OrderPulse {args.database} w{workers}"
                profile = f"{args.py_spy}-r{round_number}-w{workers}" if args.py_spy else None
                try:
                    target = OrderPulseTarget(args.database, workers, directory, server_env, root)
                    result = await run_storm(
                        name,
                        target,
                        clients=args.subscribers,
                        backlog=args.backlog,
                        connect_window=args.connect_window,
                        wait_seconds=args.timeout,
                        py_spy=profile,
                    )
                finally:
                    shutil.rmtree(directory, ignore_errors=True)
                report(result)
                results.append(result)
        if args.peer:
            # The peer runs in every round, after ours: each round's ratio compares runs minutes
            # apart at most, on a machine whose speed moves between rounds.
            peer = await run_storm(
                "Node graphql-ws (no replay)",
                PeerTarget(),
                clients=args.subscribers,
                backlog=0,
                connect_window=args.connect_window,
                wait_seconds=args.timeout,
            )
            report(peer)
            peers.append(peer)
            # The peer has no replay: a client counts as subscribed at its ack + subscribe, so
            # its time is its "all acked" time, confirmed live by the change delivered afterwards.
            for result in results[-len(worker_counts) * len(roots) :]:
                if result.caught_up_ms is not None:
                    result.peer_ratio = result.caught_up_ms / peer.acked_ms
                    print(
                        f"ratio {result.name} / peer: {result.peer_ratio:.2f}"
                        " (time until all caught up and live; lower is better)"
                    )
                    # The Node client is one thread: its CPU time is a floor under any server's.
                    client_s = result.client_cpu_ms_per_client * result.clients / 1000
                    half_peer_s = peer.acked_ms / 2000
                    print(
                        f"    the load generator's own CPU time in that storm {client_s:.2f} s"
                        f" (a floor for any server); half the peer's time {half_peer_s:.2f} s"
                    )
    if args.rounds > 1:
        for name in dict.fromkeys(r.name for r in results):
            mine = [r for r in results if r.name == name]
            times = [r.caught_up_ms / 1000 for r in mine if r.caught_up_ms is not None]
            cpu = statistics.median(r.cpu_ms_per_client for r in mine)
            ratios = [r.peer_ratio for r in mine if r.peer_ratio is not None]
            ratio = (
                f", ratio to the peer median {statistics.median(ratios):.2f}"
                f" ({', '.join(f'{x:.2f}' for x in ratios)})"
                if ratios
                else ""
            )
            print(
                f"median of {len(mine)}: {name:<30} all caught up"
                f" {statistics.median(times) if times else float('nan'):6.2f} s,"
                f" server CPU {cpu:.2f} ms/client{ratio}"
            )
        if peers:
            print(
                f"median of {len(peers)}: Node graphql-ws (no replay)     all acked"
                f" {statistics.median(p.acked_ms for p in peers) / 1000:6.2f} s,"
                f" server CPU {statistics.median(p.cpu_ms_per_client for p in peers):.2f}"
                " ms/client"
            )


if __name__ == "__main__":
    asyncio.run(main())
