"""The token look-up every request makes runs as a `CompiledStatement` (on PostgreSQL, straight on
asyncpg's connection): it must answer exactly as SQLAlchemy's execution of the same statement,
type conversions included, for live, expiring, expired, revoked and unknown tokens."""

from __future__ import annotations

import asyncio
from datetime import UTC, timedelta

from app.access.tokens import LIVE_TOKEN, hash_token, live_token, revoke_token
from app.db import Database
from app.orders.flow import Role
from app.services import Services
from tests.support.api import Factory
from tests.support.clock import FakeClock


async def test_the_compiled_token_read_answers_as_sqlalchemy_does(
    services: Services, factory: Factory, clock: FakeClock
) -> None:
    reseller = await factory.reseller()
    customer = await factory.customer(reseller)
    tokens = {
        "support": await factory.token("SUPPORT"),
        "reseller, expiring": await factory.token(
            "RESELLER", reseller=reseller, expires_in=timedelta(days=30)
        ),
        "customer": await factory.token("CUSTOMER", customer=customer),
        "expired": await factory.token("SUPPORT", expires_in=timedelta(minutes=5)),
        "revoked": await factory.token("SYSTEM"),
        "unknown": "op_" + "x" * 43,
    }
    async with services.transaction() as session:
        assert await revoke_token(session, token=tokens["revoked"], now=clock.now())
    clock.advance(minutes=5)
    now = clock.now()
    live = 0
    async with services.db.read_connection() as conn:
        for label, token in tokens.items():
            params = {"token_hash": hash_token(token), "now": now}
            compiled = await LIVE_TOKEN.first(conn, params)
            reference = (await conn.execute(LIVE_TOKEN.statement, params)).first()
            assert compiled == (tuple(reference) if reference is not None else None), label
            found = await live_token(conn, token, now=now)
            if label in ("expired", "revoked", "unknown"):
                assert compiled is None and found is None, label
                continue
            live += 1
            assert found is not None
            viewer, expires_at = found
            assert compiled is not None and viewer.token_id == compiled[0]
            if label == "reseller, expiring":
                assert viewer.role is Role.RESELLER and viewer.reseller_id == reseller.id
                assert expires_at is not None and expires_at.tzinfo is UTC
                assert expires_at == now - timedelta(minutes=5) + timedelta(days=30)
            else:
                assert expires_at is None
            if label == "customer":
                assert (viewer.role, viewer.customer_id) == (Role.CUSTOMER, customer.id)
    assert live == 3


async def test_a_request_reads_its_token_and_plan_on_one_connection(
    services: Services, factory: Factory
) -> None:
    """Inside `request_reads`, reads share one checked-out connection; a read started while it
    is busy gets one of its own; outside, each read checks one out."""
    db = services.db
    async with db.request_reads():
        async with db.read_connection() as first:
            pass
        async with db.read_connection() as again:
            assert again is first
            async with db.read_connection() as concurrent:
                assert concurrent is not first
        assert not first.closed
    assert first.closed
    async with db.read_connection() as outside:
        assert outside is not first


async def test_reads_racing_for_the_shared_connection_leave_nothing_checked_out(
    services: Services,
) -> None:
    """The executor resolves sibling fields in concurrent tasks, all inside one request: two reads
    that start together while the shared connection is still being checked out must not both check
    one out (the one overwritten would never go back to the pool, and a full pool would stall
    every later request)."""
    db = Database(services.settings.database_url)  # its own pool: no background worker's use
    pool = db.engine.sync_engine.pool

    async def read() -> None:
        async with db.read_connection() as conn:
            await conn.exec_driver_sql("SELECT 1")

    try:
        async with db.request_reads():
            await asyncio.gather(*(read() for _ in range(8)))
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()
