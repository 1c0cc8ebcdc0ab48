"""Shared parts of the benchmark scripts: databases, seeding, server processes, a load loop.

Everything runs on 127.0.0.1. The load loop is a small keep-alive HTTP/1.1 client on asyncio
streams (no extra packages, and light enough not to eat the CPU the server needs).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get(
    "ORDERPULSE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

# Statuses of seeded orders, by `(i // 7) % 20` (not `i % 20`, which would tie each status to
# one reseller): 1 in 20 failed (PF), a few waiting, most completed.
STATUS_CYCLE = ["PF", "PR", "WA", "HL"] + ["CP"] * 16


# --- figures ----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank `p`th percentile of `values`, in their unit (NaN when there are none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")


def proc_status_kb(pid: int, field: str) -> int:
    """A kB figure of /proc/PID/status, e.g. "VmRSS" (0 when the field is absent)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


# --- CPU accounting (steadier than throughput when the machine's cores are shared) ----------------


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    """The processes of a process group (the server and its workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def start_py_spy(pgid: int, prefix: str) -> list[subprocess.Popen[bytes]]:
    """py-spy recording each process of a server's group (collapsed stacks, idle frames left out)
    until interrupted with SIGINT (`stop_py_spy`): `prefix`-PID.txt. Needs py-spy in this venv."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return [
        subprocess.Popen(
            [
                *(str(py_spy), "record", "--pid", str(pid), "--format", "raw"),
                *("--rate", "200", "--output", f"{prefix}-{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in group_pids(pgid)
    ]


def stop_py_spy(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:  # py-spy writes its output on SIGINT
        profiler.send_signal(2)
    for profiler in profilers:
        profiler.wait(30)


async def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database."""
    if not url.startswith("postgres"):
        return []
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


@dataclass
class CpuMeter:
    """CPU seconds of the server's processes and its database backends over a window, and of
    this process (the load generator, where it runs here), with the window's length."""

    server_pgid: int
    url: str
    server: float = 0.0
    database: float = 0.0
    load_generator: float = 0.0
    wall: float = 0.0
    _start: dict[int, float] | None = None
    _own_start: tuple[float, float] = (0.0, 0.0)

    def cores_busy(self) -> float:
        """How many of the machine's cores server, database and load generator kept busy."""
        return (self.server + self.database + self.load_generator) / self.wall if self.wall else 0.0

    async def _sample(self) -> dict[int, float]:
        pids = [*group_pids(self.server_pgid), *(-p for p in await backend_pids(self.url))]
        return {p: process_cpu_seconds(abs(p)) for p in pids}

    async def begin(self) -> None:
        self._start = await self._sample()
        self._own_start = (time.process_time(), time.monotonic())

    async def end(self) -> None:
        assert self._start is not None
        own, started = self._own_start
        self.load_generator = time.process_time() - own
        self.wall = time.monotonic() - started
        for pid, seconds in (await self._sample()).items():
            spent = seconds - self._start.get(pid, 0.0)
            if pid > 0:
                self.server += spent
            else:
                self.database += spent


# --- databases ----------------------------------------------------------------------------------


def pg_url(name: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{name}"


async def pg_admin(*statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def create_pg_database(prefix: str = "op_bench") -> str:
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    return pg_url(name)


async def drop_pg_database(url: str) -> None:
    name = url.rpartition("/")[2]
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'bench.db'}"


async def migrate(url: str) -> None:
    """Alembic runs its own event loop: in a thread."""
    from app.migrate import migrate as run

    await asyncio.to_thread(run, url)


# --- seeding ------------------------------------------------------------------------------------


@dataclass
class Seeded:
    reseller_ids: list[int]
    customer_ids: list[int]
    orders: int

    async def order_ids(self, url: str) -> list[int]:
        """The seeded orders' ids, in the order they were made."""
        from sqlalchemy import text

        from app.db import Database

        db = Database(url)
        try:
            async with db.engine.connect() as conn:
                rows = await conn.execute(text("SELECT id FROM sales_order ORDER BY id"))
                return [int(row[0]) for row in rows]
        finally:
            await db.dispose()


def _status_values(status: str, at: datetime) -> dict[str, Any]:
    if status != "PF":
        return {
            "failure_reason": None,
            "failed_at": None,
            "sla_deadline": None,
            "escalated_at": None,
        }
    # Already escalated: the escalation worker leaves seeded failures alone during a run.
    return {
        "failure_reason": "SERVICE_CREATION_FAILED",
        "failed_at": at,
        "sla_deadline": at + timedelta(hours=2),
        "escalated_at": at + timedelta(hours=2),
    }


async def seed_core(
    url: str,
    *,
    orders: int,
    customers: int,
    resellers: int,
    statuses: list[str] | None = None,
) -> Seeded:
    """Resellers, customers and orders (one item each) by bulk INSERTs through SQLAlchemy core."""
    from sqlalchemy import insert

    from app.db import Database
    from app.orders.models import Customer, Reseller, SalesOrder

    db = Database(url)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                insert(Reseller),
                [
                    {"name": f"Reseller {r}", "email": f"r{r}@resellers.example", "created_at": now}
                    for r in range(resellers)
                ],
            )
            reseller_ids = sorted((await conn.exec_driver_sql("SELECT id FROM reseller")).scalars())
            await conn.execute(
                insert(Customer),
                [
                    {
                        "reseller_id": reseller_ids[c % resellers],
                        "name": f"Customer {c}",
                        "contact_email": f"c{c}@customers.example",
                        "payment_method": "AUTOMATIC",
                        "on_hold": False,
                        "requires_verification": False,
                        "credit_limit": Decimal(0),
                        "created_at": now,
                    }
                    for c in range(customers)
                ],
            )
            rows = (await conn.exec_driver_sql("SELECT id, reseller_id FROM customer")).all()
            customer_rows = sorted((int(r[0]), int(r[1])) for r in rows)
        batch = 10_000
        for start in range(0, orders, batch):
            values = []
            for i in range(start, min(orders, start + batch)):
                customer_id, reseller_id = customer_rows[i % len(customer_rows)]
                cycle = statuses or STATUS_CYCLE
                status = cycle[(i // 7) % len(cycle)]
                at = now + timedelta(seconds=i)
                values.append(
                    {
                        "number": f"SO-{i + 1:07d}",
                        "type": "SO",
                        "customer_id": customer_id,
                        "reseller_id": reseller_id,
                        "currency": "USD",
                        "total": Decimal("100.00") + i % 50,
                        "status": status,
                        "version": 1,
                        "settled_checks": "",
                        "created_at": at,
                        "updated_at": at,
                        "failure_details": None,
                        **_status_values(status, at),
                    }
                )
            async with db.engine.begin() as conn:
                await conn.execute(insert(SalesOrder), values)
        async with db.engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO order_item (order_id, position, description, quantity, unit_price)"
                " SELECT id, 0, 'Cloud seat', 1, total FROM sales_order"
            )
            if db.engine.dialect.name == "postgresql":
                await conn.exec_driver_sql("ANALYZE")
        return Seeded(reseller_ids, [c for c, _ in customer_rows], orders)
    finally:
        await db.dispose()


async def seed_generate_series(url: str, *, orders: int, customers: int, resellers: int) -> Seeded:
    """The shape of `seed_core`, generated inside PostgreSQL (1M orders in under a minute)."""
    import asyncpg

    from app.events.transport import asyncpg_dsn

    cycle = "ARRAY[" + ",".join(f"'{s}'" for s in STATUS_CYCLE) + "]"
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO reseller (name, email, created_at) SELECT 'Reseller ' || r,"
                " 'r' || r || '@resellers.example', '2026-11-01' FROM generate_series(0, $1 - 1) r",
                resellers,
            )
            await conn.execute(
                "INSERT INTO customer (reseller_id, name, contact_email, payment_method, on_hold,"
                " requires_verification, credit_limit, created_at)"
                " SELECT (SELECT min(id) FROM reseller) + c % $2, 'Customer ' || c,"
                " 'c' || c || '@customers.example', 'AUTOMATIC', false, false, 0, '2026-11-01'"
                " FROM generate_series(0, $1 - 1) c",
                customers,
                resellers,
            )
            await conn.execute(
                f"""
                WITH c AS (SELECT id, reseller_id, row_number() OVER (ORDER BY id) - 1 AS n
                           FROM customer),
                     g AS (SELECT i, ({cycle})[(i / 7) % {len(STATUS_CYCLE)} + 1] AS status,
                                  timestamp '2026-11-01' + i * interval '1 second' AS at
                           FROM generate_series(0, $1 - 1) i)
                INSERT INTO sales_order (number, type, customer_id, reseller_id, currency, total,
                    status, version, settled_checks, created_at, updated_at, failure_reason,
                    failed_at, sla_deadline, escalated_at)
                SELECT 'SO-' || lpad((i + 1)::text, 7, '0'), 'SO', c.id, c.reseller_id, 'USD',
                       100 + i % 50, g.status, 1, '', g.at, g.at,
                       CASE WHEN g.status = 'PF' THEN 'SERVICE_CREATION_FAILED' END,
                       CASE WHEN g.status = 'PF' THEN g.at END,
                       CASE WHEN g.status = 'PF' THEN g.at + interval '2 hours' END,
                       CASE WHEN g.status = 'PF' THEN g.at + interval '2 hours' END
                FROM g JOIN c ON c.n = g.i % $2
                ORDER BY g.i
                """,
                orders,
                customers,
            )
            await conn.execute(
                "INSERT INTO order_item (order_id, position, description, quantity, unit_price)"
                " SELECT id, 0, 'Cloud seat', 1, total FROM sales_order"
            )
        # The steady state autovacuum reaches on a live database: statistics, and the visibility
        # map, without which every count reads the table's pages instead of the index alone.
        await conn.execute("VACUUM ANALYZE")
        resellers_ids = [r["id"] for r in await conn.fetch("SELECT id FROM reseller ORDER BY id")]
        customer_ids = [r["id"] for r in await conn.fetch("SELECT id FROM customer ORDER BY id")]
        return Seeded(resellers_ids, customer_ids, orders)
    finally:
        await conn.close()


async def make_token(
    url: str, role: str, *, reseller_id: int | None = None, customer_id: int | None = None
) -> str:
    (token,) = await make_tokens(url, role, 1, reseller_id=reseller_id, customer_id=customer_id)
    return token


async def make_tokens(
    url: str,
    role: str,
    count: int,
    *,
    reseller_id: int | None = None,
    customer_id: int | None = None,
) -> list[str]:
    """`count` API tokens of one role (and tenant), made in one transaction."""
    from app.access.tokens import create_token
    from app.db import Database
    from app.orders.flow import Role

    db = Database(url)
    try:
        async with db.write() as session:
            return [
                await create_token(
                    session,
                    role=Role(role),
                    reseller_id=reseller_id,
                    customer_id=customer_id,
                    now=datetime.now(UTC),
                )
                for _ in range(count)
            ]
    finally:
        await db.dispose()


# --- GraphQL documents the benchmarks share ---------------------------------------------------

CREATE_RESELLER = """mutation { createReseller(input: {name: "Bench Reseller",
    email: "ops@bench.example"}) { reseller { id } } }"""
CREATE_CUSTOMER = """mutation($r: ID!) { createCustomer(input: {resellerId: $r, name: "Acme",
    contactEmail: "it@acme.example"}) { customer { id } } }"""
PLACE = """mutation($c: ID!) { placeOrder(input: {customerId: $c,
    items: [{description: "Seat", quantity: 1, unitPrice: "10.00"}]}) {
    order { id number status } } }"""
FAIL = """mutation($o: ID!) { reportProvisioningResult(input: {orderId: $o, outcome: FAILED,
    reason: SERVICE_CREATION_FAILED}) { order { status } userErrors { code message } } }"""


# --- server processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(os.getpgid(self.process.pid), signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpgid(self.process.pid), signal.SIGKILL)
                self.process.wait(5)


# A benchmark sends thousands of requests a minute with one token: far above the default
# per-token rate limit (1200/minute, answered with 429). The limiter still runs on every request,
# with a limit the load never reaches, so its cost is measured; the peers have no limiter.
BENCH_RATE_LIMIT = "100000000/minute"


def server_env(
    url: str, directory: Path, extra_env: dict[str, str] | None = None, *, root: Path = ROOT
) -> dict[str, str]:
    """Ours without ORDERPULSE_*, plus the database, a mail folder in `directory`, `extra_env`;
    the code is `root`'s (another checkout, to compare in one run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERPULSE_")}
    env.update(
        {
            "PYTHONPATH": str(root),
            "ORDERPULSE_DATABASE_URL": url,
            "ORDERPULSE_MAIL_DIR": str(directory / "mail"),
            "ORDERPULSE_RATE_LIMIT": BENCH_RATE_LIMIT,
            # a benchmark opens thousands of sockets with a few tokens (SPEC 8 caps them at 50)
            "ORDERPULSE_MAX_SOCKETS_PER_TOKEN": "1000000",
            **(extra_env or {}),
        }
    )
    return env


def start_process(
    args: list[str], *, env: dict[str, str], port: int, log: Path, ready_path: str = "/readyz"
) -> Server:
    """Run `args` (a server listening on `port`) until `ready_path` answers 200 (60 s at most)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            args,
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(process, port, log)
    request = f"GET {ready_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(request.encode())
                if b" 200 " in s.recv(100):
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(log.read_text()[-3000:])
        time.sleep(0.2)


def start_server(
    url: str,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    root: Path = ROOT,
) -> Server:
    """`python -m app serve` (log level warning) on a free port; waits until /readyz answers.

    `root` is the checkout whose code the server runs (another one, to compare in one run)."""
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix="orderpulse-bench-")) / "server.log"
    args = [sys.executable, "-m", "app", "serve", "--port", str(port), "--workers", str(workers)]
    env = server_env(url, log.parent, extra_env, root=root)
    server = start_process(args, env=env, port=port, log=log)
    if workers > 1:
        time.sleep(1.0)  # let every worker finish its start-up
    return server


# --- the load loop ------------------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection posting JSON (responses with Content-Length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def graphql_request(
    token: str, query: str, variables: dict[str, Any] | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    return body, {"Authorization": f"Bearer {token}"}


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        """In milliseconds."""
        return percentile(self.latencies, p) * 1000

    def line(self) -> str:
        return (
            f"{self.rps:8.1f} req/s  p50 {self.percentile(50):7.1f} ms  "
            f"p99 {self.percentile(99):7.1f} ms  ({self.requests} requests, {self.errors} errors, "
            f"{self.seconds:.1f} s)"
        )


MakeRequest = Callable[[int], tuple[bytes, dict[str, str]]]


async def load(
    port: int,
    make: MakeRequest,
    *,
    concurrency: int,
    seconds: float,
    warmup_seconds: float = 2.0,
    check: Callable[[dict[str, Any]], bool] | None = None,
) -> LoadResult:
    """`concurrency` connections posting to /graphql back to back for `seconds` (after a
    warm-up); each response must be 200 without `errors` (and pass `check`) to count."""
    latencies: list[float] = []
    errors = 0
    counter = 0
    measuring = False
    stop_at = 0.0

    async def worker() -> None:
        nonlocal errors, counter
        conn = HttpConnection(port)
        try:
            while time.monotonic() < stop_at:
                counter += 1
                body, headers = make(counter)
                started = time.perf_counter()
                status, payload = await conn.post("/graphql", body, headers)
                elapsed = time.perf_counter() - started
                ok = status == 200
                if ok:
                    parsed = json.loads(payload)
                    ok = "errors" not in parsed and (check is None or check(parsed))
                if measuring:
                    latencies.append(elapsed)
                    errors += 0 if ok else 1
        finally:
            await conn.close()

    stop_at = time.monotonic() + warmup_seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    measuring = True
    started = time.monotonic()
    stop_at = started + seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return LoadResult(len(latencies), errors, elapsed, latencies)


async def sequential_latency(port: int, make: MakeRequest, *, requests: int) -> list[float]:
    conn = HttpConnection(port)
    try:
        for i in range(5):  # warm-up
            await conn.post("/graphql", *make(i))
        out = []
        for i in range(requests):
            body, headers = make(i)
            started = time.perf_counter()
            status, payload = await conn.post("/graphql", body, headers)
            out.append(time.perf_counter() - started)
            assert status == 200 and b'"errors"' not in payload, payload[:300]
        return out
    finally:
        await conn.close()


def summary_ms(latencies: list[float]) -> str:
    return (
        f"p50 {statistics.median(latencies) * 1000:6.2f} ms  "
        f"p99 {percentile(latencies, 99) * 1000:6.2f} ms  ({len(latencies)} sequential requests)"
    )


Runner = Callable[[], Awaitable[None]]


# --- the Node reconnect-storm client (bench_reconnect.py, bench_ws_handshake.py) ----------------

STORM_DIR = ROOT / "scripts" / "reconnect"
"""The storm client (storm.mjs), the graphql-ws peer (peer.mjs) and their lock file."""


def ensure_storm_modules() -> None:
    """`npm ci` in `STORM_DIR` on first use (its packages pinned by its lock file)."""
    if not (STORM_DIR / "node_modules" / "ws").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=STORM_DIR, check=True)


async def start_storm_client() -> asyncio.subprocess.Process:
    """One Node process of raw graphql-transport-ws clients (`storm.mjs`), waiting for its JSON
    configuration line on stdin; it answers on stdout."""
    ensure_storm_modules()
    storm = await asyncio.create_subprocess_exec(
        "node",
        str(STORM_DIR / "storm.mjs"),
        cwd=STORM_DIR,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=64 * 1024 * 1024,  # its report lists every client
    )
    assert storm.stdin is not None and storm.stdout is not None
    return storm
