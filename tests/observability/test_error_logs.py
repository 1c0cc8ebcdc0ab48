"""An error a client caused is logged once at WARNING without a traceback; a bug once at ERROR
with its traceback (SPEC 8, "Hostile clients": no log flooding) — on every transport: HTTP, a
query over a websocket, a subscription that does not start, and the websocket fan-out, which
renders events outside strawberry's pipeline (app/graphql/ws/documents.py)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

from app.graphql.loaders import CustomerByIdLoader
from app.services import Services
from tests.support.api import Factory
from tests.support.events import record_note
from tests.support.server import LiveServer
from tests.support.ws import connected, ws_client

BAD_DOCUMENT = "{ nothingHere }"
NOT_A_FIELD = "Cannot query field 'nothingHere' on type 'Query'."


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


Logged = Callable[[], list[tuple[str, str, str, bool]]]


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> Logged:
    """(logger, level, message, with a traceback) of each record of OrderPulse's own loggers at
    WARNING and above in the test's call phase (`caplog.get_records("call")`: the set-up's
    records, such as a fixture's server starting, are kept apart by pytest)."""
    caplog.set_level(logging.WARNING)

    def records() -> list[tuple[str, str, str, bool]]:
        return [
            (r.name, r.levelname, r.getMessage(), bool(r.exc_info and r.exc_info[0]))
            for r in caplog.get_records("call")
            if r.name.startswith("orderpulse")
        ]

    return records


@pytest.fixture
def broken_customer_loader() -> Iterator[None]:
    async def broken(self: Any, keys: Any) -> Any:
        raise RuntimeError("secret database detail")

    original = CustomerByIdLoader._load
    CustomerByIdLoader._load = broken  # type: ignore[method-assign]
    yield
    CustomerByIdLoader._load = original  # type: ignore[method-assign]


async def test_client_errors_over_http_are_one_warning_each(
    http: httpx.AsyncClient, logged: Logged
) -> None:
    for _ in range(3):
        body = (await http.post("/graphql", json={"query": BAD_DOCUMENT})).json()
        assert body["errors"][0]["message"] == NOT_A_FIELD
    body = (
        await http.post("/graphql", json={"query": "{ orders(first: 1) { totalCount } }"})
    ).json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert logged() == [
        ("orderpulse.graphql", "WARNING", f"GraphQL error: {NOT_A_FIELD}", False)
    ] * 3 + [
        ("orderpulse.graphql", "WARNING", "GraphQL error: " + body["errors"][0]["message"], False)
    ]


async def test_client_errors_over_a_websocket_are_one_warning_each(
    live_server: LiveServer, factory: Factory, logged: Logged
) -> None:
    token = await factory.token("SUPPORT")
    async with connected(live_server.ws_url, token) as ws:
        await ws.subscribe("q", BAD_DOCUMENT)  # a query over the socket that does not validate
        assert (await ws.receive())["payload"][0]["message"] == NOT_A_FIELD
        await ws.subscribe("c", 'subscription { orderStatusChanged(after: "garbage") { cursor } }')
        refused = await ws.receive()
        assert (refused["id"], refused["type"]) == ("c", "error")
        await ws.subscribe("m", "mutation { nothingHere }")
        assert (await ws.receive())["type"] == "error"
        assert await ws.until_pong() == []
    cursor_message = refused["payload"][0]["message"]
    assert logged() == [
        ("orderpulse.graphql", "WARNING", f"GraphQL error: {NOT_A_FIELD}", False),
        ("orderpulse.graphql", "WARNING", f"GraphQL error: {cursor_message}", False),
        (
            "orderpulse.graphql",
            "WARNING",
            "GraphQL error: Cannot query field 'nothingHere' on type 'Mutation'.",
            False,
        ),
    ]


async def test_an_unexpected_error_in_the_fan_out_is_one_error_with_its_traceback(
    live_server: LiveServer,
    factory: Factory,
    services: Services,
    logged: Logged,
    broken_customer_loader: None,
) -> None:
    """Two subscribers share one rendering of each event: one ERROR line per event, not one
    per subscriber; the clients see only the masked message."""
    token = await factory.token("SUPPORT")
    order = await factory.order(await factory.customer(), status="PR")
    query = "subscription { orderStatusChanged { comment order { customer { name } } } }"
    async with (
        connected(live_server.ws_url, token) as one,
        connected(live_server.ws_url, token) as two,
    ):
        for ws in (one, two):
            await ws.subscribe("1", query)
            assert await ws.until_pong() == []
        async with services.transaction() as session:
            await record_note(session, order, comment="note", at=services.clock.now())
        for ws in (one, two):
            message = await ws.receive()
            assert message["payload"]["errors"] == [
                {
                    "message": "Unexpected error.",
                    "locations": [{"line": 1, "column": 53}],
                    "path": ["orderStatusChanged", "order", "customer"],
                    "extensions": {"code": "INTERNAL_SERVER_ERROR"},
                }
            ]
    assert logged() == [
        ("orderpulse.graphql", "ERROR", "unexpected error: secret database detail", True)
    ]


async def test_an_unexpected_error_over_http_is_one_error_with_its_traceback(
    http: httpx.AsyncClient,
    factory: Factory,
    logged: Logged,
    broken_customer_loader: None,
) -> None:
    from tests.support.api import gid

    token = await factory.token("SUPPORT")
    order = await factory.order(await factory.customer())
    body = (
        await http.post(
            "/graphql",
            json={"query": '{ order(id: "%s") { customer { name } } }' % gid("Order", order)},
            headers={"Authorization": f"Bearer {token}"},
        )
    ).json()
    assert body["errors"][0]["message"] == "Unexpected error."
    assert logged() == [
        ("orderpulse.graphql", "ERROR", "unexpected error: secret database detail", True)
    ]


async def test_a_refused_websocket_token_logs_nothing_at_warning(
    live_server: LiveServer, logged: Logged
) -> None:
    async with ws_client(live_server.ws_url) as ws:
        await ws.send({"type": "connection_init", "payload": {"Authorization": "Bearer op_nope"}})
        assert await ws.closed_with() == (4403, "Forbidden")
    assert logged() == []
