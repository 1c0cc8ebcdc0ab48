"""Incidents through the API (SPEC 10): when one opens, who joins, what each viewer sees, the bulk
resubmit, resolving by hand and by itself. Mail: test_incident_mail.py; the race between
processes: tests/scale/test_incident_processes.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import col, select

from app.events.models import TOPIC_INCIDENT, Event
from app.graphql.ids import to_global_id
from app.incidents.models import Incident
from app.orders.models import SalesOrder
from app.services import Services
from tests.incidents.helpers import (
    ACT,
    HISTORY,
    ORDER_INCIDENT,
    REASON,
    RESOLVE,
    RESUBMIT,
    incidents,
    notification_counts,
    report_failed,
    tend,
)
from tests.support.api import Factory, GraphQLClient, gid
from tests.support.clock import FakeClock
from tests.support.world import World, make_world


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "incident_threshold": 5,
        "incident_window_minutes": 10,
        "incident_digest_minutes": 30,
        "escalation_poll_seconds": 3600,  # the tests run the incident worker's passes
    }


@pytest.fixture
async def world(factory: Factory) -> World:
    return await make_world(factory, with_tokens=True)


def client(api: GraphQLClient, world: World, name: str) -> GraphQLClient:
    return api.as_(world.tokens[name])


async def provisioning(factory: Factory, world: World, count: int) -> list[SalesOrder]:
    """`count` orders in PR, spread over customers a1, a2 and b1 in turn."""
    customers = [world.customer_a1, world.customer_a2, world.customer_b1]
    return [await factory.order(customers[i % 3], status="PR") for i in range(count)]


async def incident_rows(services: Services) -> list[Incident]:
    async with services.db.read() as session:
        return list((await session.exec(select(Incident).order_by(col(Incident.id)))).all())


async def test_the_fifth_failure_with_one_reason_opens_an_incident_and_later_ones_join(
    api: GraphQLClient, factory: Factory, services: Services, world: World
) -> None:
    support, system = client(api, world, "support"), client(api, world, "system")
    orders = await provisioning(factory, world, 7)
    for order in orders[:4]:
        assert (await report_failed(system, order))["incident"] is None
    assert await incidents(support) == []
    assert await incident_rows(services) == []

    opened = await report_failed(system, orders[4])
    assert opened["incident"]["status"] == "OPEN"
    assert (opened["incident"]["orderCount"], opened["incident"]["pendingCount"]) == (5, 5)
    joined = await report_failed(system, orders[5])
    assert joined["incident"]["id"] == opened["incident"]["id"]
    assert joined["incident"]["orderCount"] == 6
    other = await report_failed(system, orders[6], reason="INSUFFICIENT_RESOURCES")
    assert other["incident"] is None

    (listed,) = await incidents(support)
    assert listed["id"] == opened["incident"]["id"]
    assert listed["number"] == "INC-000001"
    assert listed["reason"] == {
        "reason": REASON,
        "message": "Communication error with an external system",
        "remedy": "Resubmit once the external system is reachable",
    }
    assert (listed["status"], listed["orderCount"], listed["pendingCount"]) == ("OPEN", 6, 6)
    assert [e["node"]["number"] for e in listed["orders"]["edges"]] == [
        o.number for o in reversed(orders[:6])
    ]
    # Support's per-order notices of the two orders that joined are recorded, not sent; the
    # four before the incident were ordinary failures. One opening mail.
    counts = await notification_counts(services)
    assert counts.get(("ORDER_PROVISIONING_FAILED", "SUPPORT", "SUPPRESSED")) == 2
    assert (
        counts.get(("PROVISIONING_INCIDENT_OPENED", "SUPPORT", "PENDING"), 0)
        + counts.get(("PROVISIONING_INCIDENT_OPENED", "SUPPORT", "SENT"), 0)
        == 1
    )
    unsuppressed = sum(
        n
        for (kind, role, status), n in counts.items()
        if kind == "ORDER_PROVISIONING_FAILED" and role == "SUPPORT" and status != "SUPPRESSED"
    )
    assert unsuppressed == 5  # the four before, and the one of another reason
    async with services.db.read() as session:
        changes = (
            await session.exec(
                select(Event.action).where(col(Event.topic) == TOPIC_INCIDENT).order_by(Event.id)
            )
        ).all()
    assert changes == ["OPENED", "JOINED"]


async def test_failures_outside_the_window_do_not_count(
    api: GraphQLClient, factory: Factory, services: Services, world: World, clock: FakeClock
) -> None:
    system, support = client(api, world, "system"), client(api, world, "support")
    orders = await provisioning(factory, world, 9)
    for order in orders[:4]:
        await report_failed(system, order)
    clock.advance(minutes=10, seconds=1)
    for order in orders[4:8]:
        assert (await report_failed(system, order))["incident"] is None
    assert await incidents(support) == []
    opened = await report_failed(system, orders[8])
    assert opened["incident"]["orderCount"] == 5  # the four older failures are not in it
    (row,) = await incident_rows(services)
    assert row.opened_at == clock.now()


async def test_marked_failed_with_the_reason_joins_and_manual_failures_are_their_own(
    api: GraphQLClient, factory: Factory, world: World
) -> None:
    system, support = client(api, world, "system"), client(api, world, "support")
    orders = await provisioning(factory, world, 7)
    for order in orders[:5]:
        incident = (await report_failed(system, order))["incident"]
    marked = await support.data(
        ACT,
        {"input": {"orderId": gid("Order", orders[5]), "action": "MARK_FAILED", "reason": REASON}},
    )
    assert marked["performOrderAction"]["order"]["incident"] == {"id": incident["id"]}
    manual = await support.data(
        ACT, {"input": {"orderId": gid("Order", orders[6]), "action": "MARK_FAILED"}}
    )
    assert manual["performOrderAction"]["order"]["status"] == "PF"
    assert manual["performOrderAction"]["order"]["incident"] is None


async def test_resellers_and_customers_see_an_incident_only_through_their_own_orders(
    api: GraphQLClient, factory: Factory, world: World
) -> None:
    system, support = client(api, world, "system"), client(api, world, "support")
    orders = await provisioning(factory, world, 6)  # a1, a2, b1, a1, a2, b1
    for order in orders:
        await report_failed(system, order)
    (incident,) = await incidents(support)
    numbers = [o.number for o in orders]

    def seen(data: dict[str, Any]) -> tuple[int, int, list[str]]:
        found = data["order"]["incident"]
        return (
            found["orderCount"],
            found["orders"]["totalCount"],
            [e["node"]["number"] for e in found["orders"]["edges"]],
        )

    reseller_a = client(api, world, "reseller a")
    mine = await reseller_a.data(ORDER_INCIDENT, {"id": gid("Order", orders[0])})
    assert mine["order"]["incident"]["id"] == incident["id"]
    assert seen(mine) == (4, 4, [numbers[4], numbers[3], numbers[1], numbers[0]])
    reseller_b = client(api, world, "reseller b")
    theirs = await reseller_b.data(ORDER_INCIDENT, {"id": gid("Order", orders[2])})
    assert seen(theirs) == (2, 2, [numbers[5], numbers[2]])
    customer_a1 = client(api, world, "customer a1")
    own = await customer_a1.data(ORDER_INCIDENT, {"id": gid("Order", orders[0])})
    assert seen(own) == (2, 2, [numbers[3], numbers[0]])
    assert own["order"]["incident"]["pendingCount"] == 2

    # Another tenant's order is not there; the incident itself is support's.
    other = await reseller_b.data(ORDER_INCIDENT, {"id": gid("Order", orders[0])})
    assert other == {"order": None}
    node = await reseller_a.data("query($id: ID!) { node(id: $id) { id } }", {"id": incident["id"]})
    assert node == {"node": None}
    for name in ("reseller a", "customer a1", "system"):
        refused = await client(api, world, name).post("{ incidents { totalCount } }")
        assert refused["data"] is None
        assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    as_support = await support.data(
        "query($id: ID!) { node(id: $id) { ... on Incident { orderCount } } }",
        {"id": incident["id"]},
    )
    assert as_support == {"node": {"orderCount": 6}}


async def test_resubmit_moves_every_failed_order_once_and_skips_those_changed_meanwhile(
    api: GraphQLClient, factory: Factory, services: Services, world: World, clock: FakeClock
) -> None:
    system, support = client(api, world, "system"), client(api, world, "support")
    orders = await provisioning(factory, world, 6)
    for order in orders:
        await report_failed(system, order)
    (incident,) = await incidents(support)
    # Reseller A cancels one of its failed orders before support resubmits.
    reseller_a = client(api, world, "reseller a")
    cancelled = await reseller_a.data(
        ACT, {"input": {"orderId": gid("Order", orders[0]), "action": "CANCEL"}}
    )
    assert cancelled["performOrderAction"]["order"]["status"] == "CL"

    refused = await reseller_a.post(RESUBMIT, {"input": {"incidentId": incident["id"]}})
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    clock.advance(minutes=1)
    done = await support.data(
        RESUBMIT, {"input": {"incidentId": incident["id"], "comment": "the vendor API is back"}}
    )
    payload = done["resubmitIncidentOrders"]
    assert payload["userErrors"] == []
    assert (payload["resubmitted"], payload["skipped"]) == (5, 1)
    assert (payload["incident"]["orderCount"], payload["incident"]["pendingCount"]) == (6, 0)
    statuses = {
        e["node"]["number"]: e["node"]["status"] for e in payload["incident"]["orders"]["edges"]
    }
    assert statuses == {o.number: ("CL" if o is orders[0] else "PR") for o in orders}
    history = (await support.data(HISTORY, {"id": gid("Order", orders[1])}))["order"]["history"]
    last = history[-1]
    assert (last["from"], last["to"], last["action"]) == ("PF", "PR", "RESUBMIT")
    assert last["comment"] == "Resubmitted with incident INC-000001: the vendor API is back"
    assert re.fullmatch(r"Support \(SUPPORT token:\d+\)", last["actor"])
    assert [h["to"] for h in history].count("PR") == 2  # placed into PR, resubmitted once

    again = (await support.data(RESUBMIT, {"input": {"incidentId": incident["id"]}}))[
        "resubmitIncidentOrders"
    ]
    assert (again["resubmitted"], again["skipped"]) == (0, 6)
    history_again = (await support.data(HISTORY, {"id": gid("Order", orders[1])}))["order"]
    assert history_again["history"] == history

    missing = (
        await support.data(RESUBMIT, {"input": {"incidentId": str(to_global_id("Incident", 999))}})
    )["resubmitIncidentOrders"]
    assert missing["incident"] is None and missing["resubmitted"] == 0
    assert [e["code"] for e in missing["userErrors"]] == ["NOT_FOUND"]

    # No order left in PF: once its window has passed with no new failure, it resolves itself.
    assert (await tend(services)).resolved == 0
    clock.advance(minutes=8, seconds=59)  # 9:59 after the last failure
    assert (await tend(services)).resolved == 0
    clock.advance(seconds=1)
    assert (await tend(services)).resolved == 1
    (row,) = await incident_rows(services)
    assert (row.status, row.resolved_at) == ("RESOLVED", clock.now())
    assert await incidents(support, "OPEN") == []


async def test_an_incident_with_orders_still_failed_does_not_resolve_itself(
    api: GraphQLClient, factory: Factory, services: Services, world: World, clock: FakeClock
) -> None:
    system, support = client(api, world, "system"), client(api, world, "support")
    for order in await provisioning(factory, world, 5):
        await report_failed(system, order)
    clock.advance(hours=3)
    assert (await tend(services)).resolved == 0
    (incident,) = await incidents(support, "OPEN")

    resolved = (
        await support.data(
            RESOLVE, {"input": {"incidentId": incident["id"], "comment": "vendor ticket 42"}}
        )
    )["resolveIncident"]
    assert resolved["userErrors"] == []
    assert resolved["incident"]["status"] == "RESOLVED"
    assert resolved["incident"]["resolvedAt"] == clock.now().isoformat()
    twice = (await support.data(RESOLVE, {"input": {"incidentId": incident["id"]}}))[
        "resolveIncident"
    ]
    assert twice["incident"] is None
    assert [e["code"] for e in twice["userErrors"]] == ["INVALID_TRANSITION"]

    # A later failure with the reason counts afresh: the resolved incident keeps its orders.
    later = await provisioning(factory, world, 5)
    for order in later[:4]:
        assert (await report_failed(system, order))["incident"] is None
    reopened = await report_failed(system, later[4])
    assert reopened["incident"]["orderCount"] == 5
    assert reopened["incident"]["id"] != incident["id"]
    assert [i["status"] for i in await incidents(support)] == ["OPEN", "RESOLVED"]


TEMPLATES = "{ notificationTemplates { id name subject } }"
UPDATE_TEMPLATE = """mutation($input: UpdateNotificationTemplateInput!) {
  updateNotificationTemplate(input: $input) { notificationTemplate { subject }
  userErrors { field code message } } }"""
NOTES = """query($filter: NotificationFilter) { notifications(filter: $filter) { edges { node {
    subject lastError status incident { number orderCount } } } } }"""


async def opened_mail(support: GraphQLClient) -> dict[str, Any]:
    data = await support.data(NOTES, {"filter": {"kind": "PROVISIONING_INCIDENT_OPENED"}})
    (edge,) = data["notifications"]["edges"]
    node: dict[str, Any] = edge["node"]
    return node


@pytest.mark.parametrize(
    ("subject", "expected", "error"),
    [
        (
            "{{ incident.count }} x {{ reason }} ({{ orders | length }} listed)",
            "5 x EXTERNAL_SYSTEM_ERROR (5 listed)",
            None,
        ),
        # saved (the sample has an order), but this incident has five: it fails at send time
        (
            "{% if orders | length > 1 %}{{ orders[0].nope }}{% endif %} orders",
            None,
            "could not be rendered",
        ),
    ],
)
async def test_support_edits_the_incident_templates_like_the_others(
    api: GraphQLClient,
    factory: Factory,
    world: World,
    subject: str,
    expected: str | None,
    error: str | None,
) -> None:
    support, system = client(api, world, "support"), client(api, world, "system")
    templates = (await support.data(TEMPLATES))["notificationTemplates"]
    (opened,) = [t for t in templates if t["name"] == "Provisioning Incident Opened"]
    refused = (
        await support.data(
            UPDATE_TEMPLATE, {"input": {"id": opened["id"], "subject": "{{ incident.nope }}"}}
        )
    )["updateNotificationTemplate"]
    assert [e["code"] for e in refused["userErrors"]] == ["BAD_USER_INPUT"]
    saved = (
        await support.data(UPDATE_TEMPLATE, {"input": {"id": opened["id"], "subject": subject}})
    )["updateNotificationTemplate"]
    assert saved["userErrors"] == []
    for order in await provisioning(factory, world, 5):
        await report_failed(system, order)
    mail = await opened_mail(support)
    assert mail["incident"] == {"number": "INC-000001", "orderCount": 5}
    if error is None:
        assert (mail["subject"], mail["lastError"]) == (expected, None)
    else:  # the failure went through; the mail went with the built-in template, saying why
        assert mail["subject"].startswith("Incident INC-000001: 5 orders failed")
        assert error in mail["lastError"]
