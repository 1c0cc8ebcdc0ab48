"""Alembic environment: one migration history for SQLite and PostgreSQL, run on the async engine."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import async_url
from app.models import metadata

config = context.config
MIGRATION_LOCK = 0x4F50_4D49  # "OPMI"


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Servers starting at once on several hosts migrate one after another; the
            # others then find the schema current. (PostgreSQL runs DDL in the transaction.)
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    # On SQLite, wait for a running server's write to finish as the app's own connections do
    # (a busy timeout), instead of sqlite3's 5 s default: a CLI command migrates first.
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    engine = create_async_engine(async_url(url), connect_args=connect_args)
    async with engine.connect() as connection:
        await connection.run_sync(run_on)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_online())
