"""Incidents across two real server processes on one PostgreSQL database (SPEC 10): failures
committed at once through both open exactly one incident per reason, and two support agents
resubmitting the same incident at once resubmit each order exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlmodel import col, select

from app.events.models import TOPIC_ORDER_STATUS, Event
from app.incidents.models import Incident
from app.orders.models import SalesOrder
from app.services import Services
from tests.scale.conftest import Launch
from tests.support.api import Factory, gid

pytestmark = pytest.mark.postgres

REPORT = """mutation($input: ReportProvisioningResultInput!) {
  reportProvisioningResult(input: $input) { order { status } userErrors { code } } }"""
RESUBMIT = """mutation($input: ResubmitIncidentOrdersInput!) { resubmitIncidentOrders(input: $input) {
    resubmitted skipped userErrors { code } } }"""
INCIDENTS = (
    """{ incidents { edges { node { id status orderCount pendingCount reason { reason } } } } }"""
)
REASONS = ("EXTERNAL_SYSTEM_ERROR", "NO_IP_ADDRESSES", "INSUFFICIENT_RESOURCES")


async def incident_rows(direct: Services) -> list[Incident]:
    async with direct.db.read() as session:
        return list((await session.exec(select(Incident).order_by(col(Incident.id)))).all())


async def test_failures_at_once_on_two_processes_open_one_incident_per_reason_and_resubmit_once(
    launch: Launch, scale_database_url: str, rows: Factory, direct: Services
) -> None:
    servers = await launch(scale_database_url, count=2, incident_threshold="5")
    customer = await rows.customer()
    system, support = await rows.token("SYSTEM"), await rows.token("SUPPORT")
    # Per reason: five failures at once (the threshold), then five more that join.
    batches = [
        [await rows.order(customer, status="PR") for _ in range(5)] for _ in range(2 * len(REASONS))
    ]

    async def fail(index: int, order: SalesOrder, reason: str) -> None:
        server = servers[index % 2]
        data = await server.api(system).data(
            REPORT,
            {"input": {"orderId": gid("Order", order), "outcome": "FAILED", "reason": reason}},
        )
        assert data["reportProvisioningResult"] == {"order": {"status": "PF"}, "userErrors": []}

    for wave in (0, 1):
        await asyncio.gather(
            *(
                fail(index, order, reason)
                for r, reason in enumerate(REASONS)
                for index, order in enumerate(batches[wave * len(REASONS) + r])
            )
        )
        opened = await incident_rows(direct)
        assert sorted(i.reason for i in opened) == sorted(REASONS)
        assert {i.status for i in opened} == {"OPEN"}

    listed = (await servers[0].api(support).data(INCIDENTS))["incidents"]["edges"]
    assert sorted((n["node"]["reason"]["reason"], n["node"]["orderCount"]) for n in listed) == [
        (reason, 10) for reason in sorted(REASONS)
    ]

    # Two support agents, one on each process, resubmit every incident at the same moment.
    async def resubmit(server_index: int, incident_id: str) -> tuple[int, int]:
        data = (
            await servers[server_index]
            .api(support)
            .data(RESUBMIT, {"input": {"incidentId": incident_id}})
        )
        payload = data["resubmitIncidentOrders"]
        assert payload["userErrors"] == []
        return payload["resubmitted"], payload["skipped"]

    ids = [n["node"]["id"] for n in listed]
    results = await asyncio.gather(*(resubmit(i, incident) for incident in ids for i in (0, 1)))
    for first, second in zip(results[::2], results[1::2], strict=True):
        assert sorted([first, second]) == [(0, 10), (10, 0)]
    async with direct.db.read() as session:
        resubmits = (
            await session.exec(
                select(Event.order_id).where(
                    col(Event.topic) == TOPIC_ORDER_STATUS, col(Event.action) == "RESUBMIT"
                )
            )
        ).all()
        statuses = (await session.exec(select(SalesOrder.status))).all()
    assert Counter(resubmits) == {order.id: 1 for batch in batches for order in batch}
    assert Counter(statuses) == {"PR": 30}
