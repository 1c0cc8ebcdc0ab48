"""Rate limits in one process (memory storage): per token, per address without one, over HTTP
and per websocket `subscribe`. The shared limit across processes is in tests/scale."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from limits import parse
from limits.aio.storage import RedisStorage
from sqlmodel import select

from app.orders.models import Reseller
from app.ratelimit import LocalWindows, RateLimiter
from app.services import Services
from app.settings import Settings
from tests.observability.helpers import scrape, value
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.ws import ws_client

LIMIT = 3
CREATE = (
    'mutation { createReseller(input: {name: "R%d", email: "r%d@r.example"}) { reseller { id } } }'
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit": f"{LIMIT}/hour"}


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_over_the_limit_is_429_with_retry_after_and_nothing_runs(
    http: httpx.AsyncClient, factory: Factory, services: Services
) -> None:
    token = await factory.token("SUPPORT")
    before = await scrape(http)
    for n in range(LIMIT):
        response = await http.post(
            "/graphql", json={"query": CREATE % (n, n)}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
        assert response.json()["data"]["createReseller"]["reseller"]["id"]
    response = await http.post("/graphql", json={"query": CREATE % (9, 9)}, headers=bearer(token))
    assert response.status_code == 429
    retry_after = int(response.headers["retry-after"])
    assert 3590 <= retry_after <= 3600  # the window is an hour, and it just began
    body = response.json()
    assert body["data"] is None
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "RATE_LIMITED", "retryAfter": retry_after}
    ]
    assert response.headers["x-request-id"]  # still an HTTP response like any other
    async with services.db.read() as session:
        names = sorted(r.name for r in (await session.exec(select(Reseller))).all())
    assert names == ["R0", "R1", "R2"]  # the refused mutation wrote nothing

    # another token has its own budget; the refusal was counted
    other = await factory.token("SUPPORT")
    response = await http.post(
        "/graphql", json={"query": "{ viewer { role } }"}, headers=bearer(other)
    )
    assert response.status_code == 200
    after = await scrape(http)
    assert (
        value(after, "orderpulse_rate_limited_total", transport="http")
        - value(before, "orderpulse_rate_limited_total", transport="http")
        == 1
    )


async def test_without_a_token_the_address_is_limited(http: httpx.AsyncClient) -> None:
    statuses = [
        (await http.post("/graphql", json={"query": "{ viewer { role } }"})).status_code
        for _ in range(LIMIT + 1)
    ]
    assert statuses == [200] * LIMIT + [429]


async def test_health_metrics_and_graphiql_do_not_spend_the_budget(
    http: httpx.AsyncClient,
) -> None:
    for _ in range(LIMIT + 2):
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/graphql", headers={"Accept": "text/html"})).status_code == 200
    assert (await http.post("/graphql", json={"query": "{ viewer { role } }"})).status_code == 200


async def test_each_subscribe_over_the_limit_gets_a_rate_limited_error(
    live_server: LiveServer, factory: Factory, http: httpx.AsyncClient
) -> None:
    token = await factory.token("SUPPORT")
    # one HTTP operation and the socket's subscribes share the token's budget
    assert (
        await http.post("/graphql", json={"query": "{ viewer { role } }"}, headers=bearer(token))
    ).status_code == 200
    async with ws_client(live_server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        for id in ("1", "2"):
            await ws.subscribe(id, "subscription { orderStatusChanged { to } }")
        await ws.subscribe("3", "subscription { orderStatusChanged { to } }")
        message = await ws.receive()
        assert message["type"] == "error" and message["id"] == "3", message
        [error] = message["payload"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 3590 <= error["extensions"]["retryAfter"] <= 3600
        assert await ws.until_pong() == []  # the socket stays open; 1 and 2 still run
    samples = await scrape(http)
    assert value(samples, "orderpulse_rate_limited_total", transport="websocket") >= 1


def test_the_in_process_window_allows_n_in_any_period_and_forgets_idle_keys() -> None:
    now = [1000.0]
    windows = LocalWindows(parse("3/10 seconds"), now=lambda: now[0])
    answers = []
    for at in (0, 1, 2, 3, 9.5, 10, 10.5, 11, 12):
        now[0] = 1000.0 + at
        answers.append(windows.hit("token:a"))
    assert answers == [None, None, None, 7.0, 0.5, None, 0.5, None, None]
    assert windows.hit("token:b") is None  # another key has its own budget
    now[0] = 1000.0 + 12 + 10  # a whole period later: both keys idle, dropped on the next hit
    assert windows.hit("token:c") is None
    assert set(windows.hits) == {"token:c"}


def test_the_shared_store_waits_on_redis_no_longer_than_the_setting() -> None:
    """ORDERPULSE_REDIS_TIMEOUT_SECONDS bounds the rate limit store's connect and commands too
    (limits hands `options` to redis-py's client)."""
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="postgresql+asyncpg://u@127.0.0.1/orderpulse",
        redis_url="redis://127.0.0.1:6379/0",
        redis_timeout_seconds=0.7,
    )
    limiter = RateLimiter.from_settings(settings)
    assert isinstance(limiter.storage, RedisStorage)
    assert limiter.storage.options == {"socket_connect_timeout": 0.7, "socket_timeout": 0.7}
