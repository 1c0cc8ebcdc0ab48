"""Throwaway PostgreSQL databases for tests: one migrated template, a copy per test.

    server = PostgresServer.from_env()          # ORDERPULSE_TEST_POSTGRES_URL or 127.0.0.1:5432
    reason = server.unreachable_reason()        # None when it answers
    template = server.create_migrated_template()
    url = server.create_database(template=template)   # CREATE DATABASE ... TEMPLATE: fast
    server.drop_database(url)

Every name carries the process id and a random part, so several test runs (and engineers) can
share one server. Admin work goes through asyncpg on a private event loop in a thread, so these
helpers can be called from sync fixtures while a test's loop exists.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.migrate import migrate

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T = TypeVar("T")


def run_in_thread(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a fresh event loop in another thread."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(120)
    if errors:
        raise errors[0]
    if not result:
        raise TimeoutError("PostgreSQL admin command did not finish in 120 s")
    return result[0]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _quoted(name: str) -> str:
    assert name.replace("_", "").isalnum(), name
    return '"' + name + '"'


@dataclass(frozen=True)
class PostgresServer:
    admin_url: str

    @classmethod
    def from_env(cls) -> PostgresServer:
        return cls(os.environ.get("ORDERPULSE_TEST_POSTGRES_URL", DEFAULT_ADMIN_URL))

    def _fresh_name(self, prefix: str) -> str:
        return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=5)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    def unreachable_reason(self) -> str | None:
        """Why the server cannot be used, or None when it answers `SELECT 1`."""

        async def probe() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=3)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()

        try:
            run_in_thread(probe)
        except Exception as exc:
            return f"PostgreSQL at {self.admin_url} is unreachable: {type(exc).__name__}: {exc}"
        return None

    def create_database(self, *, template: str | None = None, prefix: str = "op_test") -> str:
        """A new empty (or template-copied) database; its URL."""
        name = self._fresh_name(prefix)
        source = f" TEMPLATE {_quoted(template)}" if template else ""
        run_in_thread(lambda: self._admin(f"CREATE DATABASE {_quoted(name)}{source}"))
        return with_database(self.admin_url, name)

    def create_migrated_template(self) -> str:
        """A database brought to the current schema, to copy per test; its name."""
        url = self.create_database(prefix="op_tpl")
        migrate(url)
        return database_name(url)

    def drop_database(self, url_or_name: str) -> None:
        name = database_name(url_or_name) if "://" in url_or_name else url_or_name
        run_in_thread(lambda: self._admin(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)"))
