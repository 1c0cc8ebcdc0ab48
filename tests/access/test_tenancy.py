"""Every read and write path, for every role: another tenant's data behaves exactly as missing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from app.graphql.ids import to_global_id
from tests.support.api import Factory, GraphQLClient, gid, refused
from tests.support.world import make_world


@dataclass
class Scenario:
    """The shared world seen by label, with five orders and a token per role."""

    orders: dict[str, Any]  # label -> SalesOrder
    customers: dict[str, Any]
    resellers: dict[str, Any]
    tokens: dict[str, str]  # role -> token


# Whose token each role's checks use.
TOKEN_OF_ROLE = {
    "SUPPORT": "support",
    "SYSTEM": "system",
    "RESELLER": "reseller a",
    "CUSTOMER": "customer a1",
}


@pytest.fixture
async def world(factory: Factory) -> Scenario:
    tenants = await make_world(factory, with_tokens=True)
    a1, a2, b1 = tenants.customer_a1, tenants.customer_a2, tenants.customer_b1
    orders = {
        "a1_pr": await factory.order(a1, status="PR"),
        "a1_pf": await factory.order(a1, status="PF"),
        "a2_pr": await factory.order(a2, status="PR"),
        "b1_pr": await factory.order(b1, status="PR"),
        "b1_pf": await factory.order(b1, status="PF"),
    }
    tokens = {role: tenants.tokens[name] for role, name in TOKEN_OF_ROLE.items()}
    return Scenario(orders, tenants.customers, tenants.resellers, tokens)


# What each role may see, by label.
VISIBLE_ORDERS = {
    "SUPPORT": {"a1_pr", "a1_pf", "a2_pr", "b1_pr", "b1_pf"},
    "SYSTEM": {"a1_pr", "a1_pf", "a2_pr", "b1_pr", "b1_pf"},
    "RESELLER": {"a1_pr", "a1_pf", "a2_pr"},
    "CUSTOMER": {"a1_pr", "a1_pf"},
}
VISIBLE_CUSTOMERS = {
    "SUPPORT": {"a1", "a2", "b1"},
    "SYSTEM": {"a1", "a2", "b1"},
    "RESELLER": {"a1", "a2"},
    "CUSTOMER": {"a1"},
}
VISIBLE_RESELLERS = {
    "SUPPORT": {"a", "b"},
    "SYSTEM": {"a", "b"},
    "RESELLER": {"a"},
    "CUSTOMER": {"a"},
}
ROLES = ["SUPPORT", "SYSTEM", "RESELLER", "CUSTOMER"]


# For each kind of object: its type, the field that fetches one, a field of it to read (and the
# row attribute it shows), and what each role may see.
LOOKUPS = [
    ("Order", "order", "number", VISIBLE_ORDERS),
    ("Customer", "customer", "name", VISIBLE_CUSTOMERS),
    ("Reseller", "reseller", "name", VISIBLE_RESELLERS),
]


@pytest.mark.parametrize("role", ROLES)
async def test_single_object_lookups(role: str, world: Scenario, api: GraphQLClient) -> None:
    client = api.as_(world.tokens[role])
    rows_of = {"Order": world.orders, "Customer": world.customers, "Reseller": world.resellers}
    for type_name, field, shown, visible_to in LOOKUPS:
        for label, row in rows_of[type_name].items():
            data = await client.data(
                "query($id: ID!) { %s(id: $id) { %s } node(id: $id) { id } }" % (field, shown),
                {"id": gid(type_name, row)},
            )
            visible = label in visible_to[role]
            expected = {shown: getattr(row, shown)} if visible else None
            assert data[field] == expected, (type_name, label)
            assert data["node"] == ({"id": gid(type_name, row)} if visible else None), label


@pytest.mark.parametrize("role", ROLES)
async def test_lists_and_counts(role: str, world: Scenario, api: GraphQLClient) -> None:
    client = api.as_(world.tokens[role])
    data = await client.data(
        """{ orders(first: 100) { totalCount edges { node { number } } }
             customers { totalCount edges { node { name } } }
             resellers { totalCount edges { node { name } } }
             orderStatusCounts { status count } }"""
    )
    numbers = {e["node"]["number"] for e in data["orders"]["edges"]}
    expected = {world.orders[label].number for label in VISIBLE_ORDERS[role]}
    assert numbers == expected
    assert data["orders"]["totalCount"] == len(expected)
    assert {e["node"]["name"] for e in data["customers"]["edges"]} == {
        world.customers[c].name for c in VISIBLE_CUSTOMERS[role]
    }
    assert data["customers"]["totalCount"] == len(VISIBLE_CUSTOMERS[role])
    assert {e["node"]["name"] for e in data["resellers"]["edges"]} == {
        world.resellers[r].name for r in VISIBLE_RESELLERS[role]
    }
    assert data["resellers"]["totalCount"] == len(VISIBLE_RESELLERS[role])
    counts = {row["status"]: row["count"] for row in data["orderStatusCounts"]}
    expected_counts: dict[str, int] = {}
    for label in VISIBLE_ORDERS[role]:
        status = world.orders[label].status
        expected_counts[status] = expected_counts.get(status, 0) + 1
    assert counts == expected_counts


@pytest.mark.parametrize("role", ["RESELLER", "CUSTOMER"])
async def test_filtering_by_another_tenant_yields_nothing(
    role: str, world: Scenario, api: GraphQLClient
) -> None:
    client = api.as_(world.tokens[role])
    for filter in (
        {"resellerId": gid("Reseller", world.resellers["b"])},
        {"customerId": gid("Customer", world.customers["b1"])},
        {"number": world.orders["b1_pf"].number},
    ):
        data = await client.data(
            """query($f: OrderFilter) { orders(filter: $f) { totalCount edges { cursor } }
                 orderStatusCounts(filter: $f) { status count } }""",
            {"f": filter},
        )
        assert data == {"orders": {"totalCount": 0, "edges": []}, "orderStatusCounts": []}, filter
    data = await client.data(
        "query($r: ID) { customers(resellerId: $r) { totalCount } }",
        {"r": gid("Reseller", world.resellers["b"])},
    )
    assert data == {"customers": {"totalCount": 0}}


async def test_nested_lists_are_scoped_to_the_viewer(world: Scenario, api: GraphQLClient) -> None:
    client = api.as_(world.tokens["CUSTOMER"])
    data = await client.data(
        """{ viewer { role customer { name orders { totalCount } reseller { name email
             customers { totalCount edges { node { name } } } } } } }"""
    )
    customer = data["viewer"]["customer"]
    assert data["viewer"]["role"] == "CUSTOMER"
    assert customer["name"] == "Customer A1"
    assert customer["orders"]["totalCount"] == 2
    # A customer sees its reseller's name, not its e-mail, and no other customer of it.
    assert customer["reseller"]["name"] == "Reseller A"
    assert customer["reseller"]["email"] == ""
    assert customer["reseller"]["customers"] == {
        "totalCount": 1,
        "edges": [{"node": {"name": "Customer A1"}}],
    }


async def test_a_foreign_id_and_a_missing_id_give_the_same_error(
    world: Scenario, api: GraphQLClient
) -> None:
    client = api.as_(world.tokens["RESELLER"])
    mutation = """mutation($id: ID!) { performOrderAction(input: {orderId: $id, action: CANCEL}) {
        order { id } userErrors { field message code } } }"""
    foreign = await client.data(mutation, {"id": gid("Order", world.orders["b1_pf"])})
    missing = await client.data(mutation, {"id": str(to_global_id("Order", 999_999))})
    malformed = await client.data(mutation, {"id": "not-an-id"})
    wrong_type = await client.data(mutation, {"id": gid("Customer", world.customers["a1"])})
    expected = {
        "performOrderAction": refused("order", ["input", "orderId"], "order not found", "NOT_FOUND")
    }
    assert foreign == missing == malformed == wrong_type == expected
    # and nothing changed
    support = api.as_(world.tokens["SUPPORT"])
    data = await support.data(
        "query($id: ID!) { order(id: $id) { status version history { to } } }",
        {"id": gid("Order", world.orders["b1_pf"])},
    )
    assert data["order"] == {"status": "PF", "version": 2, "history": [{"to": "PR"}, {"to": "PF"}]}


@pytest.mark.parametrize("role", ["RESELLER", "CUSTOMER"])
async def test_writes_on_foreign_objects_are_not_found(
    role: str, world: Scenario, api: GraphQLClient
) -> None:
    client = api.as_(world.tokens[role])
    b1 = gid("Customer", world.customers["b1"])
    place = await client.data(
        """mutation($c: ID!) { placeOrder(input: {customerId: $c, items: [{description: "x",
            quantity: 1, unitPrice: "1"}]}) { order { id } userErrors { field code } } }""",
        {"c": b1},
    )
    assert place["placeOrder"] == {
        "order": None,
        "userErrors": [{"field": ["input", "customerId"], "code": "NOT_FOUND"}],
    }
    if role == "RESELLER":
        contact = await client.data(
            """mutation($c: ID!) { updateCustomerContact(input: {customerId: $c, email: "a@b.example"})
                { customer { id } userErrors { code } } }""",
            {"c": b1},
        )
        assert contact["updateCustomerContact"] == {
            "customer": None,
            "userErrors": [{"code": "NOT_FOUND"}],
        }
        created = await client.data(
            """mutation($r: ID!) { createCustomer(input: {resellerId: $r, name: "Spy",
                contactEmail: "spy@x.example"}) { customer { id } userErrors { code } } }""",
            {"r": gid("Reseller", world.resellers["b"])},
        )
        assert created["createCustomer"]["userErrors"] == [{"code": "NOT_FOUND"}]
    support = api.as_(world.tokens["SUPPORT"])
    data = await support.data("{ orders { totalCount } customers { totalCount } }")
    assert data == {"orders": {"totalCount": 5}, "customers": {"totalCount": 3}}


async def test_customer_places_orders_only_for_itself(world: Scenario, api: GraphQLClient) -> None:
    client = api.as_(world.tokens["CUSTOMER"])
    data = await client.data(
        """mutation($c: ID!) { placeOrder(input: {customerId: $c, items: [{description: "Seat",
            quantity: 2, unitPrice: "10.50"}]}) { order { status total { amount currency }
            customer { name } } userErrors { code } } }""",
        {"c": gid("Customer", world.customers["a1"])},
    )
    assert data["placeOrder"] == {
        "order": {
            "status": "PR",
            "total": {"amount": "21.00", "currency": "USD"},
            "customer": {"name": "Customer A1"},
        },
        "userErrors": [],
    }
    sibling = await client.data(
        """mutation($c: ID!) { placeOrder(input: {customerId: $c, items: [{description: "Seat",
            quantity: 1, unitPrice: "1"}]}) { order { id } userErrors { code } } }""",
        {"c": gid("Customer", world.customers["a2"])},
    )
    assert sibling["placeOrder"] == {"order": None, "userErrors": [{"code": "NOT_FOUND"}]}
