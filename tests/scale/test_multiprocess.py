"""Several real server processes over one PostgreSQL database behave as one service.

Each test starts two `python -m app serve` processes on the same database (its own copy of the
migrated template) and talks to them over HTTP and websockets (graphql-transport-ws), as panels
and the provisioning platform would. The fan-out's safety poll is set to a minute, so an event
that reaches the other process in time got there through the transport (LISTEN/NOTIFY or Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlmodel import col, func, select

from app.db import Database
from app.events.models import TOPIC_NOTIFICATION, Event
from app.events.transport import CLIENT_NAME, asyncpg_dsn, database_name
from app.notifications.models import Notification
from app.orders.models import SalesOrder
from app.services import Services
from app.settings import Settings
from tests.scale.conftest import Launch
from tests.support.api import Factory, gid
from tests.support.polling import eventually
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, subscription
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.postgres

STATUS_CHANGES = """subscription($after: String) {
  orderStatusChanged(after: $after) { cursor from to action order { number status } } }"""
HISTORY = """query($id: ID!) { order(id: $id) { version history { cursor to } } }"""
ACTION = """mutation($input: PerformOrderActionInput!) {
  performOrderAction(input: $input) { order { status version } userErrors { code field } } }"""
REPORT = """mutation($input: ReportProvisioningResultInput!) {
  reportProvisioningResult(input: $input) { order { status } userErrors { code } } }"""

# The fan-out's poll would hide a broken transport: make it too slow to matter.
SLOW_POLL = {"fanout_poll_seconds": "60"}
DELIVERY_TIMEOUT = 10.0


@dataclass
class OverTransport:
    """Two processes whose events cross only through the transport `kind`."""

    kind: str
    redis_url: str | None
    servers: list[ServerProcess]


@pytest.fixture(params=["postgres", "redis"])
async def over_transport(
    request: pytest.FixtureRequest, launch: Launch, scale_database_url: str
) -> OverTransport:
    kind: str = request.param
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    settings = {**SLOW_POLL, **({"redis_url": redis_url} if redis_url else {})}
    return OverTransport(kind, redis_url, await launch(scale_database_url, count=2, **settings))


async def last_cursor(server: ServerProcess, token: str, order_id: str) -> str:
    data = await server.api(token).data(HISTORY, {"id": order_id})
    cursor: str = data["order"]["history"][-1]["cursor"]
    return cursor


async def act(
    server: ServerProcess, token: str, order_id: str, action: str, version: int | None = None
) -> dict[str, Any]:
    values: dict[str, Any] = {"orderId": order_id, "action": action}
    if version is not None:
        values["expectedVersion"] = version
    data = await server.api(token).data(ACTION, {"input": values})
    result: dict[str, Any] = data["performOrderAction"]
    return result


async def transport_connections(
    kind: str, database_url: str, redis_url: str | None, *, kill: bool = False
) -> set[str]:
    """The transport connections that listen now (PostgreSQL backend pids or Redis client ids of
    subscribers). With `kill`, every transport connection of this database is killed too, as a
    restart would (on Redis the publishing ones as well)."""
    if kind == "postgres":
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = $1",
                CLIENT_NAME,
            )
            pids = {str(r["pid"]) for r in rows}
            for pid in pids if kill else ():
                await conn.execute("SELECT pg_terminate_backend($1)", int(pid))
            return pids
        finally:
            await conn.close()
    assert redis_url is not None
    admin = aioredis.Redis.from_url(redis_url)
    try:
        name = f"{CLIENT_NAME}-{database_name(database_url)}"
        clients = [c for c in await admin.client_list() if c.get("name") == name]
        for client in clients if kill else ():
            await admin.client_kill_filter(_id=client["id"])
        return {str(c["id"]) for c in clients if c.get("sub") == "1"}
    finally:
        await admin.aclose()


async def test_a_change_through_one_process_reaches_a_subscriber_on_another(
    over_transport: OverTransport, rows: Factory
) -> None:
    a, b = over_transport.servers
    token = await rows.token("SUPPORT")
    order = await rows.order(status="PF")
    order_id = gid("Order", order)
    cursor = await last_cursor(b, token, order_id)

    async with subscription(b, token, STATUS_CHANGES, {"after": cursor}) as sub:
        held = await act(a, token, order_id, "HOLD")
        assert held["userErrors"] == []
        change = (await sub.next("1", timeout=DELIVERY_TIMEOUT))["orderStatusChanged"]
        assert (change["from"], change["to"], change["action"]) == ("PF", "HL", "HOLD")
        assert change["order"] == {"number": order.number, "status": "HL"}

        cancelled = await act(a, token, order_id, "CANCEL")
        assert cancelled["userErrors"] == []
        change = (await sub.next("1", timeout=DELIVERY_TIMEOUT))["orderStatusChanged"]
        assert (change["from"], change["to"], change["action"]) == ("HL", "CL", "CANCEL")
        await sub.nothing_within(0.5)


async def test_after_the_transport_connections_are_killed_nothing_is_lost(
    over_transport: OverTransport, scale_database_url: str, rows: Factory
) -> None:
    kind, redis_url, (a, b) = over_transport.kind, over_transport.redis_url, over_transport.servers
    token = await rows.token("SUPPORT")
    customer = await rows.customer()
    orders = [await rows.order(customer, status="PF") for _ in range(4)]
    cursor = await last_cursor(b, token, gid("Order", orders[-1]))
    before = await transport_connections(kind, scale_database_url, redis_url)
    assert len(before) == 2  # one per process

    async with subscription(b, token, STATUS_CHANGES, {"after": cursor}) as sub:
        killed = await transport_connections(kind, scale_database_url, redis_url, kill=True)
        assert killed == before
        # Changes committed while the transports are down or coming back.
        for order in orders[:3]:
            assert (await act(a, token, gid("Order", order), "HOLD"))["userErrors"] == []
        got = [
            (await sub.next("1", timeout=DELIVERY_TIMEOUT))["orderStatusChanged"] for _ in range(3)
        ]
        assert [(c["order"]["number"], c["to"]) for c in got] == [
            (o.number, "HL") for o in orders[:3]
        ]

        async def reconnected() -> bool:
            now = await transport_connections(kind, scale_database_url, redis_url)
            return len(now) == 2 and not now & before

        await eventually(reconnected, timeout=20.0, interval=0.05)
        # And live again once reconnected.
        assert (await act(a, token, gid("Order", orders[3]), "HOLD"))["userErrors"] == []
        change = (await sub.next("1", timeout=DELIVERY_TIMEOUT))["orderStatusChanged"]
        assert (change["order"]["number"], change["to"]) == (orders[3].number, "HL")
        await sub.nothing_within(0.5)


async def test_concurrent_actions_on_one_order_through_two_processes_one_wins(
    two_servers: list[ServerProcess], rows: Factory, direct: Services
) -> None:
    a, b = two_servers
    token = await rows.token("SUPPORT")
    customer = await rows.customer()
    orders = [await rows.order(customer, status="PF") for _ in range(8)]

    for order in orders:
        order_id = gid("Order", order)
        hold, cancel = await asyncio.gather(
            act(a, token, order_id, "HOLD", version=order.version),
            act(b, token, order_id, "CANCEL", version=order.version),
        )
        outcomes = sorted([hold, cancel], key=lambda r: r["order"] is None)
        winner, loser = outcomes
        assert winner["userErrors"] == [] and winner["order"]["version"] == order.version + 1
        assert loser["order"] is None
        assert [e["code"] for e in loser["userErrors"]] == ["CONFLICT"]
        async with direct.db.read() as session:
            row = await session.get(SalesOrder, order.id)
            assert row is not None and row.version == order.version + 1
            assert row.status == winner["order"]["status"]
            changes = await session.exec(
                select(func.count()).where(
                    col(Event.order_id) == order.id, col(Event.topic) == "order_status"
                )
            )
            assert changes.one() == 3  # placed (NW->PR), failed (PR->PF), and the winner's


async def fail_orders(
    servers: list[ServerProcess], system_token: str, orders: list[SalesOrder]
) -> None:
    """Report each order's provisioning as failed, alternating between the processes."""

    async def fail(index: int, order: SalesOrder) -> None:
        server = servers[index % len(servers)]
        data = await server.api(system_token).data(
            REPORT,
            {
                "input": {
                    "orderId": gid("Order", order),
                    "outcome": "FAILED",
                    "reason": "EXTERNAL_SYSTEM_ERROR",
                }
            },
        )
        assert data["reportProvisioningResult"] == {"order": {"status": "PF"}, "userErrors": []}

    await asyncio.gather(*(fail(i, order) for i, order in enumerate(orders)))


