"""One migration history for SQLite and PostgreSQL: it builds exactly the schema of the models,
and goes down and up again cleanly. (The PostgreSQL run is in tests/scale.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import async_url
from app.migrate import alembic_config, migrate
from app.models import metadata


async def schema_differences(url: str) -> list[Any]:
    """What Alembic would change to make the database match the models (nothing, we hope)."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:

            def compare(sync_conn: Any) -> list[Any]:
                context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                return list(compare_metadata(context, metadata))

            return await conn.run_sync(compare)
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: c.dialect.get_table_names(c)))
    finally:
        await engine.dispose()


async def check_migrations(url: str) -> None:
    """Up, compare, all the way down, up again, compare (Alembic runs its own event loop, so
    its commands run in a thread)."""
    await asyncio.to_thread(migrate, url)
    assert await schema_differences(url) == []
    await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
    assert await table_names(url) == {"alembic_version"}
    await asyncio.to_thread(migrate, url)
    assert await schema_differences(url) == []


async def test_sqlite_migrations_build_the_models_schema(tmp_path: Path) -> None:
    await check_migrations(f"sqlite:///{tmp_path / 'm.db'}")
