"""Fan-out benchmark: N websocket subscribers on one server process, then provisioning failures.

    .venv/bin/python scripts/bench_fanout.py --subscribers 1000,5000,10000 [--events 3]

For each N it migrates and seeds a fresh SQLite database in a temporary directory, starts
`python -m app serve` (one process, 127.0.0.1, a free port), warms it up with one event to one
subscriber, opens N `orderStatusChanged` subscribers from client processes (the `websockets`
library's sans-I/O protocol on asyncio, so the clients stay light next to the server on a small
machine), waits until the server is idle and records its RSS. It then reports `--events`
provisioning failures over HTTP (`reportProvisioningResult`, outcome FAILED), one at a time, and
prints for each the delivery latency over the subscribers that may see the order: from just
before the mutation is sent to the moment the message reaches the subscriber's process (bytes
are timestamped as they arrive, then parsed and checked), p50, p99 and max; and once per N the
server's RSS growth per idle subscriber. Subscribers of another reseller must receive nothing;
the script counts anything they get.

Viewers: 25% the order's reseller, 25% the same reseller filtering on `status: [PF]`, 40% the
order's customer, 10% another reseller (a different tenant: expects nothing). `--floor` opens
the same sockets against a do-nothing websocket app on the same uvicorn settings: what uvicorn
and the websockets protocol cost per socket before OrderPulse does anything.

Talks only to 127.0.0.1, stops by itself (every wait is bounded), and removes its files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib as b

ROOT = b.ROOT

QUERY = """
subscription Panel($filter: OrderStatusChangeFilter) {
  orderStatusChanged(filter: $filter) {
    cursor from to reason occurredAt
    order { id number status version customer { name } failure { message remedy } }
  }
}
"""
REPORT_RESULT = """
mutation Report($id: ID!, $outcome: ProvisioningOutcome!, $reason: FailureReason) {
  reportProvisioningResult(input: {orderId: $id, outcome: $outcome, reason: $reason}) {
    order { status } userErrors { message }
  }
}
"""
TOKENS_PER_KIND = 25
CONNECT_CONCURRENCY = 200
READY_TIMEOUT = 300.0
DELIVERY_TIMEOUT = 20.0


# --- the server side ------------------------------------------------------------------------------


@dataclass
class Seed:
    order_ids: list[str]
    tokens: dict[str, list[str]]


async def prepare(url: str, *, orders: int) -> Seed:
    """Migrate, then two resellers; the first's one customer has `orders` PR orders (one per
    failure to report), and TOKENS_PER_KIND tokens for each kind of subscriber."""
    from app.graphql.ids import to_global_id

    await b.migrate(url)
    seeded = await b.seed_core(url, orders=orders, customers=1, resellers=2, statuses=["PR"])
    reseller, other = seeded.reseller_ids
    (customer,) = seeded.customer_ids
    return Seed(
        order_ids=[str(to_global_id("Order", pk)) for pk in await seeded.order_ids(url)],
        tokens={
            "reseller": await b.make_tokens(url, "RESELLER", TOKENS_PER_KIND, reseller_id=reseller),
            "customer": await b.make_tokens(url, "CUSTOMER", TOKENS_PER_KIND, customer_id=customer),
            "other": await b.make_tokens(url, "RESELLER", TOKENS_PER_KIND, reseller_id=other),
            "system": await b.make_tokens(url, "SYSTEM", TOKENS_PER_KIND),
        },
    )


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_idle(pid: int, *, timeout: float = 60.0) -> None:
    """Until the server used under 5% of a core for half a second."""
    hz = os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_ticks(pid)
        time.sleep(0.5)
        if (cpu_ticks(pid) - before) / hz < 0.025:
            return


def report_result(port: int, token: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body: dict[str, Any] = json.loads(response.read())
    assert "errors" not in body, body
    assert not body["data"]["reportProvisioningResult"]["userErrors"], body
    return body


# --- the client side (separate processes) --------------------------------------------------------


def client_main() -> None:
    """A client process: read its subscribers from stdin, then follow the parent's commands."""
    spec = json.loads(sys.stdin.readline())
    asyncio.run(run_clients(spec))