@pytest.fixture
def launch_mailing(launch: Launch, scale_database_url: str, smtp_server: SmtpServer) -> Launch:
    """`await launch_mailing(**settings)`: two processes on the test database that send their
    mail to `smtp_server`."""

    async def start(**settings: str) -> list[ServerProcess]:
        servers: list[ServerProcess] = await launch(
            scale_database_url, count=2, smtp_url=smtp_server.url, **settings
        )
        return servers

    return start


async def failed_with_mail(
    rows: Factory, servers: list[ServerProcess], count: int
) -> list[SalesOrder]:
    """`count` orders of a reseller that is told of failures too (besides support), reported
    failed at once through `servers`."""
    system = await rows.token("SYSTEM")
    reseller = await rows.reseller()
    await rows.notify(reseller)
    customer = await rows.customer(reseller)
    orders = [await rows.order(customer, status="PR") for _ in range(count)]
    await fail_orders(servers, system, orders)
    return orders


async def notifications(direct: Services) -> list[Notification]:
    async with direct.db.read() as session:
        return list((await session.exec(select(Notification))).all())


async def test_the_outbox_sends_each_mail_once_with_two_processes(
    launch_mailing: Launch, rows: Factory, direct: Services, smtp_server: SmtpServer
) -> None:
    servers = await launch_mailing(outbox_poll_seconds="0.02")  # both processes keep claiming
    orders = await failed_with_mail(rows, servers, 16)

    expected = 2 * len(orders)  # support and the reseller, per failure
    await smtp_server.wait_for(expected, timeout=20)
    await asyncio.sleep(1.0)  # time for any duplicate to arrive
    ids = Counter(str(m["Message-ID"]) for m in smtp_server.messages)
    assert len(ids) == expected
    assert set(ids.values()) == {1}
    rows_now = await notifications(direct)
    assert len(rows_now) == expected
    assert {(n.status, n.attempts) for n in rows_now} == {("SENT", 1)}
    assert ids.keys() == {n.message_id for n in rows_now}


