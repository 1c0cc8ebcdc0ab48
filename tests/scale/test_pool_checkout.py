"""A pooled PostgreSQL connection is checked out without a round trip, and one the server closed
is replaced at checkout (what `pool_pre_ping` did, with three round trips each time)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text

from app.db import Database


async def test_a_checkout_costs_no_round_trip_and_a_closed_connection_is_replaced(
    scale_database_url: str,
) -> None:
    db = Database(scale_database_url)
    try:
        async with db.engine.connect() as conn:
            first_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            driver = (await conn.get_raw_connection()).driver_connection
        sent: list[str] = []

        def logged(query: Any) -> None:
            sent.append(query.query)

        driver.add_query_logger(logged)
        async with db.engine.connect() as conn:  # the same pooled connection, unpinged
            assert (await conn.get_raw_connection()).driver_connection is driver
        assert sent == []

        admin = await asyncpg.connect(scale_database_url)
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", first_pid) is True
        finally:
            await admin.close()
        for _ in range(100):  # the event loop reads the server's end of the connection
            if driver.is_closed():
                break
            await asyncio.sleep(0.01)
        assert driver.is_closed()
        async with db.engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid != first_pid
    finally:
        await db.dispose()
