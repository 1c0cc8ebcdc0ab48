"""`CompiledStatement` runs a statement on the driver's own connection; it must return exactly what
SQLAlchemy returns for the same statement: the same rows, the same values of the same types
(Decimal money, aware datetimes, None), with bound values, expanded IN lists and named
parameters. Runs on the suite's database (SQLite, or PostgreSQL with
ORDERPULSE_TEST_DATABASE=postgres)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import bindparam, func, literal, select, update

import app.db
from app.access.tokens import LIVE_TOKEN, hash_token
from app.db import SQLITE_SLOW_RUNS, CompiledStatement, Database
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


async def test_a_sqlite_connection_returns_to_the_pool_without_its_open_transaction(
    services: Services, factory: Factory
) -> None:
    """SQLite's pool rolls a returned connection back only when a transaction is open
    (`app.db._sqlite_reset`; a read request returns one with none, with no trip to its thread):
    a write left uncommitted is rolled back, not seen by the next reader, and does not hold
    SQLite's write lock against the next writer."""
    if not services.db.is_sqlite:
        pytest.skip("SQLite's pool reset; PostgreSQL keeps SQLAlchemy's")
    reseller = await factory.reseller()
    async with services.db.engine.connect() as conn:
        # on the driver, past SQLAlchemy's own transaction (which it would roll back itself)
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute(
            "UPDATE reseller SET name = 'uncommitted' WHERE id = ?", (reseller.id,)
        )
        assert driver.in_transaction
        # closed without a commit: its connection goes back to the pool
    assert not driver.in_transaction
    async with services.db.write() as session:  # the write lock is free
        await session.exec(
            update(RESELLER).where(RESELLER.c.id == reseller.id).values(email="next@example.com")
        )
    async with services.db.read_connection() as conn:
        row = await CompiledStatement(
            select(RESELLER.c.name, RESELLER.c.email).where(RESELLER.c.id == reseller.id)
        ).first(conn)
    assert row == (reseller.name, "next@example.com")


async def test_a_slow_sqlite_read_leaves_the_event_loop_for_its_connection_thread(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compiled SELECT runs on the event loop's thread on SQLite until one run takes longer than
    `SQLITE_ON_LOOP_SECONDS`; from then on it runs in its connection's thread (where it holds no
    other request up), with the same answer."""
    if not services.db.is_sqlite:
        pytest.skip("aiosqlite's threads")
    import aiosqlite

    trips: list[Any] = []  # on this test's connection (the background workers have their own)
    original = aiosqlite.Connection._execute
    ours: list[Any] = []

    async def execute(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self in ours:
            trips.append(fn)
        return await original(self, fn, *args, **kwargs)

    numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select((numbers.c.n + 1).label("n")).where(numbers.c.n < 400_000))
    slow = CompiledStatement(select(func.count(), func.sum(numbers.c.n)).select_from(numbers))
    fast = CompiledStatement(select(literal(1).label("one")))
    expected = (400_000, 400_000 * 400_001 // 2)
    async with services.db.read_connection() as conn:
        ours.append((await conn.get_raw_connection()).driver_connection)
        monkeypatch.setattr(aiosqlite.Connection, "_execute", execute)
        assert await fast.first(conn) == (1,)
        for _ in range(SQLITE_SLOW_RUNS):  # on the loop, found slow each time
            assert await slow.first(conn) == expected
        assert trips == []
        assert await slow.first(conn) == expected  # in its thread
        assert len(trips) == 1
        assert await fast.first(conn) == (1,)  # still on the loop
        assert len(trips) == 1


async def test_one_slow_run_does_not_move_a_sqlite_read_off_the_loop(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run made slow by something else (a garbage collection, a busy machine) is not a slow
    statement: only `SQLITE_SLOW_RUNS` slow runs in a row move it to its connection's thread."""
    if not services.db.is_sqlite:
        pytest.skip("aiosqlite's threads")
    statement = CompiledStatement(select(literal(2).label("two")))
    clock = iter(range(1000))
    slow_runs = iter([True, False, True, True, False])  # never SQLITE_SLOW_RUNS in a row

    def perf_counter() -> float:  # each run reads it twice: before and after
        tick = next(clock)
        if tick % 2 == 0:
            return float(tick)
        return tick - 1 + (1.0 if next(slow_runs) else 0.0)

    async with services.db.read_connection() as conn:
        await statement.first(conn)  # compiled before the clock is replaced
        monkeypatch.setattr(app.db, "perf_counter", perf_counter)
        for _ in range(5):
            assert await statement.first(conn) == (2,)
    compiled = statement._compiled["sqlite"]
    assert compiled is not None and compiled.on_loop


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite:///file:compiled?mode=memory&cache=shared&uri=true"]
)
async def test_in_memory_sqlite_runs_compiled_reads_on_the_loop(url: str) -> None:
    """In-memory SQLite databases too (their connections are opened by aiosqlite's thread and
    read from the event loop's)."""
    db = Database(url)
    try:
        async with db.read_connection() as conn:
            assert await CompiledStatement(select(literal(7).label("seven"))).all(conn) == [(7,)]
    finally:
        await db.dispose()
