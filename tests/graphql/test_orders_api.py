"""The order flow through the API: placing, checks, actions, outcomes, history, concurrency."""

from __future__ import annotations

from typing import Any

import pytest

from app.settings import Settings
from tests.support.api import Factory, GraphQLClient, gid, refused

ORDER_FIELDS = """id number type status version total { amount currency }
    items { description quantity unitPrice } availableActions
    failure { reason message remedy details failedAt slaDeadline escalatedAt }
    history { from to action reason actor comment }"""

PLACE = (
    """mutation($input: PlaceOrderInput!) { placeOrder(input: $input) {
    order { %s } userErrors { field message code } } }"""
    % ORDER_FIELDS
)
ACT = (
    """mutation($input: PerformOrderActionInput!) { performOrderAction(input: $input) {
    order { %s } userErrors { field message code } } }"""
    % ORDER_FIELDS
)
REPORT = (
    """mutation($input: ReportProvisioningResultInput!) { reportProvisioningResult(input: $input) {
    order { %s } userErrors { field message code } } }"""
    % ORDER_FIELDS
)


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"blocked_email_domains": "fraud.example", "approval_threshold": "5000"}


@pytest.fixture
async def support(api: GraphQLClient, factory: Factory) -> GraphQLClient:
    return api.as_(await factory.token("SUPPORT"))


@pytest.fixture
async def system(api: GraphQLClient, factory: Factory) -> GraphQLClient:
    return api.as_(await factory.token("SYSTEM"))


async def place(client: GraphQLClient, customer: Any, **extra: Any) -> dict[str, Any]:
    items = extra.pop(
        "items", [{"description": "Microsoft 365 E3", "quantity": 3, "unitPrice": "20.00"}]
    )
    data = await client.data(
        PLACE, {"input": {"customerId": gid("Customer", customer), "items": items, **extra}}
    )
    return data["placeOrder"]  # type: ignore[no-any-return]


async def act(client: GraphQLClient, order_id: str, action: str, **extra: Any) -> dict[str, Any]:
    data = await client.data(ACT, {"input": {"orderId": order_id, "action": action, **extra}})
    return data["performOrderAction"]  # type: ignore[no-any-return]


async def report(
    client: GraphQLClient, order_id: str, outcome: str, **extra: Any
) -> dict[str, Any]:
    data = await client.data(REPORT, {"input": {"orderId": order_id, "outcome": outcome, **extra}})
    return data["reportProvisioningResult"]  # type: ignore[no-any-return]


