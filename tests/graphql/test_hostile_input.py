"""Input that cannot be valid, sent to a real server (SPEC 8, "Hostile clients"): JSON nested
100,000 deep, a NUL in a string, an id or cursor out of range. Each is a 400 or BAD_USER_INPUT
(or, for an id, what an unknown id gets: null, or NOT_FOUND in `userErrors`), never a 500 or
"Unexpected error.", and nothing is written. Run on SQLite and, with
ORDERPULSE_TEST_DATABASE=postgres, on PostgreSQL (which refused a NUL and an id over 2**31 - 1
deep inside the statement)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlmodel import select

from app.orders.flow import Status
from app.orders.models import Reseller, SalesOrder
from app.services import Services
from tests.observability.helpers import scrape, value
from tests.support.api import Factory
from tests.support.server import LiveServer
from tests.support.ws import connected

CREATE = """mutation ($name: String!) {
  createReseller(input: {name: $name, email: "r@r.example"}) {
    reseller { id } userErrors { field message code }
  }
}"""
NUL_REFUSED = {
    "code": "BAD_USER_INPUT",
}


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.origin, timeout=10) as client:
        yield client


@pytest.fixture
async def support(factory: Factory) -> dict[str, str]:
    return {"Authorization": f"Bearer {await factory.token('SUPPORT')}"}


def opaque(text: str) -> str:
    """An id or cursor as the API writes them (base64url of "Type:pk", unpadded)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def reseller_names(services: Services) -> list[str]:
    async with services.db.read() as session:
        return sorted(r.name for r in (await session.exec(select(Reseller))).all())


async def test_json_nested_100000_deep_is_a_400(
    http: httpx.AsyncClient, support: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    body = '{"query": "{ viewer { role } }", "variables": {"x": ' + deep + "}}"
    with caplog.at_level(logging.ERROR):
        response = await http.post(
            "/graphql",
            content=body,
            headers={**support, "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json() == {
            "errors": [{"message": "The body is not JSON (nested over 1024 deep)"}]
        }
        over = "[" * 1025 + "]" * 1025  # (a URL holds less than 100,000)
        response = await http.get(
            "/graphql", params={"query": "{ viewer { role } }", "variables": over}, headers=support
        )
        assert response.status_code == 400
        assert response.json() == {"errors": [{"message": "`variables` is not JSON"}]}
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # as deep as JSON may be: the variables reach GraphQL, which finds nothing wrong with them
    nested = "[" * 1000 + "]" * 1000
    body = '{"query": "{ viewer { role } }", "variables": {"x": ' + nested + "}}"
    response = await http.post(
        "/graphql", content=body, headers={**support, "Content-Type": "application/json"}
    )
    assert response.json() == {"data": {"viewer": {"role": "SUPPORT"}}}


@pytest.mark.parametrize(
    ("document", "variables", "message"),
    [
        (
            CREATE,
            {"name": "x\x00y"},
            "Variable '$name' holds a NUL character: text may not contain NUL (\\u0000)",
        ),
        (
            CREATE.replace("$name: String!", "")
            .replace("name: $name", 'name: "x\\u0000y"')
            .replace("mutation ()", "mutation"),
            {},
            "A string literal holds a NUL character: text may not contain NUL (\\u0000)",
        ),
        (
            "query ($n: String) { orders(filter: {number: $n}) { edges { node { id } } } }",
            {"n": "\x00"},
            "Variable '$n' holds a NUL character: text may not contain NUL (\\u0000)",
        ),
        (
            """mutation ($input: CreateResellerInput!) {
              createReseller(input: $input) { reseller { id } userErrors { code } }
            }""",
            {"input": {"name": "R", "email": "r\x00@r.example"}},
            "Variable '$input' holds a NUL character: text may not contain NUL (\\u0000)",
        ),
    ],
    ids=["mutation-variable", "mutation-literal", "query-variable", "nested-variable"],
)
async def test_a_nul_in_a_string_is_bad_user_input(
    http: httpx.AsyncClient,
    support: dict[str, str],
    services: Services,
    document: str,
    variables: dict[str, Any],
    message: str,
) -> None:
    before = await scrape(http)
    response = await http.post(
        "/graphql", json={"query": document, "variables": variables}, headers=support
    )
    assert response.status_code == 200  # application/json: every GraphQL response is a 200
    body = response.json()
    assert body["data"] is None
    [error] = body["errors"]
    assert error["message"] == message
    assert error["extensions"] == NUL_REFUSED
    assert await reseller_names(services) == []  # nothing was written
    rejected = {"operation_type": "unknown", "outcome": "rejected"}  # refused before execution
    after = await scrape(http)
    assert (
        value(after, "orderpulse_graphql_requests_total", **rejected)
        - value(before, "orderpulse_graphql_requests_total", **rejected)
        == 1
    )  # counted as never executed
    # the same text without the NUL is accepted
    clean = json.loads(json.dumps(variables).replace("\\u0000", ""))
    response = await http.post(
        "/graphql",
        json={"query": document.replace("\\u0000", ""), "variables": clean},
        headers=support,
    )
    assert "errors" not in response.json(), response.text


async def test_a_nul_over_a_websocket_is_bad_user_input(
    live_server: LiveServer, factory: Factory, services: Services
) -> None:
    token = await factory.token("SUPPORT")
    async with connected(live_server.ws_url, token) as ws:
        await ws.subscribe("1", CREATE, {"name": "\x00"})
        message = await ws.receive()  # refused before execution: graphql-transport-ws's `error`
        assert message["id"] == "1" and message["type"] == "error", message
        assert [e["extensions"] for e in message["payload"]] == [NUL_REFUSED]
    assert await reseller_names(services) == []


@pytest.mark.parametrize(
    "pk",
    ["999999999999999999", "2147483648", "0", "²", "-1", "1" * 60],
    ids=["18-digits", "2**31", "zero", "superscript-two", "negative", "60-digits"],
)
async def test_an_id_or_cursor_out_of_range_is_an_unknown_one(
    http: httpx.AsyncClient, support: dict[str, str], factory: Factory, services: Services, pk: str
) -> None:
    order = await factory.order(status="PF")
    order_id = opaque(f"Order:{pk}")
    response = await http.post(
        "/graphql",
        json={"query": "query ($id: ID!) { order(id: $id) { id } }", "variables": {"id": order_id}},
        headers=support,
    )
    assert response.json() == {"data": {"order": None}}  # as an id that names no order
    response = await http.post(
        "/graphql",
        json={
            "query": """mutation ($id: ID!) {
              performOrderAction(input: {orderId: $id, action: HOLD}) {
                order { id } userErrors { field message code }
              }
            }""",
            "variables": {"id": order_id},
        },
        headers=support,
    )
    payload = response.json()["data"]["performOrderAction"]
    assert payload["order"] is None
    assert [e["code"] for e in payload["userErrors"]] == ["NOT_FOUND"]
    response = await http.post(
        "/graphql",
        json={
            "query": "query ($after: String) { orders(after: $after) { edges { node { id } } } }",
            "variables": {"after": opaque(f"order:{pk}")},
        },
        headers=support,
    )
    body = response.json()
    assert body["data"] is None
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        ("`after` is not a cursor of this list", {"code": "BAD_USER_INPUT"})
    ]
    async with services.db.read() as session:  # the order was left alone
        stored = await session.get(SalesOrder, order.id)
    assert stored is not None and stored.status == Status.PF