async def run_clients(spec: dict[str, Any]) -> None:
    """Open the sockets, subscribe, then capture each measured event as it arrives.

    While an event is measured, a socket only timestamps the bytes it receives (the moment they
    reach this process); they are parsed and checked once every subscriber has had its message,
    so a busy client does not add its own parsing to the figures.
    """
    from websockets.client import ClientProtocol
    from websockets.frames import Frame, Opcode
    from websockets.http11 import Response
    from websockets.typing import Subprotocol
    from websockets.uri import parse_uri

    loop = asyncio.get_running_loop()
    uri = parse_uri(f"ws://127.0.0.1:{spec['port']}/graphql")
    floor = spec["floor"]
    problems: list[str] = []
    expected = sum(1 for s in spec["subscribers"] if s["expect"])
    capture = {"on": False, "reached": 0}
    all_reached = asyncio.Event()

    class Subscriber(asyncio.Protocol):
        def __init__(self, token: str, variables: dict[str, Any], expect: bool) -> None:
            self.token = token
            self.variables = variables
            self.expect = expect
            self.ready: asyncio.Future[None] = loop.create_future()
            self.ws = ClientProtocol(uri, subprotocols=[Subprotocol("graphql-transport-ws")])
            self.transport: asyncio.Transport | None = None
            self.captured: list[tuple[float, bytes]] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            self.ws.send_request(self.ws.connect())
            self.flush()

        def send(self, message: dict[str, Any]) -> None:
            self.ws.send_text(json.dumps(message).encode())

        def flush(self) -> None:
            assert self.transport is not None
            for data in self.ws.data_to_send():
                if data:
                    self.transport.write(data)

        def data_received(self, data: bytes) -> None:
            if capture["on"]:
                if self.expect and not self.captured:
                    capture["reached"] += 1
                    if capture["reached"] == expected:
                        all_reached.set()
                self.captured.append((time.monotonic(), data))
                return
            self.ws.receive_data(data)
            for event in self.ws.events_received():
                if isinstance(event, Response):
                    if event.status_code != 101:
                        self.fail(f"handshake {event.status_code}")
                    elif floor:
                        self.ready.set_result(None)
                    else:
                        init = {"Authorization": f"Bearer {self.token}"}
                        self.send({"type": "connection_init", "payload": init})
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    message = json.loads(event.data)
                    if message.get("type") == "connection_ack":
                        payload = {"query": QUERY, "variables": self.variables}
                        self.send({"id": "1", "type": "subscribe", "payload": payload})
                        self.ready.set_result(None)
                    elif message.get("type") != "pong":
                        problems.append(f"before measuring: {event.data[:300]!r}")
            self.flush()

        def messages(self) -> list[tuple[float, dict[str, Any]]]:
            """The captured messages, each with the time its last bytes arrived."""
            found = []
            for at, data in self.captured:
                self.ws.receive_data(data)
                for event in self.ws.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        found.append((at, json.loads(event.data)))
            self.captured = []
            self.flush()
            return found

        def fail(self, problem: str) -> None:
            problems.append(problem)
            if not self.ready.done():
                self.ready.set_exception(RuntimeError(problem))

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.ready.done():
                self.fail(f"connection lost: {exc}")
            elif not stopping:
                problems.append(f"connection closed by the server: {self.ws.close_rcvd}")

    stopping = False
    sockets: list[Subscriber] = []
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def open_one(item: dict[str, Any]) -> None:
        async with gate:
            subscriber = Subscriber(item["token"], item["variables"], item["expect"])
            await loop.create_connection(lambda: subscriber, "127.0.0.1", spec["port"])
            await asyncio.wait_for(subscriber.ready, 120)
            sockets.append(subscriber)

    await asyncio.gather(*(open_one(item) for item in spec["subscribers"]))
    say({"ready": len(sockets)})
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "measure":
        capture.update(on=True, reached=0)
        all_reached.clear()
        say({"capturing": True})
        if expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_reached.wait(), DELIVERY_TIMEOUT)
        await asyncio.sleep(0.3)  # anything else (a second message, another tenant's) shows up
        capture["on"] = False
        received: list[float] = []
        unexpected: list[str] = []
        for subscriber in sockets:
            for at, message in subscriber.messages():
                good = message.get("type") == "next" and "errors" not in message["payload"]
                if good and subscriber.expect:
                    received.append(at)
                elif message.get("type") == "next":
                    unexpected.append(json.dumps(message)[:300])
                elif message.get("type") != "pong":
                    problems.append(json.dumps(message)[:300])
        say(
            {
                "received": received,
                "expected": expected,
                "unexpected": unexpected,
                "problems": problems[:20],
                "problem_count": len(problems),
            }
        )
        problems.clear()
    stopping = True
    for subscriber in sockets:
        if subscriber.transport is not None:
            subscriber.transport.close()


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- a do-nothing websocket app (the floor) -----------------------------------------------------


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts a websocket and waits for it to close: uvicorn's own per-socket cost."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    else:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "graphql-transport-ws"})
        while (await receive())["type"] != "websocket.disconnect":
            pass


