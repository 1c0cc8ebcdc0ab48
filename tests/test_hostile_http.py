"""Hostile clients against a real server (SPEC 8, "Hostile clients"): the rate limit holds whatever
the method, the headers or the transport, and slow or greedy connections are cut off while other
clients are served.

Every test attacks the live uvicorn server (`tests.support.server`) over real sockets: httpx for
HTTP, raw asyncio streams for slow clients, the websockets client for handshakes.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlmodel import select
from websockets.exceptions import InvalidStatus

import app.asgi
from app.orders.models import Reseller
from app.services import Services
from tests.observability.helpers import scrape, value
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.ws import ws_client

LIMIT = 3
CREATE = (
    'mutation { createReseller(input: {name: "R%d", email: "r%d@r.example"}) { reseller { id } } }'
)
VIEWER = {"query": "{ viewer { role } }"}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"rate_limit": f"{LIMIT}/hour"}


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


@pytest.fixture
def token_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens HTTP requests look up in the database, in order."""
    reads: list[str] = []
    look_up = app.asgi.viewer_for_token

    async def counted(conn: Any, token: str, **options: Any) -> Any:
        reads.append(token)
        return await look_up(conn, token, **options)

    monkeypatch.setattr(app.asgi, "viewer_for_token", counted)
    return reads


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def random_token() -> str:
    return "op_" + secrets.token_urlsafe(32)


async def reseller_names(services: Services) -> list[str]:
    async with services.db.read() as session:
        return sorted(r.name for r in (await session.exec(select(Reseller))).all())


# --- the rate limit, whatever the method, header or transport ------------------------------------


async def test_every_method_on_graphql_is_refused_or_counted(
    http: httpx.AsyncClient, factory: Factory, services: Services
) -> None:
    token = await factory.token("SUPPORT")
    body = {"json": {"query": CREATE % (1, 1)}, "headers": bearer(token)}
    statuses = []
    for _ in range(5):  # HEAD ran mutations uncounted: it runs nothing now
        response = await http.request("HEAD", "/graphql", **body)  # type: ignore[arg-type]
        statuses.append(response.status_code)
        assert response.headers["allow"] == "GET, POST"
    statuses.append((await http.request("OPTIONS", "/graphql", **body)).status_code)  # type: ignore[arg-type]
    # the other methods are counted (token and, as it is not yet known live, address) and refused
    for method in ("PUT", "PATCH", "DELETE"):
        statuses.append((await http.request(method, "/graphql", **body)).status_code)  # type: ignore[arg-type]
    statuses.append((await http.post("/graphql", **body)).status_code)  # type: ignore[arg-type]
    assert statuses == [405] * 5 + [405] + [405] * 3 + [429]
    assert await reseller_names(services) == []  # nothing ran


async def test_two_authorization_headers_are_refused(
    http: httpx.AsyncClient, factory: Factory, services: Services, token_reads: list[str]
) -> None:
    token = await factory.token("SUPPORT")
    for n in range(LIMIT):
        response = await http.post(
            "/graphql", json={"query": CREATE % (n, n)}, headers=bearer(token)
        )
        assert response.status_code == 200, response.text
    assert (
        await http.post("/graphql", json={"query": CREATE % (7, 7)}, headers=bearer(token))
    ).status_code == 429
    reads_before = len(token_reads)
    # the limiter keyed on the last header, authentication used the first: 15/15 got through
    for pair in ([token, random_token()], [random_token(), token], [token, token]):
        headers = httpx.Headers([("Authorization", f"Bearer {value}") for value in pair])
        response = await http.post("/graphql", json={"query": CREATE % (8, 8)}, headers=headers)
        assert response.status_code == 400
        assert response.json() == {"errors": [{"message": "Send at most one Authorization header"}]}
    assert await reseller_names(services) == ["R0", "R1", "R2"]
    assert len(token_reads) == reads_before  # refused before any token was read


