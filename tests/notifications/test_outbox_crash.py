"""Crash safety of the outbox, for real: the server is a subprocess that gets SIGKILLed.

One server after another runs on the same SQLite file, sending to a gated SMTP server in this
process, with a one-second delivery lease:

1. killed while its SMTP transactions wait for the DATA reply -> after restart each mail is
   sent (exactly once: the server never accepted the first try), with the same Message-ID;
2. notifications written while no server runs (never claimed) are sent after the start;
3. killed after the SMTP server accepted the mail but before the server recorded it (the
   database is locked by the test meanwhile) -> resent after restart: a duplicate, recognisable
   by its unchanged Message-ID. Nothing is lost anywhere.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.db import Database
from app.services import Services
from app.settings import Settings
from tests.notifications.helpers import GatedSmtpServer, failed_in_another_process
from tests.support.polling import eventually
from tests.support.processes import server_env
from tests.support.smtp import free_port

SUPPORT_EMAIL = "support@distributor.example"
DATABASE_FILE = "orderpulse.db"
STARTUP_TIMEOUT = 40.0  # as tests/scale: a loaded machine starts slowly

CREATE_RESELLER = """mutation($name: String!, $email: String!) {
    createReseller(input: {name: $name, email: $email}) { reseller { id } userErrors { code } } }"""
NOTIFY_RESELLER = """mutation($r: ID!) { updateNotificationSettings(input: {resellerId: $r,
    notifyReseller: true}) { userErrors { code } } }"""
CREATE_CUSTOMER = """mutation($r: ID!) { createCustomer(input: {resellerId: $r, name: "Acme",
    contactEmail: "it@acme.example"}) { customer { id } userErrors { code } } }"""
PLACE = """mutation($c: ID!) { placeOrder(input: {customerId: $c,
    items: [{description: "Seat", quantity: 1, unitPrice: "10.00"}]}) {
    order { id status } userErrors { code } } }"""
FAIL = """mutation($o: ID!) { reportProvisioningResult(input: {orderId: $o, outcome: FAILED,
    reason: EXTERNAL_SYSTEM_ERROR}) { order { id status } userErrors { code } } }"""
NOTIFICATIONS = """{ notifications(first: 100) { edges { node {
    messageId status attempts email order { id } } } } }"""


class Server:
    """`python -m app serve` in a subprocess, with its log in a file."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            timeout=30,
            check=True,
        )
        return done.stdout.decode().strip()

    async def start(self) -> None:
        self.starts += 1
        self.port = free_port()
        log = open(self.workdir / f"server-{self.starts}.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(self.port)],
            env=self.env,
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                assert self.process.poll() is None, self.logs()
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, self.logs()
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            assert self.process.returncode == -signal.SIGKILL
        self.process = None

    def logs(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.workdir.glob("server-*.log")))