async def test_a_plain_customer_goes_straight_to_provisioning(
    support: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer()
    result = await place(support, customer, type="RN", currency="eur")
    order = result["order"]
    assert result["userErrors"] == []
    assert order["number"].startswith("RN-") and len(order["number"]) == 9
    assert order["type"] == "RN"
    assert order["status"] == "PR"
    assert order["version"] == 1
    assert order["total"] == {"amount": "60.00", "currency": "EUR"}
    assert order["items"] == [
        {"description": "Microsoft 365 E3", "quantity": 3, "unitPrice": "20.00"}
    ]
    assert order["availableActions"] == ["MARK_COMPLETED", "MARK_FAILED"]
    assert order["failure"] is None
    assert order["history"] == [
        {
            "from": None,
            "to": "PR",
            "action": "PLACE_ORDER",
            "reason": None,
            "actor": "Support (SUPPORT token:1)",  # support also sees the record
            "comment": None,
        }
    ]


@pytest.mark.parametrize(
    ("options", "total", "expected"),
    [
        ({"onHold": True}, "10", "HL"),
        ({"requiresVerification": True}, "10", "TM"),
        ({"paymentMethod": "NONE"}, "10", "NP"),
        ({"contactEmail": "boss@fraud.example"}, "10", "SS"),
        ({}, "5000", "WA"),
        ({"paymentMethod": "CASH_OR_CHECK"}, "10", "WP"),
        ({"paymentMethod": "CASH_OR_CHECK", "creditLimit": "10"}, "10", "PR"),
    ],
)
async def test_the_automatic_checks(
    options: dict[str, Any], total: str, expected: str, support: GraphQLClient, factory: Factory
) -> None:
    reseller = await factory.reseller()
    created = await support.data(
        """mutation($input: CreateCustomerInput!) { createCustomer(input: $input) {
            customer { id } userErrors { code } } }""",
        {
            "input": {
                "resellerId": gid("Reseller", reseller),
                "name": "C",
                "contactEmail": "c@customer.example",
                **options,
            }
        },
    )
    customer_id = created["createCustomer"]["customer"]["id"]
    data = await support.data(
        PLACE,
        {
            "input": {
                "customerId": customer_id,
                "items": [{"description": "x", "quantity": 1, "unitPrice": total}],
            }
        },
    )
    assert data["placeOrder"]["order"]["status"] == expected


async def test_settling_checks_moves_the_order_on(support: GraphQLClient, factory: Factory) -> None:
    customer = await factory.customer(contact_email="it@fraud.example")
    order = (
        await place(
            support, customer, items=[{"description": "x", "quantity": 1, "unitPrice": "9000"}]
        )
    )["order"]
    assert order["status"] == "SS"
    approved = await act(support, order["id"], "APPROVE", comment="known customer")
    assert (
        approved["order"]["status"] == "WA"
    )  # fraud settled; the large total still needs approval
    approved = await act(support, order["id"], "APPROVE")
    assert approved["order"]["status"] == "PR"
    assert [(h["from"], h["to"], h["action"]) for h in approved["order"]["history"]] == [
        (None, "SS", "PLACE_ORDER"),
        ("SS", "WA", "APPROVE"),
        ("WA", "PR", "APPROVE"),
    ]
    assert approved["order"]["history"][1]["comment"] == "known customer"
    assert approved["order"]["version"] == 3


async def test_attach_payment_method_and_activate_account(
    support: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer(requires_verification=True, payment_method="NONE")
    order = (await place(support, customer))["order"]
    assert order["status"] == "TM"
    order = (await act(support, order["id"], "ACTIVATE_ACCOUNT"))["order"]
    assert order["status"] == "NP"
    reseller_token = await factory.token("RESELLER", reseller=await _reseller_of(factory, customer))
    order = (await act(support.as_(reseller_token), order["id"], "ATTACH_PAYMENT_METHOD"))["order"]
    assert order["status"] == "PR"


async def _reseller_of(factory: Factory, customer: Any) -> Any:
    from app.orders.models import Reseller

    async with factory.services.db.read() as session:
        return await session.get(Reseller, customer.reseller_id)


async def test_cash_orders_wait_for_payment_or_go_on_credit(
    support: GraphQLClient, system: GraphQLClient, factory: Factory
) -> None:
    cash = await factory.customer(payment_method="CASH_OR_CHECK")
    order = (await place(support, cash))["order"]
    assert order["status"] == "WP"
    order = (await act(support, order["id"], "RECORD_PAYMENT"))["order"]
    assert order["status"] == "PR"
    order = (await report(system, order["id"], "SUCCEEDED"))["order"]
    assert order["status"] == "CP"  # paid before provisioning

    credit = await factory.customer(payment_method="CASH_OR_CHECK", credit_limit=1000)
    order = (await place(support, credit))["order"]
    assert order["status"] == "PR"
    order = (await report(system, order["id"], "SUCCEEDED"))["order"]
    assert order["status"] == "WZ"
    assert order["availableActions"] == []  # the platform takes no actions
    data = await support.data(
        "query($id: ID!) { order(id: $id) { availableActions } }", {"id": order["id"]}
    )
    assert data["order"]["availableActions"] == ["RECORD_PAYMENT"]
    order = (await act(support, order["id"], "RECORD_PAYMENT"))["order"]
    assert order["status"] == "CP"


async def test_provisioning_outcomes_and_failure_record(
    support: GraphQLClient, system: GraphQLClient, factory: Factory
) -> None:
    order = (await place(support, await factory.customer()))["order"]
    order = (await report(system, order["id"], "LONG_RUNNING"))["order"]
    assert order["status"] == "LO"
    result = await report(
        system, order["id"], "FAILED", reason="NO_IP_ADDRESSES", details="pool empty"
    )
    order = result["order"]
    assert order["status"] == "PF"
    failure = order["failure"]
    assert failure["reason"] == "NO_IP_ADDRESSES"
    assert failure["message"] == "No IP addresses available for allocation"
    assert failure["remedy"] == "Add addresses to the pool, then resubmit"
    assert failure["details"] == "pool empty"
    assert failure["failedAt"] == "2026-11-17T10:00:00+00:00"
    assert failure["slaDeadline"] == "2026-11-17T12:00:00+00:00"  # 2 business hours later
    assert failure["escalatedAt"] is None
    assert order["history"][-1] == {
        "from": "LO",
        "to": "PF",
        "action": "REPORT_FAILED",
        "reason": "NO_IP_ADDRESSES",
        "actor": "Provisioning platform",  # the platform itself reads it: no record
        "comment": "pool empty",
    }
    order = (await act(support, order["id"], "RESUBMIT"))["order"]
    assert order["status"] == "PR"
    assert order["failure"]["reason"] == "NO_IP_ADDRESSES"  # kept after leaving PF
    order = (await act(support, order["id"], "MARK_FAILED", comment="stuck"))["order"]
    assert order["failure"]["reason"] == "MARKED_FAILED_MANUALLY"
    assert order["failure"]["details"] == "stuck"
    order = (await act(support, order["id"], "MARK_COMPLETED"))["order"]
    assert order["status"] == "CP"


async def test_refused_actions_change_nothing(
    support: GraphQLClient, api: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer()
    order = await factory.order(customer, status="PF")
    order_id = gid("Order", order)
    invalid = await act(support, order_id, "APPROVE")
    assert invalid == refused(
        "order", ["input", "action"], "APPROVE is not possible from PF", "INVALID_TRANSITION"
    )
    customer_token = await factory.token("CUSTOMER", customer=customer)
    forbidden = await act(api.as_(customer_token), order_id, "CANCEL")
    assert forbidden["userErrors"] == [
        {
            "field": ["input", "action"],
            "message": "the CUSTOMER role may not CANCEL from PF",
            "code": "FORBIDDEN",
        }
    ]
    stale = await act(support, order_id, "RESUBMIT", expectedVersion=1)
    assert stale["userErrors"] == [
        {
            "field": ["input", "expectedVersion"],
            "message": "the order is at version 2, not 1",
            "code": "CONFLICT",
        }
    ]
    data = await support.data(
        "query($id: ID!) { order(id: $id) { status version history { to } } }", {"id": order_id}
    )
    assert data["order"] == {"status": "PF", "version": 2, "history": [{"to": "PR"}, {"to": "PF"}]}
    ok = await act(support, order_id, "RESUBMIT", expectedVersion=2)
    assert ok["order"]["status"] == "PR" and ok["order"]["version"] == 3


async def test_customer_cancels_its_own_order_before_provisioning(
    api: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer(on_hold=True)
    order = await factory.order(customer, status="HL")
    client = api.as_(await factory.token("CUSTOMER", customer=customer))
    data = await client.data(
        "query($id: ID!) { order(id: $id) { availableActions } }", {"id": gid("Order", order)}
    )
    assert data["order"]["availableActions"] == ["CANCEL"]
    result = await act(client, gid("Order", order), "CANCEL")
    assert result["order"]["status"] == "CL"
    assert result["order"]["history"][-1]["actor"] == f"Customer {customer.name}"  # no ids


async def test_system_may_not_perform_actions_and_others_may_not_report(
    system: GraphQLClient, api: GraphQLClient, factory: Factory
) -> None:
    customer = await factory.customer()
    order = await factory.order(customer, status="PR")
    body = await system.post(
        ACT, {"input": {"orderId": gid("Order", order), "action": "MARK_COMPLETED"}}
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}
    reseller_token = await factory.token("RESELLER", reseller=await _reseller_of(factory, customer))
    body = await api.as_(reseller_token).post(
        REPORT, {"input": {"orderId": gid("Order", order), "outcome": "SUCCEEDED"}}
    )
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN"}


async def test_report_outside_provisioning_is_an_invalid_transition(
    system: GraphQLClient, factory: Factory
) -> None:
    order = await factory.order(status="CP")
    result = await report(system, gid("Order", order), "FAILED", reason="OTHER", details="x")
    assert result["userErrors"][0]["code"] == "INVALID_TRANSITION"
    missing_reason = await report(system, gid("Order", await factory.order()), "FAILED")
    assert missing_reason["userErrors"] == [
        {
            "field": ["input", "reason"],
            "message": "a failed outcome needs a reason",
            "code": "BAD_USER_INPUT",
        }
    ]


async def test_pagination_walks_every_order_once(support: GraphQLClient, factory: Factory) -> None:
    customer = await factory.customer()
    made = [await factory.order(customer) for _ in range(7)]
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        data = await support.data(
            """query($after: String) { orders(first: 3, after: $after) { totalCount
                edges { cursor node { number } } pageInfo { hasNextPage hasPreviousPage endCursor } } }""",
            {"after": after},
        )
        page = data["orders"]
        assert page["totalCount"] == 7
        seen += [e["node"]["number"] for e in page["edges"]]
        pages += 1
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 3
    assert seen == [o.number for o in reversed(made)]  # newest first


async def test_filters(support: GraphQLClient, factory: Factory) -> None:
    customer = await factory.customer()
    pf = await factory.order(customer, status="PF")
    await factory.order(customer, status="PR")
    await factory.order(customer, status="CP")
    data = await support.data(
        """{ manual: orders(filter: {requiresManualAction: true}) { edges { node { number } } }
             auto: orders(filter: {requiresManualAction: false}) { totalCount }
             pf: orders(filter: {status: [PF, CP]}) { totalCount }
             byNumber: orders(filter: {number: "%s"}) { edges { node { status } } } }"""
        % pf.number.lower()
    )
    assert data["manual"]["edges"] == [{"node": {"number": pf.number}}]
    assert data["auto"]["totalCount"] == 2
    assert data["pf"]["totalCount"] == 2
    assert data["byNumber"]["edges"] == [{"node": {"status": "PF"}}]


async def test_catalogues(support: GraphQLClient) -> None:
    data = await support.data(
        """{ orderStatuses { code name requiresManualAction actions probableCauses description }
             failureReasons { reason message remedy } }"""
    )
    statuses = {row["code"]: row for row in data["orderStatuses"]}
    assert len(statuses) == 15
    assert statuses["PF"]["name"] == "Provisioning Failed"
    assert statuses["PF"]["requiresManualAction"] is True
    assert statuses["PF"]["actions"] == ["HOLD", "RESUBMIT", "MARK_COMPLETED", "CANCEL"]
    assert statuses["CP"]["actions"] == []
    assert len(data["failureReasons"]) == 8


async def test_config_changes_the_checks(settings: Settings) -> None:
    assert settings.blocked_email_domains == frozenset({"fraud.example"})
