"""A soak with faults (issue 23): mixed load on `serve --workers 2` over PostgreSQL and Redis while
things break, then checks against the database that nothing was lost.

    .venv/bin/python scripts/soak.py --minutes 3            # every fault, as CI runs it
    .venv/bin/python scripts/soak.py --minutes 60 --subscribers 200 --report soak.json

It starts everything it uses, on free 127.0.0.1 ports, and stops it at the end: a PostgreSQL
cluster of its own (initdb into a temporary folder; the shared one is never touched), a Redis
server of its own, an SMTP sink (aiosmtpd), a TCP proxy between the server and PostgreSQL, and
`python -m app serve --workers 2`. Load, at rates given as options:
- the provisioning platform reporting failures (`PF`: three mails each: support, the reseller,
  the customer) and successes for orders in `PR`;
- resellers placing orders for their customers; resellers resubmitting and support or resellers
  cancelling failed orders with `expectedVersion` (conflicts are answered and re-read);
- panel reads (a reseller's or support's first page of orders);
- `--subscribers` websockets (support and resellers), each subscribed to `orderStatusChanged`
  and `notificationChanged`, reconnecting every 15-45 s with `after`.
Faults, spread over the run after a warm-up: a PostgreSQL restart, a Redis restart, a SIGKILL of a
worker, a SIGKILL of a worker while it is sending a mail (the sink has received the mail and holds
its 250: another worker resends it after the lease, a real duplicate with the same Message-ID), a
reconnect burst (every subscriber at once), and a network partition of `--partition-seconds`
between ONE worker and PostgreSQL. Every worker reaches PostgreSQL through the proxy (one
ORDERPULSE_DATABASE_URL), which knows the worker behind each connection by its port: it stops
forwarding, in both directions and without closing anything, the connections of the worker chosen
when the partition starts (and any it opens meanwhile), while its sibling keeps serving; the
report names the worker cut and counts the 2xx answers served while it lasted.

Then the checks (scripts/soak_checks.py, self-tested by tests/test_soak_checks.py): every
subscriber's stream per topic is exactly the slice of the log it may see from its first cursor;
every notification the failures call for exists, is SENT and reached the sink (twice only where a
worker died sending it, with the same Message-ID); no HTTP 5xx outside fault windows and only 503
with Retry-After inside them; websocket closes inside them carry 1012/1013 (1006 only from a
killed worker), none outside; per-minute p50/p99 of reads and writes; each worker's RSS every
minute, flat after the warm-up (under `--flat-mb-per-hour`, judged over 10 minutes or more).
It writes a JSON report and prints a short table; the exit status is 1 if any check failed. Its
work folder is removed at the end; the server's log is kept beside the report
(`soak.json` → `soak.server.log`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import email.parser
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import ROOT, free_port, proc_status_kb, server_env, start_process  # noqa: F401
from soak_checks import (
    FLAT_BYTES_PER_HOUR,
    HttpRecord,
    Recording,
    Window,
    WsClose,
    as_json,
    memory_trends,
    per_minute_latency,
    verdict,
)

from tests.support.outages import OwnPostgres, OwnRedis, PartitionProxy
from tests.support.smtp import ControlledSmtpServer

PROTOCOL = "graphql-transport-ws"
SUPPORT_EMAIL = "support@distributor.example"
ORDER_TOPIC = "order_status"
NOTIFICATION_TOPIC = "notification"
SUBSCRIPTIONS = {
    ORDER_TOPIC: "subscription($after: String) { orderStatusChanged(after: $after) { cursor } }",
    NOTIFICATION_TOPIC: (
        "subscription($after: String) { notificationChanged(after: $after) { cursor } }"
    ),
}
PLACE = """mutation($input: PlaceOrderInput!) {
  placeOrder(input: $input) { order { id status version } userErrors { code } } }"""
REPORT = """mutation($input: ReportProvisioningResultInput!) {
  reportProvisioningResult(input: $input) { order { id status version } userErrors { code } } }"""
ACT = """mutation($input: PerformOrderActionInput!) {
  performOrderAction(input: $input) { order { id status version } userErrors { code } } }"""
READ_ORDER = "query($id: ID!) { order(id: $id) { id status version } }"
PANEL = "{ orders(first: 20) { totalCount edges { node { number status } } } }"
VIEWER = "{ viewer { role } }"
MAIL_HOLD_SECONDS = 5.0
"""How long the SMTP sink holds its 250 during "worker killed while sending mail" (under the
mailer's 10 s timeout: the sender waits, it does not give up and resend)."""


# --- the world: tokens, resellers, customers ------------------------------------------------------


@dataclass
class Tenant:
    reseller_id: int
    token: str
    customers: list[str]  # GraphQL ids


@dataclass
class World:
    support: str
    system: str
    tenants: list[Tenant]


async def seed(url: str, *, resellers: int, customers: int) -> World:
    """Resellers (failure mail to them and their customers on), customers and tokens, made
    through the domain services (tests/support/api.py's Factory)."""
    from app.db import Database
    from app.graphql.ids import to_global_id
    from app.services import Services
    from app.settings import Settings
    from tests.support.api import Factory

    settings = Settings(_env_file=None, database_url=url, support_email=SUPPORT_EMAIL)  # type: ignore[call-arg]
    services = Services(settings=settings, db=Database(url))
    factory = Factory(services)
    try:
        tenants = []
        for _ in range(resellers):
            reseller = await factory.reseller()
            await factory.notify(reseller, reseller_mail=True, customer_mail=True)
            ids = [
                str(to_global_id("Customer", (await factory.customer(reseller)).id or 0))
                for _ in range(customers)
            ]
            token = await factory.token("RESELLER", reseller=reseller)
            tenants.append(Tenant(reseller.id or 0, token, ids))
        return World(await factory.token("SUPPORT"), await factory.token("SYSTEM"), tenants)
    finally:
        await services.db.dispose()


# --- the SMTP sink --------------------------------------------------------------------------------


class SmtpSink(ControlledSmtpServer):
    """Counts each Message-ID it receives, when its DATA has arrived. With `hold_seconds` set,
    the 250 that tells the sender it was accepted waits that long (the Message-ID and the
    sending worker are `in_flight` meanwhile): a worker killed then has sent the mail but never
    learns it, so another resends it after the lease (a real duplicate, same Message-ID)."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.in_flight: dict[str, int | None] = {}
        """Message-ID → the worker waiting for its 250 (None: not found)."""
        self.hold_seconds = 0.0
        self.server_pid = 0  # uvicorn's supervisor, whose workers send the mail
        self.workers: list[int] = []
        self.senders: dict[str, list[tuple[int | None, float]]] = {}
        """Message-ID → (the worker that sent it, time.monotonic() at its DATA), per copy."""
        self.peers: dict[int, int | None] = {}
        """A sending connection's port → its worker, found at MAIL FROM: a worker killed with
        its DATA on the wire is gone by the time the sink reads it."""

    def worker_of(self, port: int) -> int | None:
        sender = pid_of_local_port(port, self.workers)
        if sender is None:  # a worker started since: look again
            self.workers = children(self.server_pid)
            sender = pid_of_local_port(port, self.workers)
        return sender

    def handler(self) -> object:
        return _SinkHandler(self)


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        sender = self.sink.worker_of(session.peer[1])
        with self.sink.lock:
            self.sink.peers[session.peer[1]] = sender
        envelope.mail_from = address  # what aiosmtpd's hook must do (its documented contract)
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        raw = content if isinstance(content, bytes) else str(content).encode()
        message_id = str(email.parser.BytesHeaderParser().parsebytes(raw)["Message-ID"])
        with self.sink.lock:
            sender = self.sink.peers.pop(session.peer[1], None)
        if sender is None:
            sender = self.sink.worker_of(session.peer[1])
        with self.sink.lock:  # received: whatever happens to the sender from here on
            self.sink.counts[message_id] += 1
            self.sink.senders.setdefault(message_id, []).append((sender, time.monotonic()))
            hold = self.sink.hold_seconds
            if hold:
                self.sink.in_flight[message_id] = sender
        if hold:
            try:
                await asyncio.sleep(hold)
            finally:
                with self.sink.lock:
                    self.sink.in_flight.pop(message_id, None)
        return "250 OK"


# --- the proxy, in a thread of its own (the load's event loop must not slow PostgreSQL down) ------


class WorkerPartitionProxy(PartitionProxy):
    """A `PartitionProxy` that cuts the connections of one server worker only (`cut`): those
    open when the partition starts and those it opens during it (accepted, never forwarded);
    the other worker's keep flowing. `owner(port)` names the worker whose socket has that local
    port."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.owner: Any = lambda port: None
        self.victim: int | None = None
        self.gates: dict[asyncio.Event, int] = {}
        """Each open client connection's gate → the client's port."""

    def gate(self, client: asyncio.StreamWriter) -> asyncio.Event:
        port = int(client.get_extra_info("peername")[1])
        gate = asyncio.Event()
        if self.victim is None or self.owner(port) != self.victim:
            gate.set()
        self.gates[gate] = port
        return gate

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await super()._serve(reader, writer)
        finally:
            port = writer.get_extra_info("peername")[1]
            for gate in [g for g, p in self.gates.items() if p == port]:
                del self.gates[gate]

    def cut(self, victim: int) -> int:
        """Stop forwarding `victim`'s connections; returns how many were open."""
        self.victim = victim
        cut = 0
        for gate, port in self.gates.items():
            if self.owner(port) == victim:
                gate.clear()
                cut += 1
        return cut

    def heal(self) -> None:
        super().heal()
        self.victim = None
        for gate in self.gates:
            gate.set()


class ProxyThread:
    def __init__(self, target_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(
            WorkerPartitionProxy.start(target_port), self.loop
        )
        self.proxy = future.result(10)

    @property
    def port(self) -> int:
        return self.proxy.port

    def cut(self, victim: int, workers: list[int]) -> int:
        """Partition `victim` (one of `workers`) from PostgreSQL; how many of its connections
        were open then."""

        def owner(port: int) -> int | None:
            return pid_of_local_port(port, workers)

        async def cutting() -> int:
            self.proxy.owner = owner
            return self.proxy.cut(victim)

        return asyncio.run_coroutine_threadsafe(cutting(), self.loop).result(10)

    def heal(self) -> None:
        self.loop.call_soon_threadsafe(self.proxy.heal)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


# --- processes ------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The server's worker processes: the children of uvicorn's supervisor that multiprocessing
    spawned as workers (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid and b"spawn_main" in command:
                found.append(int(entry.name))
    return sorted(found)


def pid_of_local_port(port: int, candidates: list[int]) -> int | None:
    """Which of `candidates` owns the TCP socket whose local port is `port` (on 127.0.0.1)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].split(":")[1], 16) == port:
            inode = parts[9]
            break
    if inode is None:
        return None
    for pid in candidates:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


def socket_counts(pid: int, ports: dict[str, tuple[str, int]]) -> dict[str, int]:
    """How many established TCP sockets `pid` holds per name in `ports`: ("local", port) counts
    sockets whose local port is `port` (clients connected to the server), ("remote", port) those
    connected to `port` (the worker's PostgreSQL or Redis connections)."""
    established: dict[str, tuple[int, int]] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "01":  # ESTABLISHED
            local, remote = (int(a.split(":")[1], 16) for a in parts[1:3])
            established[f"socket:[{parts[9]}]"] = (local, remote)
    counts = dict.fromkeys(ports, 0)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                pair = established.get(os.readlink(fd))
                for name, (side, port) in ports.items():
                    if pair is not None and pair[0 if side == "local" else 1] == port:
                        counts[name] += 1
    return counts


# --- the run --------------------------------------------------------------------------------------


@dataclass
class OrderState:
    status: str
    version: int
    tenant: int
    busy: bool = False


@dataclass
class Soak:
    options: argparse.Namespace
    world: World
    port: int
    recording: Recording = field(default_factory=Recording)
    started: float = field(default_factory=time.monotonic)
    orders: dict[str, OrderState] = field(default_factory=dict)
    stopping: bool = False
    sockets: dict[str, Any] = field(default_factory=dict)
    closing_by_us: set[str] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)
    subscription_errors: Counter[str] = field(default_factory=Counter)
    killed: dict[int, float] = field(default_factory=dict)
    """A killed worker → time.monotonic() at its SIGKILL."""

    def now(self) -> float:
        return time.monotonic() - self.started

    # --- HTTP ---------------------------------------------------------------------------------

    async def post(
        self, http: Any, kind: str, token: str, query: str, variables: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        import httpx

        start = self.now()
        status, retry_after, body = 0, False, None
        try:
            response = await http.post(
                "/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {token}"},
            )
            status, retry_after = response.status_code, "retry-after" in response.headers
            if status == 200:
                body = response.json()
        except httpx.HTTPError:
            pass
        self.recording.http.append(HttpRecord(kind, start, self.now(), status, retry_after))
        return body

    async def paced(self, rate: float, work: Any, name: str, limit: int = 64) -> None:
        """`work()` `rate` times a second (open loop), at most `limit` at once."""
        running: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate
        next_at = time.monotonic()
        while not self.stopping:
            next_at += interval
            if len(running) < limit:
                task = asyncio.create_task(work())
                running.add(task)
                task.add_done_callback(running.discard)
            else:
                self.skipped[name] += 1
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if running:
            await asyncio.wait(running)

    async def read(self, http: Any) -> None:
        tenants = self.world.tenants
        token = self.world.support if random.random() < 0.2 else random.choice(tenants).token
        await self.post(http, "read", token, PANEL)

    async def write(self, http: Any) -> None:
        idle = [(gid, o) for gid, o in self.orders.items() if not o.busy]
        in_pr = [(g, o) for g, o in idle if o.status == "PR"]
        in_pf = [(g, o) for g, o in idle if o.status == "PF"]
        unknown = [(g, o) for g, o in idle if o.status == "?"]
        roll = random.random()
        if unknown and roll < 0.1:
            await self.refresh(http, *random.choice(unknown))
        elif roll < 0.3 or not (in_pr or in_pf):
            await self.place(http)
        elif in_pr and (roll < 0.75 or not in_pf):
            gid, order = random.choice(in_pr)
            failed = random.random() < self.options.failure_share
            outcome = (
                {"outcome": "FAILED", "reason": "EXTERNAL_SYSTEM_ERROR"}
                if failed
                else {"outcome": "SUCCEEDED"}
            )
            await self.act(http, gid, order, self.world.system, REPORT, outcome)
        else:
            gid, order = random.choice(in_pf)
            tenant = self.world.tenants[order.tenant]
            if random.random() < 0.5:
                change = {"action": "RESUBMIT", "expectedVersion": order.version}
                await self.act(http, gid, order, tenant.token, ACT, change)
            else:
                token = self.world.support if random.random() < 0.5 else tenant.token
                change = {"action": "CANCEL", "expectedVersion": order.version}
                await self.act(http, gid, order, token, ACT, change)

    async def place(self, http: Any) -> None:
        index = random.randrange(len(self.world.tenants))
        tenant = self.world.tenants[index]
        items = [{"description": "Soak seat", "quantity": 1, "unitPrice": "10.00"}]
        variables = {"input": {"customerId": random.choice(tenant.customers), "items": items}}
        body = await self.post(http, "write", tenant.token, PLACE, variables)
        order = ((body or {}).get("data") or {}).get("placeOrder", {}).get("order")
        if order:
            self.orders[order["id"]] = OrderState(order["status"], order["version"], index)

    async def act(
        self, http: Any, gid: str, order: OrderState, token: str, mutation: str, change: Any
    ) -> None:
        order.busy = True
        try:
            body = await self.post(
                http, "write", token, mutation, {"input": {"orderId": gid, **change}}
            )
            data = (body or {}).get("data") or {}
            payload = next(iter(data.values()), None) or {}
            result = payload.get("order")
            if result:
                order.status, order.version = result["status"], result["version"]
            else:  # a conflict, a refusal or no answer: read it again before acting on it
                order.status = "?"
        finally:
            order.busy = False

    async def refresh(self, http: Any, gid: str, order: OrderState) -> None:
        order.busy = True
        try:
            body = await self.post(http, "read", self.world.support, READ_ORDER, {"id": gid})
            found = ((body or {}).get("data") or {}).get("order")
            if found:
                order.status, order.version = found["status"], found["version"]
        finally:
            order.busy = False

    # --- websockets -----------------------------------------------------------------------------

    async def subscriber(self, name: str, token: str) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        cursors: dict[str, str | None] = dict.fromkeys(SUBSCRIPTIONS)
        streams = {t: self.recording.streams.setdefault(f"{name}/{t}", []) for t in SUBSCRIPTIONS}
        await asyncio.sleep(random.uniform(0, 3))  # not all at once at the start
        while not self.stopping:
            lifetime = random.uniform(self.options.reconnect_min, self.options.reconnect_max)
            pause = 0.0
            try:
                async with connect(
                    f"ws://127.0.0.1:{self.port}/graphql",
                    subprotocols=[PROTOCOL],  # type: ignore[list-item]
                    open_timeout=20,
                    close_timeout=2,
                    ping_interval=None,
                    compression=None,
                    max_queue=None,
                ) as ws:
                    self.sockets[name] = ws
                    payload = {"Authorization": f"Bearer {token}"}
                    await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
                    for topic, query in SUBSCRIPTIONS.items():
                        after = {"after": cursors[topic]} if cursors[topic] else {}
                        message = {"query": query, "variables": after}
                        await ws.send(
                            json.dumps({"id": topic, "type": "subscribe", "payload": message})
                        )
                    try:
                        async with asyncio.timeout(lifetime):
                            async for raw in ws:
                                message = json.loads(raw)
                                kind = message.get("type")
                                if kind == "next":
                                    cursor = message["payload"]["data"]
                                    cursor = next(iter(cursor.values()))["cursor"]
                                    cursors[message["id"]] = cursor
                                    streams[message["id"]].append(event_id(cursor))
                                elif kind == "error":
                                    codes = {
                                        e.get("extensions", {}).get("code")
                                        for e in message["payload"]
                                    }
                                    code = 1013 if codes == {"SERVICE_UNAVAILABLE"} else 4500
                                    self.subscription_errors[str(sorted(map(str, codes)))] += 1
                                    self.recording.closes.append(WsClose(self.now(), code))
                                    pause = 1.0
                                    break
                    except TimeoutError:
                        pass  # time to reconnect
                    if name in self.closing_by_us or pause:
                        continue
                    if ws.protocol.close_rcvd is not None:  # the server closed it
                        self.recording.closes.append(
                            WsClose(self.now(), ws.protocol.close_rcvd.code)
                        )
                        pause = random.uniform(0.2, 1.0)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd is not None else 1006
                self.recording.closes.append(WsClose(self.now(), code))
                pause = random.uniform(0.2, 1.0)
            except (OSError, TimeoutError, InvalidHandshake):
                self.recording.closes.append(WsClose(self.now(), 1006))  # no handshake at all
                pause = random.uniform(0.2, 1.0)
            finally:
                self.sockets.pop(name, None)
                self.closing_by_us.discard(name)
            if pause:
                await asyncio.sleep(pause)

    async def burst(self) -> None:
        """Every subscriber reconnects at once."""
        sockets = list(self.sockets.items())
        self.closing_by_us.update(name for name, _ in sockets)
        await asyncio.gather(*(ws.close() for _, ws in sockets), return_exceptions=True)


def event_id(cursor: str) -> int:
    text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(text.rpartition(":")[2])


# --- faults ---------------------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    kills_a_worker: bool = False


FAULTS = [
    Fault("postgres restart"),
    Fault("redis restart"),
    Fault("worker killed", kills_a_worker=True),
    Fault("worker killed while sending mail", kills_a_worker=True),
    Fault("reconnect burst"),
    Fault("network partition"),
]


@dataclass
class Environment:
    postgres: OwnPostgres
    redis: OwnRedis
    proxy: ProxyThread
    sink: SmtpSink
    server_pid: int


async def play(fault: Fault, soak: Soak, env: Environment) -> tuple[str, dict[str, Any]]:
    """Break something, and return when it is whole again: a note for the report, and what
    else it should say about this fault."""
    if fault.name == "postgres restart":
        await asyncio.to_thread(env.postgres.stop)
        await asyncio.sleep(soak.options.outage_seconds)
        await asyncio.to_thread(env.postgres.start_again)
        return f"PostgreSQL stopped (fast) for {soak.options.outage_seconds} s and started", {}
    if fault.name == "redis restart":
        await asyncio.to_thread(env.redis.stop)
        await asyncio.sleep(soak.options.outage_seconds)
        await asyncio.to_thread(env.redis.start_again)
        return f"Redis killed, started again {soak.options.outage_seconds} s later", {}
    if fault.name == "worker killed":
        workers = children(env.server_pid)
        victim = random.choice(workers)
        os.kill(victim, signal.SIGKILL)
        soak.killed[victim] = time.monotonic()
        return f"SIGKILL to worker {victim} of {workers}", {"killed": victim}
    if fault.name == "worker killed while sending mail":
        env.sink.hold_seconds = MAIL_HOLD_SECONDS
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with env.sink.lock:  # received, the 250 held: the sender is waiting for it
                    sending = dict(env.sink.in_flight)
                    sender = next((pid for pid in sending.values() if pid is not None), None)
                    if sender is not None:
                        os.kill(sender, signal.SIGKILL)
                        soak.killed[sender] = time.monotonic()
                        mid_send = {m for m, pid in sending.items() if pid == sender}
                        soak.recording.died_mid_send |= mid_send
                        note = f"SIGKILL to worker {sender} while it sent {sorted(mid_send)}"
                        return note, {"killed": sender, "died_mid_send": sorted(mid_send)}
                await asyncio.sleep(0.05)
            return "no mail was being sent within 60 s: nobody killed", {}
        finally:
            env.sink.hold_seconds = 0.0
    if fault.name == "reconnect burst":
        count = len(soak.sockets)
        await soak.burst()
        return f"{count} subscribers reconnected at once", {}
    if fault.name == "network partition":
        workers = children(env.server_pid)
        victim = random.choice(workers)
        cut = await asyncio.to_thread(env.proxy.cut, victim, workers)
        await asyncio.sleep(soak.options.partition_seconds)
        env.proxy.heal()
        note = (
            f"the proxy to PostgreSQL forwarded nothing of worker {victim} ({cut} connections"
            f" open, and any it opened) for {soak.options.partition_seconds} s; its sibling"
            f" {[w for w in workers if w != victim]} was not cut"
        )
        return note, {"partitioned_worker": victim, "workers": workers}
    raise ValueError(fault.name)


async def recovery(http: Any, token: str, limit: float = 60.0) -> dict[str, float | None]:
    """Seconds until /readyz answers 200, and until a request with a token succeeds."""
    started = time.monotonic()
    ready = served = None
    while (ready is None or served is None) and time.monotonic() - started < limit:
        with contextlib.suppress(Exception):
            if ready is None and (await http.get("/readyz")).status_code == 200:
                ready = time.monotonic() - started
        with contextlib.suppress(Exception):
            response = await http.post(
                "/graphql", json={"query": VIEWER}, headers={"Authorization": f"Bearer {token}"}
            )
            if served is None and response.status_code == 200:
                served = time.monotonic() - started
        await asyncio.sleep(0.05)
    return {
        "readyz_seconds": None if ready is None else round(ready, 3),
        "first_success_seconds": None if served is None else round(served, 3),
    }


# --- the end: what the database says --------------------------------------------------------------


async def settle_and_collect(soak: Soak, url: str, sink: SmtpSink) -> dict[str, Any]:
    """After the load: wait for the outbox to drain and the subscribers to catch up, then read
    what they should have seen."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from app.access.policy import event_scope
    from app.access.viewer import Viewer
    from app.db import Database
    from app.events.models import Event
    from app.notifications.models import Notification
    from app.orders.flow import Role

    db = Database(url)
    notes: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with db.read() as session:
                pending = await session.scalar(
                    select(func.count()).where(col(Notification.status) == "PENDING")
                )
            if not pending:
                break
            await asyncio.sleep(0.5)
        notes["outbox_pending_at_end"] = pending

        viewers = {"support": Viewer(role=Role.SUPPORT)}
        for index, tenant in enumerate(soak.world.tenants):
            viewers[f"reseller{index}"] = Viewer(role=Role.RESELLER, reseller_id=tenant.reseller_id)

        async def visible(name: str, topic: str, first: int) -> list[int]:
            viewer = viewers[name.split("#")[0]]
            query = (
                select(col(Event.id))
                .where(
                    col(Event.topic) == topic, event_scope(viewer, topic), col(Event.id) >= first
                )
                .order_by(col(Event.id))
            )
            async with db.read() as session:
                return [int(i) for i in (await session.exec(query)).all() if i is not None]

        deadline = time.monotonic() + 60
        behind: list[str] = []
        while True:
            behind = []
            for key, received in soak.recording.streams.items():
                if received:
                    name, topic = key.split("/")
                    expected = await visible(name, topic, received[0])
                    if expected and max(received) < expected[-1]:
                        behind.append(key)
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        notes["streams_behind_at_end"] = behind
        soak.stopping = True
        await soak.burst()
        for key, received in soak.recording.streams.items():
            if received:
                name, topic = key.split("/")
                soak.recording.visible[key] = await visible(name, topic, received[0])

        async with db.read() as session:
            query = select(col(Notification.message_id), col(Notification.status))
            rows = (await session.exec(query)).all()
            failures = await session.scalar(
                select(func.count()).where(
                    col(Event.topic) == ORDER_TOPIC, col(Event.to_status) == "PF"
                )
            )
            events = await session.scalar(select(func.count()).select_from(Event))
        soak.recording.notifications = {str(m): str(s) for m, s in rows}
        soak.recording.expected_notifications = 3 * int(
            failures or 0
        )  # support, reseller, customer
        with sink.lock:
            soak.recording.mails = dict(sink.counts)
            # also died mid-send: a mail whose first copy's sender was killed (by any fault)
            # before it could have marked it SENT: the sink got the copy at most the hold and a
            # second before the kill, or after it (DATA already on the wire when the worker
            # died); another worker resent it after the lease
            soak.recording.died_mid_send |= {
                message_id
                for message_id, copies in sink.senders.items()
                if len(copies) > 1
                and copies[0][0] in soak.killed
                and copies[0][1] >= soak.killed[copies[0][0]] - MAIL_HOLD_SECONDS - 1.0
            }
            notes["copies_of_duplicates"] = {  # the sender and the time (s into the run)
                message_id: [(pid, round(at - soak.started, 2)) for pid, at in copies]
                for message_id, copies in sink.senders.items()
                if len(copies) > 1
            }
        notes["kills"] = {pid: round(at - soak.started, 2) for pid, at in soak.killed.items()}
        notes["failures"] = failures
        notes["events_in_log"] = events
        return notes
    finally:
        await db.dispose()


# --- the report -----------------------------------------------------------------------------------


def text_table(report: dict[str, Any]) -> str:
    lines = [
        f"soak: {report['minutes']} min, {report['options']['subscribers']} subscribers,"
        f" {report['options']['write_rate']} writes/s, {report['options']['read_rate']} reads/s:"
        f" {'PASSED' if report['passed'] else 'FAILED'}",
        f"  HTTP requests {report['summary']['http_requests']}, events delivered"
        f" {report['summary']['events_delivered']} (log: {report['notes'].get('events_in_log')}),"
        f" failures {report['notes'].get('failures')}, notifications"
        f" {report['summary']['notifications']}, mails received"
        f" {report['summary']['mails_received']}",
        "",
        f"  {'fault':<34} {'at s':>6} {'lasted s':>9} {'2xx in':>8} {'ready s':>8} {'served s':>9}",
    ]
    for fault in report["faults"]:
        lines.append(
            f"  {fault['name']:<34} {fault['start']:>6.0f} {fault['lasted']:>9.1f}"
            f" {fault.get('served_2xx_during', 0):>8}"
            f" {fmt(fault['recovery']['readyz_seconds']):>8} "
            f"{fmt(fault['recovery']['first_success_seconds']):>9}"
        )
    lines += [f"  {fault['name']}: {fault['note']}" for fault in report["faults"]]
    lines += [
        "",
        f"  {'minute':>6} {'reads':>6} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'writes':>7} {'p50 ms':>7} {'p99 ms':>7}",
    ]
    for row in report["latency_per_minute"]:
        r, w = row["read"], row["write"]
        lines.append(
            f"  {row['minute']:>6} {r['count']:>6} {fmt(r['p50_ms']):>7} {fmt(r['p99_ms']):>7}"
            f" {w['count']:>7} {fmt(w['p50_ms']):>7} {fmt(w['p99_ms']):>7}"
        )
    lines += ["", "  worker RSS (MB) per minute; slope after warm-up (MB/hour):"]
    for worker, trend in report["memory"].items():
        per_minute = " ".join(f"{b / 2**20:.0f}" for _, b in report["rss_per_minute"][worker])
        slope = trend["slope_bytes_per_hour"]
        slope_text = "n/a" if slope is None else f"{slope / 2**20:+.1f}"
        judged = "judged" if trend["judged"] else "not judged (too short)"
        lines.append(f"  {worker}: {per_minute}  slope {slope_text} ({judged})")
    lines.append("")
    for check, problems in report["checks"].items():
        lines.append(f"  {check:<11} {'ok' if not problems else 'FAILED: ' + '; '.join(problems)}")
    return "\n".join(lines)


def write_report(path: Path, report: dict[str, Any], table: str) -> None:
    """The JSON report at `path`, the table beside it (`.txt`)."""
    path.write_text(json.dumps(report, indent=1, default=str))
    path.with_suffix(".txt").write_text(table + "\n")


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


# --- main -----------------------------------------------------------------------------------------


async def soak_run(options: argparse.Namespace) -> int:
    import httpx

    workdir = Path(tempfile.mkdtemp(prefix="orderpulse-soak-"))
    postgres = await asyncio.to_thread(OwnPostgres.start)
    redis = OwnRedis.start(workdir / "redis")
    proxy = ProxyThread(postgres.port)
    sink = SmtpSink()
    sink.start()
    server = None
    try:
        url = await asyncio.to_thread(postgres.create_database)
        world = await seed(url, resellers=options.resellers, customers=options.customers)
        port = free_port()
        env = server_env(
            postgres.url("orderpulse", port=proxy.port),
            workdir,
            {
                "ORDERPULSE_REDIS_URL": redis.url,
                "ORDERPULSE_SMTP_URL": sink.url,
                "ORDERPULSE_SUPPORT_EMAIL": SUPPORT_EMAIL,
                "ORDERPULSE_DELIVERY_RETRY_SECONDS": "1",
                "ORDERPULSE_DELIVERY_LEASE_SECONDS": "6",
                "ORDERPULSE_DATABASE_TIMEOUT_SECONDS": str(options.database_timeout),
                "ORDERPULSE_FAILURE_SLA_HOURS": "100000",  # no escalation mail in the run
                "ORDERPULSE_BUSINESS_HOURS": "00:00-24:00",
                "ORDERPULSE_BUSINESS_DAYS": "mon-sun",
                "ORDERPULSE_INCIDENT_THRESHOLD": "1000000",  # one mail per failure, always
                "ORDERPULSE_MAX_SOCKETS_PER_TOKEN": "100000",
                **dict(item.split("=", 1) for item in options.server_env),
            },
        )
        log = workdir / "server.log"
        args = [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", "2"]
        server = await asyncio.to_thread(start_process, args, env=env, port=port, log=log)
        await asyncio.sleep(2)  # both workers up
        sink.server_pid = server.process.pid
        sink.workers = children(server.process.pid)
        soak = Soak(options, world, port)
        soak.recording.warmup_seconds = options.warmup_seconds
        environment = Environment(postgres, redis, proxy, sink, server.process.pid)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits)
        probe = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)
        rss: dict[str, list[tuple[float, int]]] = soak.recording.rss
        sockets: dict[str, list[tuple[float, dict[str, int]]]] = {}
        ports = {"clients": ("local", port), "postgres": ("remote", proxy.port),
                 "redis": ("remote", redis.port)}  # fmt: skip

        async def sample_memory() -> None:
            while not soak.stopping:
                sink.workers = children(server.process.pid)
                for pid in sink.workers:
                    with contextlib.suppress(OSError):
                        rss.setdefault(f"worker {pid}", []).append(
                            (soak.now(), proc_status_kb(pid, "VmRSS") * 1024)
                        )
                    if options.sample_sockets:
                        sockets.setdefault(f"worker {pid}", []).append(
                            (round(soak.now(), 1), socket_counts(pid, ports))
                        )
                await asyncio.sleep(10)

        tokens = [world.support] + [t.token for t in world.tenants]
        names = ["support"] + [f"reseller{i}" for i in range(len(world.tenants))]
        background = [
            asyncio.create_task(soak.paced(options.write_rate, lambda: soak.write(http), "write")),
            asyncio.create_task(soak.paced(options.read_rate, lambda: soak.read(http), "read")),
            asyncio.create_task(sample_memory()),
        ] + [
            asyncio.create_task(
                soak.subscriber(f"{names[i % len(names)]}#{i}", tokens[i % len(tokens)])
            )
            for i in range(options.subscribers)
        ]

        duration = options.minutes * 60
        faults = [f for f in FAULTS if f.name in options.faults]
        quiet = duration - options.warmup_seconds - options.tail_seconds
        quiet -= (
            options.partition_seconds if any(f.name == "network partition" for f in faults) else 0
        )
        spacing = max(options.recovery_seconds + 5, quiet / max(1, len(faults)))
        played = []
        for index, fault in enumerate(faults):
            at = options.warmup_seconds + index * spacing
            await asyncio.sleep(max(0.0, at - soak.now()))
            start = soak.now()
            print(f"[{start:6.0f} s] {fault.name}", flush=True)
            note, details = await play(fault, soak, environment)
            end = soak.now()
            found = await recovery(probe, world.support)
            soak.recording.windows.append(
                Window(fault.name, start, end + options.recovery_seconds, fault.kills_a_worker)
            )
            lasted = round(end - start, 1)
            played.append(
                {"name": fault.name, "start": round(start, 1), "lasted": lasted, "note": note,
                 "recovery": found, **details}
            )  # fmt: skip
            print(f"          {note}; recovery {found}", flush=True)
        await asyncio.sleep(max(0.0, duration - soak.now()))
        print(f"[{soak.now():6.0f} s] load stops; settling", flush=True)
        soak.stopping = True
        await asyncio.gather(*background[:3])
        soak.stopping = False  # the subscribers keep reading until they have caught up
        notes = await settle_and_collect(soak, url, sink)
        soak.stopping = True
        for task in background[3:]:
            task.cancel()
        await asyncio.gather(*background[3:], return_exceptions=True)
        await http.aclose()
        await probe.aclose()

        checks = verdict(soak.recording, flat_bytes_per_hour=options.flat_mb_per_hour * 2**20)
        for entry in played:  # what was served while it lasted (a partition cuts one worker)
            start, end = entry["start"], entry["start"] + entry["lasted"]
            entry["served_2xx_during"] = sum(
                1
                for r in soak.recording.http
                if 200 <= r.status < 300 and start <= r.start and r.end <= end
            )
        checks["partition"] = [
            f"nothing served during the partition of worker {f.get('partitioned_worker')}"
            " (its sibling should have served)"
            for f in played
            if f["name"] == "network partition" and not f["served_2xx_during"]
        ]
        trends, _ = memory_trends(
            soak.recording, flat_bytes_per_hour=options.flat_mb_per_hour * 2**20
        )
        log_text = log.read_text(errors="replace")
        report = {
            "minutes": options.minutes,
            "options": {k: v for k, v in vars(options).items() if k != "report"},
            "passed": not any(checks.values()),
            "checks": checks,
            "faults": played,
            "summary": as_json(soak.recording),
            "notes": {
                **notes,
                "skipped_for_concurrency": dict(soak.skipped),
                "subscription_errors": dict(soak.subscription_errors),
                "server_log_tracebacks": log_text.count("Traceback"),
                "server_log_errors": log_text.count(" ERROR "),
            },
            "latency_per_minute": per_minute_latency(soak.recording.http),
            "memory": trends,
            "rss_per_minute": {
                worker: [(t, b) for t, b in samples if int(t) % 60 < 10]
                for worker, samples in soak.recording.rss.items()
            },
            **({"sockets_per_worker": sockets} if options.sample_sockets else {}),
        }
        table = text_table(report)
        print(table)
        write_report(Path(options.report), report, table)
        print(f"report: {options.report}")
        return 0 if report["passed"] else 1
    finally:
        if server is not None:
            server.stop()
        sink.stop()
        proxy.close()
        redis.close()
        postgres.close()
        kept = keep_server_log(workdir / "server.log", Path(options.report))
        shutil.rmtree(workdir, ignore_errors=True)
        if kept is not None:
            print(f"server log: {kept}")


def keep_server_log(log: Path, report: Path) -> Path | None:
    """The server's log, copied beside the report (`soak.json` → `soak.server.log`)."""
    if not log.exists():
        return None
    kept = report.with_name(report.stem + ".server.log")
    shutil.copyfile(log, kept)
    return kept


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--subscribers", type=int, default=40)
    parser.add_argument("--write-rate", type=float, default=4.0, help="writes a second")
    parser.add_argument("--read-rate", type=float, default=4.0, help="panel reads a second")
    parser.add_argument("--failure-share", type=float, default=0.5,
                        help="share of provisioning reports that fail")  # fmt: skip
    parser.add_argument("--resellers", type=int, default=3)
    parser.add_argument("--customers", type=int, default=4, help="per reseller")
    parser.add_argument("--reconnect-min", type=float, default=15.0)
    parser.add_argument("--reconnect-max", type=float, default=45.0)
    parser.add_argument("--faults", nargs="*", default=[f.name for f in FAULTS],
                        help="which faults to play (default: all)")  # fmt: skip
    parser.add_argument("--outage-seconds", type=float, default=3.0,
                        help="how long PostgreSQL and Redis stay down")  # fmt: skip
    parser.add_argument("--partition-seconds", type=float, default=30.0)
    parser.add_argument("--database-timeout", type=float, default=3.0,
                        help="the server's ORDERPULSE_DATABASE_TIMEOUT_SECONDS")  # fmt: skip
    parser.add_argument("--warmup-seconds", type=float, default=20.0)
    parser.add_argument("--tail-seconds", type=float, default=20.0)
    parser.add_argument("--recovery-seconds", type=float, default=10.0,
                        help="a fault's window lasts this long after it ends")  # fmt: skip
    parser.add_argument("--flat-mb-per-hour", type=float, default=FLAT_BYTES_PER_HOUR / 2**20)
    parser.add_argument("--report", default="soak-report.json")
    parser.add_argument(
        "--sample-sockets",
        action="store_true",
        help="record each worker's client, PostgreSQL and Redis connections"
        " every 10 s in the report (what its memory tracks)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra variable for the server (e.g. PYTHONTRACEMALLOC=1)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (a replayable run)")
    options = parser.parse_args(argv)
    unknown = set(options.faults) - {f.name for f in FAULTS}
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {[f.name for f in FAULTS]}")
    return options


def main() -> int:
    options = parse_args()
    if options.seed is not None:
        random.seed(options.seed)
    return asyncio.run(soak_run(options))


if __name__ == "__main__":
    sys.exit(main())
