"""Fixtures of the multi-process tests: real PostgreSQL, Redis and server processes.

Without PostgreSQL (or Redis, for the Redis tests) these tests skip, saying why. In CI (CI=true)
they must run: an unreachable service fails them instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.db import Database
from app.services import Services
from app.settings import Settings
from tests.support.api import Factory
from tests.support.postgres import PostgresServer
from tests.support.processes import ServerProcess, server_env

IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("ORDERPULSE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(reason: str) -> None:
    """Skip with the reason; in CI, fail: these tests must not be skipped there."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: the multi-process tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    server = PostgresServer.from_env()
    reason = server.unreachable_reason()
    if reason is not None:
        unavailable(reason)
    return server


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except Exception as exc:
        unavailable(f"Redis at {REDIS_URL} is unreachable: {type(exc).__name__}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def scale_database_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own (a copy of the session's template)."""
    _server, template = request.getfixturevalue("postgres_template")
    url = postgres.create_database(template=template)
    yield url
    postgres.drop_database(url)


@pytest.fixture
async def direct(scale_database_url: str) -> AsyncIterator[Services]:
    """Services of the test process on the same database, to build rows (no workers run)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url=scale_database_url,
        support_email="support@distributor.example",
        incident_threshold=1000,  # as tests/conftest.py and the server processes' (processes.py)
    )
    services = Services(settings=settings, db=Database(scale_database_url))
    yield services
    await services.db.dispose()


@pytest.fixture
def rows(direct: Services) -> Factory:
    return Factory(direct)


Launch = Callable[..., Any]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """`await launch(database_url, count=2, **settings)`: ready server processes, stopped after."""
    started: list[ServerProcess] = []

    async def start(
        database_url: str, *, count: int = 2, workers: int = 1, **settings: str
    ) -> list[ServerProcess]:
        env = server_env(database_url, **settings)
        batch = [
            ServerProcess.launch(
                env, log_dir=tmp_path, name=f"server{len(started) + i}", workers=workers
            )
            for i in range(count)
        ]
        started.extend(batch)
        for server in batch:
            await server.wait_ready()
        return batch

    yield start
    for server in started:
        await server.aclose()
        server.stop()


@pytest.fixture
async def two_servers(launch: Launch, scale_database_url: str) -> list[ServerProcess]:
    """Two server processes on the test's database, with the default settings."""
    servers: list[ServerProcess] = await launch(scale_database_url, count=2)
    return servers
