"""`CompiledStatement` runs a statement on the driver's own connection; it must return exactly what
SQLAlchemy returns for the same statement: the same rows, the same values of the same types
(Decimal money, aware datetimes, None), with bound values, expanded IN lists and named
parameters. Runs on the suite's database (SQLite, or PostgreSQL with
ORDERPULSE_TEST_DATABASE=postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select

from app.access.tokens import LIVE_TOKEN, hash_token
from app.db import CompiledStatement
from app.graphql.planner.run import CUSTOMER, ORDER, RESELLER
from app.orders.flow import Status
from app.services import Services
from tests.support.api import Factory


def typed(rows: list[tuple[Any, ...]]) -> list[list[tuple[type, Any]]]:
    return [[(type(value), value) for value in row] for row in rows]


async def both_ways(services: Services, statement: Any, **params: Any) -> list[tuple[Any, ...]]:
    async with services.db.read_connection() as conn:
        expected = [tuple(row) for row in (await conn.execute(statement, params)).all()]
        compiled = CompiledStatement(statement)
        got = await compiled.all(conn, params)
        again = await compiled.all(conn, params)  # compiled once, run twice
    assert typed(got) == typed(expected)
    assert typed(again) == typed(expected)
    return got


async def test_rows_and_values_equal_sqlalchemys(services: Services, factory: Factory) -> None:
    reseller = await factory.reseller()
    customers = [
        await factory.customer(reseller, credit_limit=limit)
        for limit in ("0", "12.5", "1234567.8901")
    ]
    totals = ["0", "12.50", "0.0001", "99999.9999"]
    for i in range(12):
        order = await factory.order(customers[i % 3], status="PF" if i % 4 == 0 else "PR")
        async with services.transaction() as s:  # amounts of every scale
            order.total = Decimal(totals[i % 4])
            s.add(order)
    columns = [
        ORDER.c.id,
        ORDER.c.number,
        ORDER.c.status,
        ORDER.c.total,
        ORDER.c.created_at,
        ORDER.c.failed_at,
        ORDER.c.failure_reason,
        CUSTOMER.c.name,
        CUSTOMER.c.credit_limit,
        CUSTOMER.c.on_hold,
        RESELLER.c.name,
    ]
    joined = ORDER.join(CUSTOMER, CUSTOMER.c.id == ORDER.c.customer_id).join(
        RESELLER, RESELLER.c.id == ORDER.c.reseller_id
    )
    count = select(func.count()).select_from(ORDER).where(ORDER.c.reseller_id == reseller.id)
    page = (
        select(*columns, count.scalar_subquery())
        .select_from(joined)
        .where(ORDER.c.reseller_id == reseller.id, ORDER.c.status.in_([Status.PF, Status.PR]))
        .order_by(ORDER.c.id.desc())
        .limit(10)
    )
    rows = await both_ways(services, page)
    assert len(rows) == 10 and rows[0][-1] == 12
    failed = await both_ways(services, page.where(ORDER.c.status.in_([Status.PF])))
    assert {row[2] for row in failed} == {"PF"} and len(failed) == 3
    assert await both_ways(services, page.where(ORDER.c.id < 0)) == []
    named = select(ORDER.c.id, ORDER.c.created_at).where(ORDER.c.created_at < bindparam("before"))
    assert await both_ways(services, named, before=datetime.now(UTC) + timedelta(days=1))


async def test_the_token_look_up(services: Services, factory: Factory) -> None:
    token = await factory.token("SUPPORT")
    now = services.clock.now()
    row = await both_ways(services, LIVE_TOKEN.statement, token_hash=hash_token(token), now=now)
    assert len(row) == 1 and row[0][1] == "SUPPORT"
    assert await both_ways(services, LIVE_TOKEN.statement, token_hash="nope", now=now) == []
    async with services.db.read_connection() as conn:
        params = {"token_hash": hash_token(token), "now": now}
        assert await LIVE_TOKEN.first(conn, params) == row[0]
