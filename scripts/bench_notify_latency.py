"""How long from the failing mutation to the SMTP server accepting the support mail?

Starts the real server (`python -m app serve`, SQLite in a temporary folder) sending mail to an
aiosmtpd server run by this script, then, one order at a time: places an order, sends
`reportProvisioningResult(outcome: FAILED)` and measures from just before that request is sent
to the moment the SMTP server receives the support mail's DATA (it then answers 250). Both
timestamps come from this process's monotonic clock. Prints p50/p99/max.

    .venv/bin/python scripts/bench_notify_latency.py [--count 200] [--warmup 5]

Open-loop mode (`--rate`): failures arrive at a fixed rate whatever the server's answers, as
from many platforms at once: `--rate 50 --seconds 10` sends one `reportProvisioningResult(FAILED)`
every 1/50 s for 10 s, each for its own order (seeded in PR), on `--database sqlite` (one process)
or `postgres` (127.0.0.1:5432, `--workers N`), and prints p50/p99/max from each request's start
to the SMTP server receiving that order's support mail, plus the rate actually sent.

    .venv/bin/python scripts/bench_notify_latency.py --rate 50 --seconds 10 \
        --database postgres --workers 2

Load generator: this script, in one process: an asyncio scheduler that starts each request at its
planned time on an idle keep-alive connection (`benchlib.HttpConnection`, a new one when none is
idle), and the aiosmtpd server (in a thread) that timestamps each mail's DATA.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import CREATE_CUSTOMER, CREATE_RESELLER, FAIL, PLACE, ROOT, free_port

SUPPORT_EMAIL = "support@bench.example"
NOTIFY_RESELLER = """mutation($r: ID!) { updateNotificationSettings(input: {resellerId: $r,
    notifyReseller: true}) { userErrors { message } } }"""
SUBJECT_NUMBER = re.compile(r"Order (\S+) failed")
# What is measured is the per-order support mail, which an incident (SPEC 10: the same reason
# `ORDERPULSE_INCIDENT_THRESHOLD` times in its window) would replace by one incident mail.
NO_INCIDENTS = {"ORDERPULSE_INCIDENT_THRESHOLD": "1000000"}


Key = tuple[str, str]


class Inbox:
    """Records when each mail arrived, by (recipient, order number), and wakes who waits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived: dict[Key, float] = {}
        self.waiters: dict[Key, tuple[asyncio.AbstractEventLoop, asyncio.Future[float]]] = {}

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        at = time.perf_counter()
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        message = email.message_from_bytes(content, policy=email.policy.default)
        match = SUBJECT_NUMBER.search(str(message["Subject"]))
        if match:
            for recipient in envelope.rcpt_tos:
                key = (recipient, match.group(1))
                with self.lock:
                    self.arrived.setdefault(key, at)
                    waiter = self.waiters.pop(key, None)
                if waiter is not None:
                    loop, future = waiter
                    loop.call_soon_threadsafe(_resolve, future, at)
        return "250 Message accepted for delivery"

    async def wait_for(self, recipient: str, number: str) -> float:
        """When the mail to `recipient` about order `number` arrived (waits up to 30 s)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        key = (recipient, number)
        with self.lock:
            at = self.arrived.get(key)
            if at is None:
                self.waiters[key] = (loop, future)
        if at is not None:
            return at
        async with asyncio.timeout(30):
            return await future


def _resolve(future: asyncio.Future[float], at: float) -> None:
    if not future.done():
        future.set_result(at)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)) - 1, 0)]


async def gql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": query, "variables": variables})
    body = response.json()
    if "errors" in body:
        raise RuntimeError(body["errors"])
    result: dict[str, Any] = body["data"]
    return result


async def measure(base_url: str, token: str, inbox: Inbox, count: int, warmup: int) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:
        reseller = (await gql(http, CREATE_RESELLER))["createReseller"]["reseller"]["id"]
        await gql(http, NOTIFY_RESELLER, r=reseller)  # its mail is off until it enables it
        customer = (await gql(http, CREATE_CUSTOMER, r=reseller))["createCustomer"]["customer"]
        latencies: list[float] = []
        round_trips: list[float] = []
        for i in range(warmup + count):
            order = (await gql(http, PLACE, c=customer["id"]))["placeOrder"]["order"]
            assert order["status"] == "PR", order
            started = time.perf_counter()
            result = await gql(http, FAIL, o=order["id"])
            answered = time.perf_counter()
            assert result["reportProvisioningResult"]["order"]["status"] == "PF", result
            support_at = await inbox.wait_for(SUPPORT_EMAIL, order["number"])
            await inbox.wait_for("ops@bench.example", order["number"])  # one failure at a time
            if i >= warmup:
                latencies.append(support_at - started)
                round_trips.append(answered - started)
    ms = [v * 1000 for v in latencies]
    rt = [v * 1000 for v in round_trips]
    print(f"failures measured: {len(ms)} (after {warmup} warm-up), sequential, SQLite, 1 process")
    print(
        "failing mutation -> SMTP server accepts the support mail: "
        f"p50 {percentile(ms, 50):.1f} ms  p99 {percentile(ms, 99):.1f} ms  "
        f"max {max(ms):.1f} ms  mean {statistics.fmean(ms):.1f} ms"
    )
    print(
        "failing mutation HTTP round trip (for comparison):        "
        f"p50 {percentile(rt, 50):.1f} ms  p99 {percentile(rt, 99):.1f} ms  max {max(rt):.1f} ms"
    )


async def open_loop(
    args: argparse.Namespace, inbox: Inbox, smtp_port: int, *, root: Path, label: str
) -> None:
    """`--rate` failures a second for `--seconds`, each timed to its support mail."""
    import benchlib as b

    from app.graphql.ids import to_global_id

    count = round(args.rate * args.seconds)
    warmup = max(round(args.rate), 5)
    folder = Path(tempfile.mkdtemp(prefix="orderpulse-bench-"))
    postgres = args.database == "postgres"
    url = await b.create_pg_database() if postgres else b.sqlite_url(folder)
    try:
        await b.migrate(url)
        total = warmup + count
        await b.seed_core(url, orders=total, customers=20, resellers=2, statuses=["PR"])
        token = await b.make_token(url, "SUPPORT")
        server = b.start_server(
            url,
            workers=args.workers if postgres else 1,
            extra_env={
                "ORDERPULSE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
                "ORDERPULSE_SUPPORT_EMAIL": SUPPORT_EMAIL,
                **NO_INCIDENTS,
            },
            root=root,
        )
        idle: list[b.HttpConnection] = []
        opened: list[b.HttpConnection] = []
        errors = 0

        async def fail(index: int) -> float:
            nonlocal errors
            conn = idle.pop() if idle else b.HttpConnection(server.port)
            if conn not in opened:
                opened.append(conn)
            body, headers = b.graphql_request(
                token, FAIL, {"o": str(to_global_id("Order", index + 1))}
            )
            started = time.perf_counter()
            try:
                status, payload = await conn.post("/graphql", body, headers)
            except (IndexError, OSError, asyncio.IncompleteReadError):  # closed while idle
                conn = b.HttpConnection(server.port)
                opened.append(conn)
                started = time.perf_counter()
                status, payload = await conn.post("/graphql", body, headers)
            idle.append(conn)
            if status != 200 or b'"PF"' not in payload:
                errors += 1
            try:
                arrived = await inbox.wait_for(SUPPORT_EMAIL, f"SO-{index + 1:07d}")
            except TimeoutError:
                return math.inf  # not there after 30 s: counted, and shown as a miss
            return arrived - started

        async def run(first: int, number: int) -> tuple[list[float], float]:
            tasks = []
            began = time.perf_counter()
            for i in range(number):
                delay = began + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(fail(first + i)))
            sent_for = time.perf_counter() - began
            return list(await asyncio.gather(*tasks)), sent_for

        try:
            await run(0, warmup)
            errors = 0
            latencies, sent_for = await run(warmup, count)
        finally:
            for conn in opened:
                await conn.close()
            server.stop()
        missed = sum(1 for v in latencies if v == math.inf)
        ms = [v * 1000 for v in latencies]
        setup = f"{args.database}, {args.workers if postgres else 1} worker(s)"
        print(
            f"[{label}] open loop: {count} failures planned at {args.rate:g}/s "
            f"over {args.seconds:g} s "
            f"(sent at {(count - 1) / sent_for if sent_for else 0:.1f}/s), {setup}, "
            f"{errors} errors, {missed} support mails not received within 30 s"
        )
        print(
            "failing mutation -> SMTP server accepts the support mail: "
            f"p50 {percentile(ms, 50):.1f} ms  p99 {percentile(ms, 99):.1f} ms  "
            f"max {max(ms):.1f} ms  mean {statistics.fmean(ms):.1f} ms"
        )
    finally:
        if postgres:
            await b.drop_pg_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rate", type=float, help="open loop: failures per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="open loop: how long")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, default=2, help="open loop on postgres")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="open loop: first run the same load against another checkout (e.g. /work/main)",
    )
    args = parser.parse_args()

    if args.rate is not None:
        import benchlib

        runs = [(benchlib.ROOT, "this")]
        if args.baseline is not None:
            runs.insert(0, (args.baseline.resolve(), "baseline"))
        for root, label in runs:
            inbox = Inbox()
            smtp_port = free_port()
            controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
            controller.start()
            try:
                asyncio.run(open_loop(args, inbox, smtp_port, root=root, label=label))
            finally:
                controller.stop()
        return

    inbox = Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    with tempfile.TemporaryDirectory(prefix="orderpulse-bench-") as folder:
        workdir = Path(folder)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ORDERPULSE_")},
            "PYTHONPATH": str(ROOT),  # this checkout's code, not the installed one's
            "ORDERPULSE_DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "ORDERPULSE_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "ORDERPULSE_SUPPORT_EMAIL": SUPPORT_EMAIL,
            "ORDERPULSE_MAIL_DIR": str(workdir / "mail"),
            **NO_INCIDENTS,
        }
        command = [sys.executable, "-m", "app"]
        token = subprocess.run(
            [*command, "token", "create", "--role", "SUPPORT"],
            env=env,
            cwd=workdir,
            capture_output=True,
            check=True,
            text=True,
        ).stdout.strip()
        port = free_port()
        log = open(workdir / "server.log", "wb")
        server = subprocess.Popen(
            [*command, "serve", "--port", str(port)],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base_url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit((workdir / "server.log").read_text())
                time.sleep(0.05)
            asyncio.run(measure(base_url, token, inbox, args.count, args.warmup))
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)
            log.close()
            controller.stop()


if __name__ == "__main__":
    main()