def floor_server_main(port: int) -> None:
    import uvicorn

    uvicorn.run(
        floor_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws_ping_interval=20,
        ws_ping_timeout=20,
        ws_per_message_deflate=False,
    )


# --- one round ----------------------------------------------------------------------------------


@dataclass
class Delivery:
    """One measured event: who got it, and when (ms after just before the mutation was sent)."""

    receivers: int
    latencies_ms: list[float]
    unexpected: int
    problems: int

    def percentile(self, p: float) -> float:
        return b.percentile(self.latencies_ms, p)


@dataclass
class Round:
    subscribers: int
    rss_before_kb: int
    rss_idle_kb: int
    events: list[Delivery]

    @property
    def bytes_per_subscriber(self) -> float:
        return (self.rss_idle_kb - self.rss_before_kb) * 1024 / self.subscribers


def subscriber_specs(n: int, seed: Seed, *, floor: bool) -> list[dict[str, Any]]:
    specs = []
    for i in range(n):
        slot = i % 20
        if slot < 5:
            kind, variables, expect = "reseller", {}, True
        elif slot < 10:
            kind, variables, expect = "reseller", {"filter": {"status": ["PF"]}}, True
        elif slot < 18:
            kind, variables, expect = "customer", {}, True
        else:
            kind, variables, expect = "other", {}, False
        tokens = seed.tokens[kind]
        specs.append(
            {
                "token": tokens[i % len(tokens)],
                "variables": variables,
                "expect": expect and not floor,
            }
        )
    return specs


def measure(
    clients: list[subprocess.Popen[str]], trigger: Callable[[], None] | None, receivers: int
) -> Delivery:
    """Put the clients in capture mode, run `trigger`, collect what each subscriber got."""
    for process in clients:
        tell(process, "measure")
    for process in clients:
        expect_line(process, "capturing")
    t0 = time.monotonic()
    if trigger is not None:
        trigger()
    received: list[float] = []
    unexpected = problems = 0
    for process in clients:
        result = expect_line(process, "received", DELIVERY_TIMEOUT + 30)
        received += result["received"]
        unexpected += len(result["unexpected"])
        problems += result["problem_count"]
        for problem in result["problems"][:3]:
            print(f"    problem: {problem}", file=sys.stderr)
    return Delivery(receivers, [(t - t0) * 1000 for t in received], unexpected, problems)


