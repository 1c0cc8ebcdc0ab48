"""The query guards hold on every transport: HTTP POST, HTTP GET, and the websocket's `subscribe`
(subscriptions and queries sent over the socket), against a real uvicorn server.

Each refusal is `QUERY_TOO_COMPLEX`, comes before any resolver runs (nothing is written, no
subscription reaches the fan-out), and unexpected errors are masked alike everywhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import strawberry
from graphql import parse
from strawberry.extensions import ParserCache, ValidationCache

from app.graphql.context import Context
from app.graphql.guards import Guards, GuardsExtension
from app.graphql.loaders import Loaders
from app.graphql.mutations import Mutation
from app.graphql.queries import Query
from app.graphql.schema import build_schema
from app.graphql.subscriptions import Subscription
from app.services import Services
from tests.support.api import SUPPORT, Factory, gid
from tests.support.server import LiveServer
from tests.support.ws import WSClient, ws_client

# --- documents over each guard (with the default limits) ----------------------------------------

DEEP_QUERY = "{ orders(first: 1) { edges { node { customer { reseller { customers(first: 1) { edges { node { orders(first: 1) { edges { node { customer { reseller { name } } } } } } } } } } } } } }"
DEEP_SUBSCRIPTION = "subscription { orderStatusChanged { order { customer { reseller { customers(first: 1) { edges { node { orders(first: 1) { edges { node { customer { reseller { customers(first: 1) { totalCount } } } } } } } } } } } } } }"
ALIASES_QUERY = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(31)) + " }"
ALIASES_SUBSCRIPTION = (
    "subscription { orderStatusChanged { " + " ".join(f"a{i}: cursor" for i in range(31)) + " } }"
)
TOKENS_QUERY = "{ viewer { " + " ".join(["role"] * 2000) + " } }"
TOKENS_SUBSCRIPTION = "subscription { orderStatusChanged { " + " ".join(["cursor"] * 2000) + " } }"
# 1 + 100 * (1 + 1 + 1 + 1 + 100 * 3) = 30401 with both pages at 100
COSTLY_QUERY = "query($n: Int) { orders(first: $n) { edges { node { customer { orders(first: 100) { edges { node { id } } } } } } } }"
COSTLY_SUBSCRIPTION = "subscription($n: Int) { orderStatusChanged { order { customer { orders(first: $n) { edges { node { customer { orders(first: 100) { edges { node { id } } } } } } } } } } }"
COSTLY_MUTATION = 'mutation { createReseller(input: {name: "Costly", email: "costly@r.example"}) { reseller { customers(first: 100) { edges { node { orders(first: 100) { edges { node { id number } } } } } } } } }'

GUARDED_QUERIES = {
    "depth": (DEEP_QUERY, None),
    "aliases": (ALIASES_QUERY, None),
    "tokens": (TOKENS_QUERY, None),
    "cost (variable first)": (COSTLY_QUERY, {"n": 100}),
}
GUARDED_SUBSCRIPTIONS = {
    "depth": (DEEP_SUBSCRIPTION, None),
    "aliases": (ALIASES_SUBSCRIPTION, None),
    "tokens": (TOKENS_SUBSCRIPTION, None),
    "cost (variable first)": (COSTLY_SUBSCRIPTION, {"n": 100}),
}
FRAGMENTS = {
    "depth": "exceeds maximum operation depth of 12",
    "aliases": "31 aliases found. Allowed: 30",
    "tokens": "Document contains more than 2000 tokens",
    "cost (variable first)": "more than the 20000 allowed: ask for fewer fields or smaller pages",
}


def assert_too_complex(errors: list[dict[str, Any]], guard: str) -> None:
    assert len(errors) == 1, errors
    assert errors[0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}, errors
    assert FRAGMENTS[guard] in errors[0]["message"], errors


@pytest.fixture
async def token(factory: Factory) -> str:
    return await factory.token("SUPPORT")


@asynccontextmanager
async def connected(server: LiveServer, token: str) -> AsyncIterator[WSClient]:
    async with ws_client(server.ws_url) as ws:
        assert await ws.init(token) == {"type": "connection_ack"}
        yield ws


# --- the cost itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "variables", "cost"),
    [
        ("{ viewer { role } }", None, 2),
        ("{ orders { totalCount } }", None, 1 + 20),  # the default page: 20
        ("{ orders(first: 5) { totalCount edges { node { id } } } }", None, 1 + 5 * 4),
        ("query($n: Int) { orders(first: $n) { totalCount } }", {"n": 7}, 1 + 7),
        ("query($n: Int) { orders(first: $n) { totalCount } }", {}, 1 + 20),
        (COSTLY_QUERY, {"n": 100}, 30401),
        (COSTLY_QUERY, {"n": 10}, 1 + 10 * (4 + 300)),
        (
            "query { ...F } fragment F on Query { orders(first: 2) { edges { node { ...O } } } } fragment O on Order { id number }",
            None,
            1 + 2 * (1 + 1 + 2),
        ),
        ("{ node(id: 1) { id ... on Order { number history { to } } } }", None, 1 + 4),
    ],
)
def test_the_cost_counts_fields_and_multiplies_pages(
    document: str, variables: dict[str, Any] | None, cost: int
) -> None:
    schema = build_schema()
    assert schema.guards.cost(schema._schema, parse(document), None, variables) == cost


# --- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("guard", list(GUARDED_QUERIES))
async def test_each_guard_refuses_over_http_post(
    live_server: LiveServer, token: str, guard: str
) -> None:
    query, variables = GUARDED_QUERIES[guard]
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live_server.http_url,
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    assert_too_complex(body["errors"], guard)


@pytest.mark.parametrize("guard", list(GUARDED_QUERIES))
async def test_each_guard_refuses_over_http_get(
    live_server: LiveServer, token: str, guard: str
) -> None:
    import json

    query, variables = GUARDED_QUERIES[guard]
    params = {"query": query}
    if variables is not None:
        params["variables"] = json.dumps(variables)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            live_server.http_url,
            params=params,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/graphql-response+json",
            },
        )
    assert response.status_code == 400  # a request that never ran
    body = response.json()
    assert "data" not in body
    assert_too_complex(body["errors"], guard)


async def test_a_costly_mutation_is_refused_before_it_writes(
    live_server: LiveServer, token: str
) -> None:
    async with httpx.AsyncClient() as http:
        headers = {"Authorization": f"Bearer {token}"}
        response = await http.post(
            live_server.http_url, json={"query": COSTLY_MUTATION}, headers=headers
        )
        body = response.json()
        assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
        assert "costs 40303" in body["errors"][0]["message"]
        count = await http.post(
            live_server.http_url, json={"query": "{ resellers { totalCount } }"}, headers=headers
        )
    assert count.json() == {"data": {"resellers": {"totalCount": 0}}}


async def test_a_query_within_the_limits_runs(live_server: LiveServer, token: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            live_server.http_url,
            json={"query": COSTLY_QUERY, "variables": {"n": 10}},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.json() == {"data": {"orders": {"edges": []}}}


# --- websocket ----------------------------------------------------------------------------------


@pytest.mark.parametrize("guard", list(FRAGMENTS))
@pytest.mark.parametrize(
    "operations", [GUARDED_SUBSCRIPTIONS, GUARDED_QUERIES], ids=["subscription", "query"]
)
async def test_each_guard_refuses_an_operation_over_the_websocket(
    live_server: LiveServer,
    token: str,
    services: Services,
    operations: dict[str, tuple[str, dict[str, Any] | None]],
    guard: str,
) -> None:
    query, variables = operations[guard]
    async with connected(live_server, token) as ws:
        await ws.subscribe("op", query, variables)
        message = await ws.receive()
        assert (message["id"], message["type"]) == ("op", "error"), message
        assert_too_complex(message["payload"], guard)
        assert await ws.until_pong() == []  # the socket stays open for other operations
        assert services.fanout.audience_count == 0  # nothing was started


async def test_a_subscription_within_the_cost_is_accepted(
    live_server: LiveServer, token: str, services: Services
) -> None:
    async with connected(live_server, token) as ws:
        await ws.subscribe("s", COSTLY_SUBSCRIPTION, {"n": 10})
        assert await ws.until_pong() == []
        assert services.fanout.audience_count == 1


# --- masking ------------------------------------------------------------------------------------


async def test_unexpected_errors_are_masked_alike_over_http_and_websocket(
    live_server: LiveServer, token: str, factory: Factory, services: Services
) -> None:
    from app.graphql.loaders import CustomerByIdLoader

    customer = await factory.customer()

    async def broken(self: Any, keys: Any) -> Any:
        raise RuntimeError("secret database detail")

    original = CustomerByIdLoader._load
    subscription = "subscription { orderStatusChanged { to order { customer { name } } } }"
    # `order(id:)` is answered by the executor (the read planner covers `orders`, whose page
    # joins the customer instead of loading it), so the broken loader is what runs.
    query = '{ order(id: "%s") { customer { name } } }'
    async with connected(live_server, token) as ws:
        await ws.subscribe("s", subscription)
        assert await ws.until_pong() == []
        CustomerByIdLoader._load = broken  # type: ignore[method-assign]
        try:
            query %= gid("Order", await factory.order(customer, status="PR"))
            over_subscription = await ws.receive()
            await ws.subscribe("q", query)
            over_socket_query = await ws.receive()
            async with httpx.AsyncClient() as http:
                response = await http.post(
                    live_server.http_url,
                    json={"query": query},
                    headers={"Authorization": f"Bearer {token}"},
                )
        finally:
            CustomerByIdLoader._load = original  # type: ignore[method-assign]
    errors = [
        over_subscription["payload"]["errors"],
        over_socket_query["payload"]["errors"],
        response.json()["errors"],
    ]
    for each in errors:
        assert {e["message"] for e in each} == {"Unexpected error."}, errors
        assert "secret" not in str(each)
        assert all(e["extensions"] == {"code": "INTERNAL_SERVER_ERROR"} for e in each), errors


# --- caches never skip a guard ------------------------------------------------------------------


async def test_parser_and_validation_caches_never_skip_a_guard(services: Services) -> None:
    """The read planner adds ParserCache and ValidationCache: a cache hit still meets every
    guard, and the cost (which depends on the variables) is checked on every request."""
    guards = Guards.from_settings(services.settings)
    schema = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[lambda: GuardsExtension(guards), ParserCache, ValidationCache],
    )
    context = Context(services=services, viewer=SUPPORT, loaders=Loaders(services.db))

    async def codes(query: str, variables: dict[str, Any] | None = None) -> list[Any]:
        result = await schema.execute(query, variable_values=variables, context_value=context)
        return [(e.extensions or {}).get("code") for e in result.errors or ()]

    for _ in range(2):  # the second time, both caches hit
        assert await codes(DEEP_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(ALIASES_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(TOKENS_QUERY) == ["QUERY_TOO_COMPLEX"]
        assert await codes(COSTLY_QUERY, {"n": 10}) == []
        assert await codes(COSTLY_QUERY, {"n": 100}) == ["QUERY_TOO_COMPLEX"]
