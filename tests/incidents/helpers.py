"""Shared by the incident tests: failing orders through the API, and the incident queries."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, func, select

from app.incidents import upkeep
from app.notifications import escalation
from app.notifications.models import Notification
from app.services import Services
from tests.support.api import GraphQLClient, gid

REASON = "EXTERNAL_SYSTEM_ERROR"

REPORT = """mutation($input: ReportProvisioningResultInput!) {
  reportProvisioningResult(input: $input) {
    order { id number status incident { id status orderCount pendingCount } }
    userErrors { field message code } } }"""
ACT = """mutation($input: PerformOrderActionInput!) { performOrderAction(input: $input) {
    order { id status version incident { id } } userErrors { field message code } } }"""
INCIDENT_FIELDS = """id number status openedAt resolvedAt orderCount pendingCount
    reason { reason message remedy }
    orders(first: 100) { totalCount edges { node { number status } } }"""
INCIDENTS = (
    """query($filter: IncidentFilter) { incidents(filter: $filter) {
    totalCount edges { node { %s } } } }"""
    % INCIDENT_FIELDS
)
ORDER_INCIDENT = (
    """query($id: ID!) { order(id: $id) { number status incident { %s } } }""" % INCIDENT_FIELDS
)
RESUBMIT = (
    """mutation($input: ResubmitIncidentOrdersInput!) { resubmitIncidentOrders(input: $input) {
    resubmitted skipped incident { %s } userErrors { field message code } } }"""
    % INCIDENT_FIELDS
)
RESOLVE = """mutation($input: ResolveIncidentInput!) { resolveIncident(input: $input) {
    incident { id status resolvedAt } userErrors { field message code } } }"""
HISTORY = (
    """query($id: ID!) { order(id: $id) { status history { from to action actor comment } } }"""
)


async def report_failed(
    system: GraphQLClient, order: Any, *, reason: str = REASON
) -> dict[str, Any]:
    """The platform reports the order FAILED; the order as the payload gives it."""
    data = await system.data(
        REPORT, {"input": {"orderId": gid("Order", order), "outcome": "FAILED", "reason": reason}}
    )
    payload = data["reportProvisioningResult"]
    assert payload["userErrors"] == [], payload
    result: dict[str, Any] = payload["order"]
    return result


async def incidents(support: GraphQLClient, status: str | None = None) -> list[dict[str, Any]]:
    variables = {"filter": {"status": status}} if status else {}
    data = await support.data(INCIDENTS, variables)
    return [edge["node"] for edge in data["incidents"]["edges"]]


async def notification_counts(services: Services) -> dict[tuple[str, str, str], int]:
    """(kind, recipient role, delivery status) -> how many notification rows."""
    async with services.db.read() as session:
        rows = await session.exec(
            select(
                col(Notification.kind),
                col(Notification.recipient_role),
                col(Notification.status),
                func.count(),
            ).group_by(
                col(Notification.kind), col(Notification.recipient_role), col(Notification.status)
            )
        )
        return {(k, r, s): int(n) for k, r, s, n in rows.all()}


async def tend(services: Services) -> upkeep.UpkeepReport:
    """One pass of the incident worker, with the values it gets from `services`."""
    return await upkeep.tend_incidents(
        db=services.db,
        transaction=services.transaction,
        clock=services.clock,
        config=services.desk.incidents,
    )


async def escalate(services: Services) -> int:
    return await escalation.escalate_overdue_failures(
        db=services.db, transaction=services.transaction, clock=services.clock
    )