async def test_an_escalation_fires_once_with_two_processes(
    launch_mailing: Launch, rows: Factory, direct: Services, smtp_server: SmtpServer
) -> None:
    servers = await launch_mailing(
        failure_sla_hours="0.0003",  # about a second
        business_hours="00:00-24:00",
        business_days="mon-sun",
        escalation_poll_seconds="0.02",  # both processes keep looking
        outbox_poll_seconds="0.05",
    )
    orders = await failed_with_mail(rows, servers, 6)

    async def all_escalated() -> bool:
        async with direct.db.read() as session:
            pending = await session.exec(
                select(func.count()).where(
                    col(SalesOrder.status) == "PF", col(SalesOrder.escalated_at).is_(None)
                )
            )
            return pending.one() == 0

    await eventually(all_escalated, timeout=20.0, interval=0.05)
    expected_mails = 3 * len(orders)  # support + reseller on failure, reseller on escalation
    await smtp_server.wait_for(expected_mails, timeout=20)
    await asyncio.sleep(1.0)  # time for a second escalation to happen, if it could

    unresolved = [n for n in await notifications(direct) if n.kind == "FAILED_ORDER_UNRESOLVED"]
    assert sorted(n.order_id for n in unresolved) == sorted(o.id for o in orders if o.id)
    sent = Counter(str(m["Message-ID"]) for m in smtp_server.messages)
    assert len(smtp_server.messages) == expected_mails
    assert [sent[n.message_id] for n in unresolved] == [1] * len(orders)
    async with direct.db.read() as session:
        events = await session.exec(
            select(func.count()).where(
                col(Event.topic) == TOPIC_NOTIFICATION,
                col(Event.notification_id).in_([n.id for n in unresolved]),
                col(Event.delivery_status) == "PENDING",
            )
        )
        assert events.one() == len(orders)  # one "created" event per escalation


async def test_serve_with_workers_migrates_once_and_workers_share_events(
    launch: Launch, postgres: PostgresServer
) -> None:
    """`serve --workers 2` on an empty database: migrated once before forking, both workers
    serve, and subscribers on whichever worker get a change made through any worker."""
    url = postgres.create_database()
    servers: list[ServerProcess] = []
    try:
        servers += await launch(url, count=1, workers=2, **SLOW_POLL)
        server = servers[0]

        async def both_workers_up() -> bool:
            return server.log_path.read_text().count("Application startup complete") == 2

        await eventually(both_workers_up, timeout=20.0, interval=0.05)
        settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
        direct = Services(settings=settings, db=Database(url))
        try:
            factory = Factory(direct)
            token = await factory.token("SUPPORT")
            order = await factory.order(status="PF")
        finally:
            await direct.db.dispose()
        order_id = gid("Order", order)
        cursor = await last_cursor(server, token, order_id)
        async with contextlib.AsyncExitStack() as stack:
            subs = [
                await stack.enter_async_context(
                    subscription(server, token, STATUS_CHANGES, {"after": cursor})
                )
                for _ in range(4)
            ]
            assert (await act(server, token, order_id, "HOLD"))["userErrors"] == []
            for sub in subs:
                change = (await sub.next("1", timeout=DELIVERY_TIMEOUT))["orderStatusChanged"]
                assert (change["order"]["number"], change["to"]) == (order.number, "HL")
        log = server.log_path.read_text()
        assert log.count("Started server process") == 2
        assert log.count("Running upgrade 0001 -> 0002") == 1
    finally:
        for started in servers:
            await started.aclose()
            started.stop()
        postgres.drop_database(url)
