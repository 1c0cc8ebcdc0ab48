"""Shared fixtures: a migrated database per test, the ASGI app, clients and factories."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
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


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated once; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the configuration."""
    return {}


@pytest.fixture
def settings(
    tmp_path: Path, migrated_template: Path, settings_overrides: dict[str, Any]
) -> Settings:
    db_path = tmp_path / "orderpulse.db"
    shutil.copy(migrated_template, db_path)
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{db_path}",
        "support_email": "support@distributor.example",
        "mail_from": "orderpulse@distributor.example",
        "mail_dir": str(tmp_path / "mail"),
        "timezone": "UTC",
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
