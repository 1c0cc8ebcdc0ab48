"""The cross-process wake-up, in one process: two buses, two transports, one database.

Each transport stands for one server process. An announcement on one wakes the other's local
listeners; a killed transport connection comes back by itself, wakes its listeners (the fan-out
then reads the log, so nothing is lost), and sends an announcement made while it was down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from app.db import Database
from app.events.bus import EventBus
from app.events.transport import (
    CHANNEL,
    PostgresTransport,
    RedisTransport,
    asyncpg_dsn,
    database_name,
    newest_event_id,
    transport_for,
)
from app.settings import Settings
from tests.support.polling import eventually

pytestmark = pytest.mark.postgres


WAIT_SECONDS = 10.0


async def woken(flag: asyncio.Event, timeout: float = 10.0) -> None:
    await asyncio.wait_for(flag.wait(), timeout)


@pytest.fixture
async def database(scale_database_url: str) -> AsyncIterator[Database]:
    db = Database(scale_database_url)
    yield db
    await db.dispose()


async def insert_event(url: str) -> int:
    """Write one order event (with its reseller, customer and order) straight into the log."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        reseller = await conn.fetchval(
            "INSERT INTO reseller (name, email, created_at) VALUES ('R', 'r@r.example', now())"
            " RETURNING id"
        )
        customer = await conn.fetchval(
            "INSERT INTO customer (reseller_id, name, contact_email, payment_method, on_hold,"
            " requires_verification, credit_limit, created_at)"
            " VALUES ($1, 'C', 'c@c.example', 'AUTOMATIC', false, false, 0, now()) RETURNING id",
            reseller,
        )
        order = await conn.fetchval(
            "INSERT INTO sales_order (number, type, customer_id, reseller_id, currency, total,"
            " status, version, settled_checks, created_at, updated_at)"
            " VALUES ('SO-' || $2::text, 'SO', $1, $3, 'USD', 1, 'PR', 1, '', now(), now())"
            " RETURNING id",
            customer,
            str(customer),
            reseller,
        )
        event_id: int = await conn.fetchval(
            "INSERT INTO event (topic, order_id, reseller_id, customer_id, to_status,"
            " occurred_at) VALUES ('order_status', $1, $2, $3, 'PR', now()) RETURNING id",
            order,
            reseller,
            customer,
        )
        return event_id
    finally:
        await conn.close()


@pytest.fixture
async def pair(
    request: pytest.FixtureRequest, scale_database_url: str, database: Database
) -> AsyncIterator[tuple[Any, Any]]:
    """Two started transports ("process A" and "process B") of the kind the test names."""
    kind = request.param
    made: list[Any] = []

    def make(bus: EventBus) -> Any:
        if kind == "postgres":
            return PostgresTransport(database_url=scale_database_url, bus=bus)
        redis_url = request.getfixturevalue("redis_url")
        name = database_name(scale_database_url)
        return RedisTransport(
            redis_url=redis_url,
            bus=bus,
            latest_event_id=newest_event_id(database),
            channel=f"{CHANNEL}:{name}",
            client_name=f"orderpulse-events-{name}",
        )

    for _ in range(2):
        transport = make(EventBus())
        await transport.start()
        made.append(transport)
    for transport in made:
        await woken(transport.connected)
    yield made[0], made[1]
    for transport in made:
        await transport.stop()


async def kill_connection(transport: Any, scale_database_url: str) -> None:
    """Kill the transport's connection from the server side, as a restart would."""
    if isinstance(transport, PostgresTransport):
        pid = transport._conn.get_server_pid()
        conn = await asyncpg.connect(asyncpg_dsn(scale_database_url))
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        finally:
            await conn.close()
        return
    subscriber_id = await _subscriber_client_id(transport)
    admin = aioredis.Redis.from_url(transport.redis_url)
    try:
        assert await admin.client_kill_filter(_id=subscriber_id) == 1
    finally:
        await admin.aclose()


async def _subscriber_client_id(transport: RedisTransport) -> str:
    """The Redis client id of the transport's subscriber connection (by its local port)."""
    sock = transport._pubsub.connection._writer.get_extra_info("sockname")
    laddr = f"{sock[0]}:{sock[1]}"
    admin = aioredis.Redis.from_url(transport.redis_url)
    try:
        for client in await admin.client_list():
            if client.get("addr") == laddr:
                return str(client["id"])
    finally:
        await admin.aclose()
    raise AssertionError(f"no Redis client at {laddr}")