class Api:
    def __init__(self, server: Server, token: str) -> None:
        self.server = server
        self.token = token

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10.0) as http:
            response = await http.post(
                f"{self.server.url}/graphql",
                json={"query": query, "variables": variables or {}},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        body = response.json()
        assert "errors" not in body, body
        result: dict[str, Any] = body["data"]
        return result

    async def fail_order(self, name: str) -> str:
        reseller = await self.data(
            CREATE_RESELLER, {"name": name, "email": f"ops@{name.lower()}.example"}
        )
        reseller_id = reseller["createReseller"]["reseller"]["id"]
        await self.data(NOTIFY_RESELLER, {"r": reseller_id})  # support and reseller are told
        customer = await self.data(CREATE_CUSTOMER, {"r": reseller_id})
        customer_id = customer["createCustomer"]["customer"]["id"]
        order = (await self.data(PLACE, {"c": customer_id}))["placeOrder"]["order"]
        failed = await self.data(FAIL, {"o": order["id"]})
        assert failed["reportProvisioningResult"]["order"]["status"] == "PF"
        order_id: str = order["id"]
        return order_id

    async def notifications(self) -> list[dict[str, Any]]:
        data = await self.data(NOTIFICATIONS)
        return [edge["node"] for edge in data["notifications"]["edges"]]


def server_and_api(tmp_path: Path, gated: GatedSmtpServer, **settings: str) -> tuple[Server, Api]:
    """A server (not started yet) on an SQLite file in `tmp_path` that sends its mail to `gated`,
    with `settings`; and a support client of it."""
    env = server_env(
        f"sqlite:///{tmp_path / DATABASE_FILE}",
        smtp_url=gated.url,
        mail_dir=str(tmp_path / "mail"),
        **settings,
    )
    assert env["ORDERPULSE_SUPPORT_EMAIL"] == SUPPORT_EMAIL
    server = Server(env, tmp_path)
    return server, Api(server, server.cli("token", "create", "--role", "SUPPORT"))


@pytest.fixture
def gated() -> Iterator[GatedSmtpServer]:
    with GatedSmtpServer() as server:
        yield server


def message_ids(arrivals: list[Any]) -> list[str]:
    return [str(a.message["Message-ID"]) for a in arrivals]


async def test_a_killed_server_loses_no_notification(
    tmp_path: Path, gated: GatedSmtpServer
) -> None:
    server, api = server_and_api(
        tmp_path, gated, delivery_lease_seconds="1", outbox_poll_seconds="0.1"
    )
    db_path, env = tmp_path / DATABASE_FILE, server.env
    try:
        # 1. Killed in the middle of the SMTP transactions.
        gated.gate.clear()
        await server.start()
        first_order = await api.fail_order("First")
        arrived, _ = await gated.wait_until(arrived=2)
        interrupted = message_ids(arrived)
        server.kill()
        await eventually(lambda: _no_held(gated))  # aiosmtpd saw the connections drop
        gated.gate.set()
        assert gated.snapshot()[1] == []  # nothing was accepted

        # 2. Written while no server runs: never claimed by anybody.
        never_claimed = await _fail_order_offline(db_path, env)

        await server.start()
        _, accepted = await gated.wait_until(accepted=4, timeout=10)
        assert sorted(message_ids(accepted)) == sorted(interrupted + never_claimed)

        # 3. Killed after the mail server accepted, before the outcome was recorded.
        gated.gate.clear()
        third_order = await api.fail_order("Third")
        arrived, _ = await gated.wait_until(arrived=8)
        accepted_twice = message_ids(arrived[6:])
        lock = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            gated.gate.set()
            await gated.wait_until(accepted=6)
            await eventually(lambda: _no_held(gated))
            await asyncio.sleep(0.3)  # the 250 replies reach the server, which waits for the lock
            rows = lock.execute(
                "SELECT status, lease_until IS NOT NULL FROM notification WHERE message_id IN (?, ?)",
                accepted_twice,
            ).fetchall()
            assert rows == [("PENDING", 1), ("PENDING", 1)]
            server.kill()
        finally:
            lock.rollback()
            lock.close()

        await server.start()
        _, accepted = await gated.wait_until(accepted=8, timeout=10)
        counts = Counter(message_ids(accepted))
        assert counts == Counter(
            {**dict.fromkeys(interrupted + never_claimed, 1), **dict.fromkeys(accepted_twice, 2)}
        )

        async def all_sent() -> list[dict[str, Any]] | None:
            rows = await api.notifications()
            return rows if {r["status"] for r in rows} == {"SENT"} else None

        rows = await eventually(all_sent)
        assert sorted(r["messageId"] for r in rows) == sorted(counts)
        assert {r["attempts"] for r in rows} == {1}
        by_order = Counter(r["order"]["id"] for r in rows)
        assert by_order[first_order] == by_order[third_order] == 2
        assert len(by_order) == 3
    except BaseException:
        print(server.logs())
        raise
    finally:
        server.kill()


async def _no_held(gated: GatedSmtpServer) -> bool:
    with gated.lock:
        return gated.held == 0


async def _fail_order_offline(db_path: Path, env: dict[str, str]) -> list[str]:
    """A failure committed by another process while no server runs; its Message-IDs."""
    settings = Settings(
        _env_file=None, database_url=env["ORDERPULSE_DATABASE_URL"], support_email=SUPPORT_EMAIL
    )
    services = Services(settings=settings, db=Database(settings.database_url))
    try:
        rows = await failed_in_another_process(services)
        assert [(r.status, r.lease_until) for r in rows] == [("PENDING", None)] * 2
        return [r.message_id for r in rows]
    finally:
        await services.db.dispose()


async def test_with_the_default_lease_a_killed_servers_mail_goes_out_within_30_seconds(
    tmp_path: Path, gated: GatedSmtpServer
) -> None:
    """The default lease (renewed while sending) is short: after a crash in the middle of the
    SMTP transactions, the restarted server sends the mail well within 30 s, same Message-ID."""
    server, api = server_and_api(tmp_path, gated)  # the default lease and poll
    try:
        gated.gate.clear()
        await server.start()
        await api.fail_order("Crashed")
        rows = await api.notifications()
        arrived, _ = await gated.wait_until(arrived=len(rows))
        interrupted = sorted(message_ids(arrived))
        server.kill()
        crashed_at = time.monotonic()
        await eventually(lambda: _no_held(gated))
        gated.gate.set()
        assert gated.snapshot()[1] == []

        await server.start()
        _, accepted = await gated.wait_until(accepted=len(rows), timeout=30)
        delivered_after = time.monotonic() - crashed_at
        assert sorted(message_ids(accepted)) == interrupted
        assert delivered_after < 30, delivered_after
    except BaseException:
        print(server.logs())
        raise
    finally:
        server.kill()
