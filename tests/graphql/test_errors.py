"""Authentication, bad input, malformed documents and query limits: clear errors, nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Factory, GraphQLClient, gid, refused

CREATE_CUSTOMER = """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
    customer { id } userErrors { field message code } } }"""
PLACE = """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { id } userErrors { field message code } } }"""


@pytest.fixture
async def support(api: GraphQLClient, factory: Factory) -> GraphQLClient:
    return api.as_(await factory.token("SUPPORT"))


async def counts(client: GraphQLClient) -> dict[str, Any]:
    return await client.data(
        "{ orders { totalCount } customers { totalCount } resellers { totalCount } }"
    )


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer op_nope", "Basic dXNlcjpwYXNz", "op_token-without-scheme"]
)
async def test_missing_or_bad_token_is_unauthenticated(
    header: str | None, api: GraphQLClient
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await api.http.post(
        "/graphql", json={"query": "{ viewer { role } }"}, headers=headers
    )
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_a_revoked_token_stops_working(api: GraphQLClient, factory: Factory) -> None:
    from app.access.tokens import revoke_token

    token = await factory.token("SUPPORT")
    assert (await api.as_(token).data("{ viewer { role } }")) == {"viewer": {"role": "SUPPORT"}}
    async with factory.services.transaction() as session:
        assert await revoke_token(session, token=token, now=factory.services.clock.now())
    body = await api.as_(token).post("{ viewer { role } }")
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_role_not_allowed_is_forbidden(api: GraphQLClient, factory: Factory) -> None:
    reseller = await factory.reseller()
    token = await factory.token("RESELLER", reseller=reseller)
    body = await api.as_(token).post(
        'mutation { createReseller(input: {name: "X", email: "x@x.example"}) { reseller { id } } }'
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    assert body["errors"][0]["path"] == ["createReseller"]


@pytest.mark.parametrize(
    ("input", "field", "message"),
    [
        (
            {"contactEmail": "not-an-email"},
            ["input", "contactEmail"],
            "is not a valid e-mail address",
        ),
        ({"contactEmail": "a@b"}, ["input", "contactEmail"], "is not a valid e-mail address"),
        ({"name": "   "}, ["input", "name"], "must not be blank"),
        ({"name": "x" * 201}, ["input", "name"], "must be at most 200 characters"),
        ({"creditLimit": "-1"}, ["input", "creditLimit"], "must not be negative"),
        (
            {"creditLimit": "1.00001"},
            ["input", "creditLimit"],
            "must have at most 4 decimal places",
        ),
        ({"resellerId": "bogus"}, ["input", "resellerId"], "reseller not found"),
    ],
)
async def test_create_customer_bad_input(
    input: dict[str, Any], field: list[str], message: str, support: GraphQLClient, factory: Factory
) -> None:
    reseller = await factory.reseller()
    before = await counts(support)
    values = {
        "resellerId": gid("Reseller", reseller),
        "name": "Acme",
        "contactEmail": "a@acme.example",
    }
    data = await support.data(CREATE_CUSTOMER, {"input": {**values, **input}})
    code = "NOT_FOUND" if message.endswith("not found") else "BAD_USER_INPUT"
    assert data["createCustomer"] == refused("customer", field, message, code)
    assert await counts(support) == before


@pytest.mark.parametrize(
    ("items", "extra", "field", "message"),
    [
        ([], {}, ["input", "items"], "an order needs at least one item"),
        (
            [{"description": "x", "quantity": 0, "unitPrice": "1"}],
            {},
            ["input", "items", "0", "quantity"],
            "must be between 1 and 1000000",
        ),
        (
            [{"description": "x", "quantity": -3, "unitPrice": "1"}],
            {},
            ["input", "items", "0", "quantity"],
            "must be between 1 and 1000000",
        ),
        (
            [
                {"description": "ok", "quantity": 1, "unitPrice": "1"},
                {"description": "x", "quantity": 1, "unitPrice": "-0.01"},
            ],
            {},
            ["input", "items", "1", "unitPrice"],
            "must not be negative",
        ),
        (
            [{"description": "", "quantity": 1, "unitPrice": "1"}],
            {},
            ["input", "items", "0", "description"],
            "must not be blank",
        ),
        (
            [{"description": "x", "quantity": 1, "unitPrice": "NaN"}],
            {},
            ["input", "items", "0", "unitPrice"],
            "must be a finite number",
        ),
        (
            [{"description": "x", "quantity": 1, "unitPrice": "1"}],
            {"currency": "dollars"},
            ["input", "currency"],
            "must be a three-letter currency code",
        ),
        (
            [{"description": "x", "quantity": 1, "unitPrice": "1"}],
            {"customerId": "Q3VzdG9tZXI6OTk5"},
            ["input", "customerId"],
            "customer not found",
        ),
    ],
)
async def test_place_order_bad_input(
    items: list[Any],
    extra: dict[str, Any],
    field: list[str],
    message: str,
    support: GraphQLClient,
    factory: Factory,
) -> None:
    customer = await factory.customer()
    before = await counts(support)
    data = await support.data(
        PLACE, {"input": {"customerId": gid("Customer", customer), "items": items, **extra}}
    )
    code = "NOT_FOUND" if message.endswith("not found") else "BAD_USER_INPUT"
    assert data["placeOrder"] == refused("order", field, message, code)
    assert await counts(support) == before


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("{ orders { ", "Syntax Error"),
        ("{ nosuchfield }", "Cannot query field 'nosuchfield'"),
        (
            'mutation { placeOrder(input: {customerId: "x", items: [{quantity: "many"}]}) { order { id } } }',
            "Int cannot represent",
        ),
        ("{ orders(first: 101) { totalCount } }", "`first` must be between 0 and 100"),
        ('{ orders(after: "garbage") { totalCount } }', "`after` is not a cursor of this list"),
    ],
)
async def test_malformed_documents_get_clear_errors(
    document: str, fragment: str, support: GraphQLClient
) -> None:
    body = await support.post(document)
    assert body.get("data") is None
    assert any(fragment in error["message"] for error in body["errors"]), body["errors"]


async def test_query_limits(support: GraphQLClient) -> None:
    deep = "{ orders { edges { node { customer { reseller { customers { edges { node { orders { edges { node { customer { reseller { customers { edges { node { name } } } } } } } } } } } } } } } } }"
    body = await support.post(deep)
    assert (
        body["data"] is None and "exceeds maximum operation depth" in body["errors"][0]["message"]
    )
    aliases = "{ " + " ".join(f"a{i}: viewer {{ role }}" for i in range(40)) + " }"
    body = await support.post(aliases)
    assert body["data"] is None and "aliases" in body["errors"][0]["message"]
    tokens = "{ viewer { " + " ".join(["role"] * 3000) + " } }"
    body = await support.post(tokens)
    assert body["data"] is None and "token" in body["errors"][0]["message"].lower()


async def test_no_operations_over_get(api: GraphQLClient, factory: Factory) -> None:
    token = await factory.token("SUPPORT")
    response = await api.http.get(
        "/graphql",
        params={
            "query": 'mutation { createReseller(input: {name: "X", email: "x@x.example"}) { reseller { id } } }'
        },
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    assert response.status_code in (400, 405)
    assert (await api.as_(token).data("{ resellers { totalCount } }")) == {
        "resellers": {"totalCount": 0}
    }


async def test_graphiql_is_served_to_browsers(api: GraphQLClient) -> None:
    response = await api.http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()


async def test_suggestions_only_for_authenticated_callers(
    support: GraphQLClient, api: GraphQLClient
) -> None:
    anonymous = await api.post("{ ordrs { totalCount } }")
    assert "Did you mean" not in anonymous["errors"][0]["message"]
    known = await support.post("{ ordrs { totalCount } }")
    assert "Did you mean" in known["errors"][0]["message"]


async def test_unexpected_errors_are_masked(support: GraphQLClient, factory: Factory) -> None:
    from app.graphql.loaders import CustomerByIdLoader

    customer = await factory.customer()
    order = await factory.order(customer)

    async def broken(self: Any, keys: Any) -> Any:
        raise RuntimeError("secret database detail")

    original = CustomerByIdLoader._load
    CustomerByIdLoader._load = broken  # type: ignore[method-assign]
    try:
        # `order(id:)` is answered by the executor (the read planner covers `orders`, whose page
        # joins the customer instead of loading it), so the broken loader is what runs.
        body = await support.post('{ order(id: "%s") { customer { name } } }' % gid("Order", order))
    finally:
        CustomerByIdLoader._load = original  # type: ignore[method-assign]
    assert body["errors"][0]["message"] == "Unexpected error."
    assert "secret" not in str(body)


async def test_health(api: GraphQLClient) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    assert (await api.http.get("/readyz")).json() == {"status": "ready"}


def test_bad_configuration_names_the_variable(tmp_path: Any) -> None:
    import subprocess
    import sys

    for name, value in [
        ("ORDERPULSE_FAILURE_SLA_HOURS", "soon"),
        ("ORDERPULSE_TIMEZONE", "Mars/Olympus"),
        ("ORDERPULSE_BUSINESS_HOURS", "17:00-09:00"),
        ("ORDERPULSE_DATABASE_URL", "mysql://x"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            env={"PATH": "/usr/bin:/bin", name: value},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, result.stderr
        assert f"configuration error: {name}:" in result.stderr