BOTH = pytest.mark.parametrize("pair", ["postgres", "redis"], indirect=True)


@BOTH
async def test_an_announcement_wakes_the_other_process_only(
    pair: tuple[Any, Any], scale_database_url: str
) -> None:
    a, b = pair
    flag_a, flag_b = a.bus.listen(), b.bus.listen()
    flag_a.clear()
    flag_b.clear()
    newest = await insert_event(scale_database_url)

    await a.bus.announce()

    await woken(flag_b)
    await eventually(lambda: b.received == 1, timeout=WAIT_SECONDS)
    assert b.latest_event_id == newest  # the message carries the newest id, nothing else
    await asyncio.sleep(0.2)
    assert a.received == 0  # a process does not wake itself twice


@BOTH
async def test_a_burst_of_announcements_is_coalesced(
    pair: tuple[Any, Any], scale_database_url: str
) -> None:
    a, b = pair
    await insert_event(scale_database_url)
    for _ in range(50):
        await a.bus.announce()
    await eventually(lambda: b.received >= 1, timeout=WAIT_SECONDS)
    await asyncio.sleep(0.3)
    assert 1 <= b.received < 50


@BOTH
async def test_a_killed_listener_reconnects_and_wakes_its_listeners(
    pair: tuple[Any, Any], scale_database_url: str
) -> None:
    a, b = pair
    flag_b = b.bus.listen()
    await kill_connection(b, scale_database_url)
    await eventually(lambda: b.connects == 2, timeout=WAIT_SECONDS)
    await woken(flag_b)  # woken on reconnect: the fan-out rereads the log for the gap
    flag_b.clear()
    received = b.received
    newest = await insert_event(scale_database_url)

    await a.bus.announce()

    await woken(flag_b)
    await eventually(lambda: b.received == received + 1, timeout=WAIT_SECONDS)
    assert b.latest_event_id == newest


@BOTH
@pytest.mark.parametrize("noticed", [True, False], ids=["after-noticing", "at-once"])
async def test_an_announcement_made_while_disconnected_is_sent_after_reconnecting(
    pair: tuple[Any, Any], scale_database_url: str, noticed: bool
) -> None:
    a, b = pair
    newest = await insert_event(scale_database_url)
    await kill_connection(a, scale_database_url)
    if noticed:
        await eventually(lambda: not a.connected.is_set(), timeout=WAIT_SECONDS)

    await a.bus.announce()

    await eventually(lambda: a.connects == 2, timeout=WAIT_SECONDS)
    await eventually(lambda: b.received == 1, timeout=WAIT_SECONDS)
    assert b.latest_event_id == newest


@pytest.mark.parametrize("pair", ["postgres"], indirect=True)
async def test_the_listener_survives_repeated_kills(
    pair: tuple[Any, Any], scale_database_url: str
) -> None:
    a, b = pair
    for round_ in range(1, 4):
        await kill_connection(b, scale_database_url)
        await eventually(lambda round_=round_: b.connects == round_ + 1, timeout=WAIT_SECONDS)  # type: ignore[misc]
    await a.bus.announce()
    await eventually(lambda: b.received == 1, timeout=WAIT_SECONDS)


def settings_for(url: str, **values: Any) -> Settings:
    return Settings(_env_file=None, database_url=url, **values)  # type: ignore[call-arg]


async def test_the_configuration_chooses_the_transport(scale_database_url: str) -> None:
    db = Database(scale_database_url)
    try:
        bus = EventBus()
        sqlite = settings_for("sqlite:///./x.db", redis_url="redis://127.0.0.1:6379/0")
        assert transport_for(settings=sqlite, db=db, bus=bus) is None

        listen = transport_for(settings=settings_for(scale_database_url), db=db, bus=bus)
        assert isinstance(listen, PostgresTransport)
        assert listen.channel == "orderpulse_events"

        redis = transport_for(
            settings=settings_for(scale_database_url, redis_url="redis://127.0.0.1:6379/0"),
            db=db,
            bus=bus,
        )
        assert isinstance(redis, RedisTransport)
        assert redis.channel == f"orderpulse_events:{database_name(scale_database_url)}"
        assert await newest_event_id(db)() == 0
        newest = await insert_event(scale_database_url)
        assert await newest_event_id(db)() == newest
    finally:
        await db.dispose()