async def test_a_token_that_does_not_exist_is_charged_to_the_address(
    http: httpx.AsyncClient, factory: Factory, token_reads: list[str]
) -> None:
    live = await factory.token("SUPPORT")
    # a live token, once found live, spends its own budget (its first request, the address's too)
    assert (await http.post("/graphql", json=VIEWER, headers=bearer(live))).status_code == 200
    statuses = []
    for _ in range(20):  # a fresh random token per request escaped the per-address limit: 20/20
        response = await http.post("/graphql", json=VIEWER, headers=bearer(random_token()))
        statuses.append(response.status_code)
    assert statuses == [200] * (LIMIT - 1) + [429] * (20 - LIMIT + 1)
    refused = await http.post("/graphql", json=VIEWER, headers=bearer(random_token()))
    assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert 3590 <= int(refused.headers["retry-after"]) <= 3600
    # the address's budget is spent, for requests without a token too
    assert (await http.post("/graphql", json=VIEWER)).status_code == 429
    # each refused bogus token cost no database read: one read per request let through
    assert len(token_reads) == 1 + (LIMIT - 1)
    # the live token still has its own budget
    response = await http.post("/graphql", json=VIEWER, headers=bearer(live))
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"role": "SUPPORT"}}}


async def test_websocket_handshakes_and_inits_are_charged_to_the_address(
    live_server: LiveServer, http: httpx.AsyncClient, services: Services
) -> None:
    before = await scrape(http)
    reads = services.viewers.reads
    async with ws_client(live_server.ws_url) as ws:  # handshake: 1 of 3
        await ws.send({"type": "connection_init", "payload": bearer(random_token())})  # 2 of 3
        assert await ws.closed_with() == (4403, "Forbidden")
    assert services.viewers.reads == reads + 1  # the bogus token was read once
    async with ws_client(live_server.ws_url) as ws:  # handshake: 3 of 3
        await ws.send({"type": "connection_init", "payload": bearer(random_token())})
        code, reason = await ws.closed_with()
        assert code == 4429
        assert reason is not None and reason.startswith("Rate limit exceeded: try again in ")
    assert services.viewers.reads == reads + 1  # refused before its token was read
    with pytest.raises(InvalidStatus) as refused:
        async with ws_client(live_server.ws_url):
            pass
    response = refused.value.response
    assert response.status_code == 429
    assert 3590 <= int(response.headers["retry-after"]) <= 3600
    assert (await http.post("/graphql", json=VIEWER)).status_code == 429  # one budget for all
    after = await scrape(http)
    refusals = value(after, "orderpulse_rate_limited_total", transport="websocket") - value(
        before, "orderpulse_rate_limited_total", transport="websocket"
    )
    assert refusals == 2


async def test_two_authorization_keys_in_connection_init_are_refused(
    live_server: LiveServer, factory: Factory
) -> None:
    token = await factory.token("SUPPORT")
    async with ws_client(live_server.ws_url) as ws:
        payload = {"Authorization": f"Bearer {token}", "authorization": "Bearer op_x"}
        await ws.send({"type": "connection_init", "payload": payload})
        assert await ws.closed_with() == (4400, "Invalid connection init payload")


@pytest.mark.parametrize(
    ("settings_overrides", "separate_budgets"),
    [
        ({"rate_limit": f"{LIMIT}/hour"}, False),
        ({"rate_limit": f"{LIMIT}/hour", "forwarded_allow_ips": "127.0.0.1"}, True),
    ],
    ids=["no-trusted-proxy", "trusted-proxy"],
)
async def test_the_forwarded_address_counts_only_from_a_trusted_proxy(
    http: httpx.AsyncClient, separate_budgets: bool
) -> None:
    """Without ORDERPULSE_FORWARDED_ALLOW_IPS, X-Forwarded-For is the client's own invention
    (uvicorn's default would believe it from 127.0.0.1): a new one per request changes nothing."""
    statuses = []
    for n in range(LIMIT + 1):
        response = await http.post(
            "/graphql", json=VIEWER, headers={"X-Forwarded-For": f"10.0.0.{n + 1}"}
        )
        statuses.append(response.status_code)
    same_client = [
        (
            await http.post("/graphql", json=VIEWER, headers={"X-Forwarded-For": "10.0.0.1"})
        ).status_code
        for _ in range(LIMIT)
    ]
    if separate_budgets:  # each forwarded client has a budget of its own
        assert statuses == [200] * (LIMIT + 1)
        assert same_client == [200] * (LIMIT - 1) + [429]
    else:
        assert statuses == [200] * LIMIT + [429]
        assert same_client == [429] * LIMIT
