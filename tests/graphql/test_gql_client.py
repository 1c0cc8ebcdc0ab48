"""A third-party Python client, signed in (issue 20): `gql` fetches the schema by introspection with
an Authorization header (it used to get `'__schema'` back), validates and runs a query against it,
and runs a subscription over graphql-transport-ws with the token in `connection_init`'s payload,
receiving a real status change. Against a real uvicorn server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport
from graphql import GraphQLEnumType, GraphQLSchema

from tests.support.api import Factory, GraphQLClient, gid
from tests.support.server import LiveServer
from tests.support.world import make_world

TIMEOUT = 10.0
GRAPHQL_TRANSPORT_WS = "graphql-transport-ws"

ORDERS = GraphQLRequest(
    """query Failed($status: [OrderStatus!]) {
      viewer { role reseller { name } }
      orders(filter: {status: $status}) { totalCount edges { node { number status customer { name } } } }
    }""",
    variable_values={"status": ["PF"]},
)
REPORT_FAILURE = """mutation($id: ID!) {
  reportProvisioningResult(input: {orderId: $id, outcome: FAILED, reason: NO_IP_ADDRESSES}) {
    order { status } userErrors { code } } }"""


@pytest.fixture
async def http_client(live_server: LiveServer) -> AsyncIterator[GraphQLClient]:
    """The API over real HTTP, as the provisioning platform reaches it."""
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=TIMEOUT) as client:
        yield GraphQLClient(client)


def assert_whole_schema(schema: GraphQLSchema | None) -> None:
    """The schema gql fetched: every root type, with the descriptions (a sample)."""
    assert schema is not None
    assert schema.query_type is not None and schema.query_type.name == "Query"
    assert schema.mutation_type is not None and schema.mutation_type.name == "Mutation"
    assert schema.subscription_type is not None and schema.subscription_type.name == "Subscription"
    status = schema.type_map["OrderStatus"]
    assert isinstance(status, GraphQLEnumType)
    assert (status.values["TM"].description or "").startswith(
        "Manual Customer Account Verification Required: "
    )


async def test_gql_fetches_the_schema_with_a_token_and_runs_a_query(
    live_server: LiveServer, factory: Factory
) -> None:
    world = await make_world(factory, with_tokens=True)
    failed = await factory.order(world.customer_a1, status="PF")
    await factory.order(world.customer_b1, status="PF")  # another tenant's: not seen
    await factory.order(world.customer_a2, status="PR")  # not failed: filtered out
    transport = HTTPXAsyncTransport(
        url=live_server.http_url,
        headers={"Authorization": f"Bearer {world.tokens['reseller a']}"},
        timeout=TIMEOUT,
    )
    client = Client(transport=transport, fetch_schema_from_transport=True)
    async with asyncio.timeout(TIMEOUT), client as session:
        assert_whole_schema(client.schema)
        result = await session.execute(ORDERS)
    assert result == {
        "viewer": {"role": "RESELLER", "reseller": {"name": "Reseller A"}},
        "orders": {
            "totalCount": 1,
            "edges": [
                {
                    "node": {
                        "number": failed.number,
                        "status": "PF",
                        "customer": {"name": "Customer A1"},
                    }
                }
            ],
        },
    }


async def test_gql_subscribes_over_graphql_transport_ws_with_the_token_in_connection_init(
    live_server: LiveServer, factory: Factory, http_client: GraphQLClient
) -> None:
    world = await make_world(factory, with_tokens=True)
    order = await factory.order(world.customer_a1, status="PR")
    transport = WebsocketsTransport(
        url=live_server.ws_url,
        init_payload={"Authorization": f"Bearer {world.tokens['reseller a']}"},
        subprotocols=[GRAPHQL_TRANSPORT_WS],
        connect_timeout=TIMEOUT,
        ack_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    )
    client = Client(transport=transport, fetch_schema_from_transport=True)
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(TIMEOUT), client as session:
        assert_whole_schema(client.schema)  # introspection over the websocket, signed in
        # Resume after the order's placement: the failure below arrives whether the server has
        # registered the subscription before it commits (live) or after (replayed).
        history = await session.execute(
            GraphQLRequest(
                "query($id: ID!) { order(id: $id) { history { cursor to } } }",
                variable_values={"id": gid("Order", order)},
            )
        )
        placed = history["order"]["history"][-1]
        assert placed["to"] == "PR"
        changes = session.subscribe(
            GraphQLRequest(
                """subscription($after: String) { orderStatusChanged(after: $after) {
                  from to reason order { number status } } }""",
                variable_values={"after": placed["cursor"]},
            )
        )
        report = asyncio.create_task(
            http_client.as_(world.tokens["system"]).data(
                REPORT_FAILURE, {"id": gid("Order", order)}
            )
        )
        async for change in changes:
            received.append(change)
            break
        await changes.aclose()
        assert await report == {
            "reportProvisioningResult": {"order": {"status": "PF"}, "userErrors": []}
        }
    assert received == [
        {
            "orderStatusChanged": {
                "from": "PR",
                "to": "PF",
                "reason": "NO_IP_ADDRESSES",
                "order": {"number": order.number, "status": "PF"},
            }
        }
    ]
