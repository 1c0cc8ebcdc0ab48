"""Shared fixtures: a migrated database per test, the ASGI app, clients and factories."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from app.migrate import migrate
from app.services import Services
from app.settings import Settings
from tests.support.api import Factory, GraphQLClient
from tests.support.clock import FakeClock
from tests.support.postgres import PostgresServer
from tests.support.server import live_server  # noqa: F401  (a real uvicorn server)
from tests.support.smtp import smtp_server  # noqa: F401  (the real SMTP server fixture)

# ORDERPULSE_TEST_DATABASE=postgres runs every test on a fresh PostgreSQL database
# (ORDERPULSE_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres).
TEST_DATABASE = os.environ.get("ORDERPULSE_TEST_DATABASE", "sqlite").strip().lower()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[PostgresServer, str]]:
    """A PostgreSQL database migrated once per session; each test gets a copy of it."""
    server = PostgresServer.from_env()
    reason = server.unreachable_reason()
    if reason is not None:
        pytest.fail(f"ORDERPULSE_TEST_DATABASE=postgres, but {reason}", pytrace=False)
    template = server.create_migrated_template()
    yield server, template
    server.drop_database(template)


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of its own for one test, dropped afterwards."""
    if TEST_DATABASE in ("postgres", "postgresql"):
        server, template = request.getfixturevalue("postgres_template")
        url = server.create_database(template=template)
        yield url
        server.drop_database(url)
        return
    db_path = tmp_path / "orderpulse.db"
    shutil.copy(request.getfixturevalue("migrated_template"), db_path)
    yield f"sqlite:///{db_path}"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the configuration."""
    return {}


@pytest.fixture
def uvicorn_overrides() -> dict[str, Any]:
    """Override (parametrize) in a test to change the live server's uvicorn settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "support_email": "support@distributor.example",
        "mail_from": "orderpulse@distributor.example",
        "mail_dir": str(tmp_path / "mail"),
        "timezone": "UTC",
        # Tests of per-order failures fail many orders with one reason within minutes, which is
        # an incident by default (SPEC 10); tests/incidents sets the threshold it tests.
        "incident_threshold": 1000,
        **settings_overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[Starlette]:
    from app.asgi import create_app

    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
def services(app: Starlette) -> Services:
    result: Services = app.state.services
    return result


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[GraphQLClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield GraphQLClient(http)


@pytest.fixture
def factory(services: Services) -> Factory:
    return Factory(services)