def run_round(n: int, *, clients: int, events: int, floor: bool, directory: Path) -> Round:
    url = b.sqlite_url(directory)
    seeded = asyncio.run(prepare(url, orders=events + 1))
    port = b.free_port()
    env = b.server_env(url, directory, {"ORDERPULSE_SMTP_URL": ""})
    if floor:
        args = [sys.executable, str(Path(__file__).resolve()), "--floor-server", str(port)]
    else:
        args = [sys.executable, "-m", "app", "serve", "--port", str(port)]
    server = b.start_process(
        args, env=env, port=port, log=directory / "server.log", ready_path="/healthz"
    )
    pid = server.process.pid
    processes: list[subprocess.Popen[str]] = []
    system = seeded.tokens["system"][0]

    def report(order: int, outcome: str) -> Callable[[], None]:
        variables = {"id": seeded.order_ids[order], "outcome": outcome}
        if outcome == "FAILED":
            variables["reason"] = "SERVICE_CREATION_FAILED"
        return lambda: report_result(port, system, REPORT_RESULT, variables)

    try:
        if not floor:  # one event end to end first, so the figures are of a warm process
            warm = [{"token": seeded.tokens["customer"][0], "variables": {}, "expect": True}]
            warm_client = spawn_client(port, warm, floor=False)
            processes.append(warm_client)
            expect_line(warm_client, "ready")
            wait_until_idle(pid)
            warmed = measure([warm_client], report(0, "SUCCEEDED"), 1)
            assert warmed.latencies_ms, "the warm-up event was not delivered"
            finish(warm_client)
        wait_until_idle(pid)
        rss_before = b.proc_status_kb(pid, "VmRSS")
        specs = subscriber_specs(n, seeded, floor=floor)
        share = -(-n // clients)
        live = [
            spawn_client(port, specs[start : start + share], floor=floor)
            for start in range(0, n, share)
        ]
        processes += live
        opened = sum(expect_line(p, "ready", READY_TIMEOUT)["ready"] for p in live)
        assert opened == n, (opened, n)
        wait_until_idle(pid)
        rss_idle = b.proc_status_kb(pid, "VmRSS")
        receivers = sum(1 for s in specs if s["expect"])
        measured = []
        for i in range(0 if floor else events):
            measured.append(measure(live, report(i + 1, "FAILED"), receivers))
            wait_until_idle(pid)
        return Round(n, rss_before, rss_idle, measured)
    finally:
        for process in processes:
            finish(process)
        server.stop()


def tell(process: subprocess.Popen[str], command: str) -> None:
    assert process.stdin is not None
    process.stdin.write(command + "\n")
    process.stdin.flush()


def spawn_client(port: int, specs: list[dict[str, Any]], *, floor: bool) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--client"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    assert process.stdin is not None
    process.stdin.write(json.dumps({"port": port, "subscribers": specs, "floor": floor}) + "\n")
    process.stdin.flush()
    return process


def expect_line(process: subprocess.Popen[str], key: str, timeout: float = 60.0) -> dict[str, Any]:
    """The client's next line, which must carry `key` (bounded by `timeout`)."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise TimeoutError(f"no {key!r} from a client within {timeout:.0f} s")
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"a client exited before {key!r}")
    message: dict[str, Any] = json.loads(line)
    assert key in message, message
    return message


def finish(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        try:
            assert process.stdin is not None
            process.stdin.write("stop\n")
            process.stdin.flush()
            process.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# --- the command line ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1000,5000,10000", help="comma-separated Ns")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--events", type=int, default=3, help="failures measured per N")
    parser.add_argument("--floor", action="store_true", help="a do-nothing websocket app instead")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by server and clients
    if args.client:
        client_main()
        return
    if args.floor_server:
        floor_server_main(args.floor_server)
        return
    counts = [int(n) for n in args.subscribers.split(",") if n.strip()]
    if max(counts) + 100 > hard:
        parser.error(f"the open-file limit ({hard}) is too low for {max(counts)} sockets")
    print(
        f"{'subscribers':>11} {'event':>5} {'received':>11} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'other tenant got':>16}   {'RSS per idle subscriber':>23}"
    )
    for n in counts:
        directory = Path(tempfile.mkdtemp(prefix="orderpulse-fanout-"))
        try:
            result = run_round(
                n, clients=args.clients, events=args.events, floor=args.floor, directory=directory
            )
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        memory = f"{result.bytes_per_subscriber / 1024:.1f} KB"
        if not result.events:
            print(f"{n:>11} {'-':>5} {'-':>11} {'-':>7} {'-':>7} {'-':>7} {'-':>16}   {memory:>23}")
        for i, event in enumerate(result.events, 1):
            got = f"{len(event.latencies_ms)}/{event.receivers}"
            figures = (
                f"{event.percentile(50):>7.1f} {event.percentile(99):>7.1f} "
                f"{max(event.latencies_ms):>7.1f}"
                if event.latencies_ms
                else f"{'-':>7} {'-':>7} {'-':>7}"
            )
            problems = f"  ({event.problems} problems)" if event.problems else ""
            print(
                f"{n:>11} {i:>5} {got:>11} {figures} {event.unexpected:>16}   "
                f"{memory if i == 1 else '':>23}{problems}",
                flush=True,
            )


if __name__ == "__main__":
    main()
