"""/readyz during real outages: the database refusing connections, the LISTEN connection killed
by the server, Redis unreachable. The app runs in the test process on a real PostgreSQL database
(and real Redis), with its workers and transport started by its lifespan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest

from app.asgi import create_app
from app.settings import Settings
from tests.support.postgres import PostgresServer, database_name
from tests.support.smtp import free_port


@asynccontextmanager
async def running(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    config = Settings(  # type: ignore[call-arg]
        _env_file=None, database_url=database_url, escalation_poll_seconds=3600, **settings
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=20) as http:
            yield http


async def readiness(
    http: httpx.AsyncClient, status: int, timeout: float = 15.0, problems: list[str] | None = None
) -> Any:
    """Poll /readyz until it answers `status`, and (given `problems`) names at least those
    problems (bounded); its body. Each part of the process notices an outage on its own (the
    pool at its next ping, the transport when its connection drops), so not at the same poll."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get("/readyz")
        if response.status_code == status and (
            problems is None or set(problems) <= set(response.json().get("problems", []))
        ):
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz stayed {response.status_code}: {response.text}")
        await asyncio.sleep(0.05)


class DatabaseAdmin:
    """The PostgreSQL server's side of an outage of one database: refuse new connections to it,
    end the open ones."""

    def __init__(self, admin: Any, name: str) -> None:
        self.admin = admin
        self.name = name

    async def allow_connections(self, allowed: bool) -> None:
        value = "true" if allowed else "false"
        await self.admin.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS {value}')

    async def terminate(self, application_name: str | None = None) -> int:
        """End the open connections to the database (only `application_name`'s, if given)."""
        killed: int = await self.admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND ($2::text IS NULL OR application_name = $2)",
            self.name,
            application_name,
        )
        return killed


@asynccontextmanager
async def database_admin(
    postgres: PostgresServer, database_url: str
) -> AsyncIterator[DatabaseAdmin]:
    """A `DatabaseAdmin` of `database_url`; connections are allowed again at the end."""
    admin = await asyncpg.connect(postgres.admin_url)
    database = DatabaseAdmin(admin, database_name(database_url))
    try:
        yield database
    finally:
        await database.allow_connections(True)
        await admin.close()


OUTAGES = {
    # Every connection to the database ended and new ones refused: the pool and the LISTEN
    # connection both fail.
    "the database refuses connections": (
        None,
        ["the database does not answer", "the PostgresTransport connection is down"],
    ),
    # The server kills the LISTEN connection, and new connections are refused for a while (the
    # pool's open connections still answer, so the database is reachable).
    "the LISTEN connection is killed": (
        "orderpulse-events",
        ["the PostgresTransport connection is down"],
    ),
}


@pytest.mark.parametrize("outage", list(OUTAGES))
async def test_an_outage_makes_it_unready_until_it_ends_by_itself(
    outage: str, postgres: PostgresServer, scale_database_url: str
) -> None:
    ended, problems = OUTAGES[outage]
    async with (
        database_admin(postgres, scale_database_url) as admin,
        running(scale_database_url) as http,
    ):
        assert await readiness(http, 200) == {"status": "ready"}
        await admin.allow_connections(False)
        killed = await admin.terminate(ended)
        assert killed == 1 if ended else killed >= 1
        body = await readiness(http, 503, problems=problems)
        assert set(problems) <= set(body["problems"]), body
        await admin.allow_connections(True)
        assert await readiness(http, 200) == {"status": "ready"}  # reconnected by itself


async def test_redis_unreachable_makes_it_unready(scale_database_url: str, redis_url: str) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"
    async with running(scale_database_url, redis_url=closed) as http:
        body = await readiness(http, 503)
        assert body["problems"] == [
            "the RedisTransport connection is down",
            "the rate limit store (Redis) does not answer",
        ]
        # the API itself still answers; the rate limit lets operations through meanwhile
        response = await http.post("/graphql", json={"query": "{ viewer { role } }"})
        assert response.status_code == 200
    async with running(scale_database_url, redis_url=redis_url) as http:
        assert await readiness(http, 200) == {"status": "ready"}
