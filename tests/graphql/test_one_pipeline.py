"""One pipeline: an extension added to the schema runs for every operation on every transport.

Queries, mutations and subscriptions, over HTTP POST and GET and over the websocket, all run
through strawberry's pipeline with the schema's extensions (a subscription's events are then
rendered by its group, `app/graphql/ws/groups.py`). These tests add an extension to the served
schema, as a new guard or metric would be added, and use every transport against a real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest
from graphql import GraphQLError
from starlette.applications import Starlette
from strawberry.extensions import SchemaExtension

from app.graphql.schema import OrderPulseSchema
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.world import World, make_world
from tests.support.ws import connected

REFUSED = "Refused"
"""Operations of this name are refused by the added guard, whatever their type."""


class Seen(SchemaExtension):
    """A guard and a record: every operation's type and name, and a refusal of `REFUSED`."""

    operations: ClassVar[list[tuple[str, str | None]]] = []

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context
        Seen.operations.append((context.operation_type.value, context.operation_name))

    def on_validate(self) -> Iterator[None]:
        if self.execution_context.operation_name == REFUSED:
            raise GraphQLError("refused by a guard", extensions={"code": "REFUSED"})
        yield


@pytest.fixture
def seen(app: Starlette) -> Iterator[list[tuple[str, str | None]]]:
    schema: OrderPulseSchema = app.state.schema
    schema.extensions = [*schema.extensions, Seen]
    Seen.operations = []
    try:
        yield Seen.operations
    finally:
        schema.extensions = [e for e in schema.extensions if e is not Seen]


@pytest.fixture
async def tenants(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


VIEWER = "query Viewer { viewer { role } }"
CHANGES = "subscription Changes { orderStatusChanged { order { number } } }"


async def test_an_added_extension_sees_every_operation_on_every_transport(
    live_server: LiveServer,
    tenants: World,
    seen: list[tuple[str, str | None]],
) -> None:
    token = tenants.tokens["reseller a"]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=10, headers=headers) as http:
        posted = await http.post(live_server.http_url, json={"query": VIEWER})
        got = await http.get(live_server.http_url, params={"query": VIEWER})
    assert posted.json() == got.json() == {"data": {"viewer": {"role": "RESELLER"}}}
    async with connected(live_server.ws_url, token) as ws:
        await ws.subscribe("query", VIEWER)
        assert await ws.next("query") == {"viewer": {"role": "RESELLER"}}
        assert await ws.receive() == {"id": "query", "type": "complete"}
        await ws.subscribe("subscription", CHANGES)
        assert await ws.until_pong() == []  # subscribed: nothing to say yet
    assert seen == [
        ("query", "Viewer"),
        ("query", "Viewer"),
        ("query", "Viewer"),
        ("subscription", "Changes"),
    ]


@pytest.mark.parametrize(
    "document",
    [
        "query Refused { viewer { role } }",
        "subscription Refused { orderStatusChanged { order { number } } }",
    ],
)
async def test_an_added_guard_refuses_on_http_and_on_the_websocket_alike(
    live_server: LiveServer, tenants: World, seen: list[tuple[str, str | None]], document: str
) -> None:
    token = tenants.tokens["reseller a"]
    refused: dict[str, Any] = {"message": "refused by a guard", "extensions": {"code": "REFUSED"}}
    if document.startswith("query"):
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                live_server.http_url,
                json={"query": document},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.json()["errors"] == [refused]
    async with connected(live_server.ws_url, token) as ws:
        await ws.subscribe("1", document)
        assert await ws.receive() == {"id": "1", "type": "error", "payload": [refused]}
        assert await ws.until_pong() == []  # nothing runs, and the socket stays open
