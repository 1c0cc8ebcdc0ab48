"""The API of incidents (SPEC 10): the `Incident` node, its list, and `IncidentChange`.

Support sees every incident with all its orders. A reseller or customer reaches an incident only
through `Order.incident` of an order it may see; its counts and `orders` then cover only the
orders that viewer may see (`policy.order_scope`), so nothing tells of another tenant's orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import case, func
from sqlmodel import col, select

from app.access import policy
from app.access.viewer import Viewer
from app.graphql.actors import actor_for
from app.graphql.changes import EventChange
from app.graphql.context import Info, viewer_of
from app.graphql.ids import to_global_id
from app.graphql.loaders import Loaders
from app.graphql.pagination import After, Connection, First, Listing
from app.graphql.types import ORDERS, FailureReasonInfo, Node, Order, expose_enum
from app.incidents import models as im
from app.orders import flow
from app.orders import models as om

expose_enum(
    im.IncidentStatus,
    name="IncidentStatus",
    description="Whether an incident is still open.",
    values={
        im.IncidentStatus.OPEN: "Open: later failures with its reason join it.",
        im.IncidentStatus.RESOLVED: "Resolved by support, or by itself once no order was left "
        "in PF and no new failure came for its window.",
    },
)
expose_enum(
    im.IncidentChangeKind,
    name="IncidentChangeKind",
    description="What happened to an incident.",
    values={
        im.IncidentChangeKind.OPENED: "It opened: enough orders failed for one reason.",
        im.IncidentChangeKind.JOINED: "One more failed order joined it.",
        im.IncidentChangeKind.RESUBMITTED: "Its orders still in PF were resubmitted.",
        im.IncidentChangeKind.RESOLVED: "It was resolved.",
    },
)
IncidentStatus = im.IncidentStatus
IncidentChangeKind = im.IncidentChangeKind


async def visible_counts(
    loaders: Loaders, viewer: Viewer, incident_ids: Sequence[int]
) -> dict[int, tuple[int, int]]:
    """(orders, still in PF) of each incident, over the orders `viewer` may see; read once per
    request (or event batch) and viewer for all the incidents asked together."""
    key = ("incident_counts", viewer)
    cache: dict[int, tuple[int, int]] = loaders.scratch.setdefault(key, {})
    missing = [i for i in incident_ids if i not in cache]
    if missing:
        pf = flow.Status.PF.value
        query = (
            select(
                col(om.SalesOrder.incident_id),
                func.count(),
                func.coalesce(func.sum(case((col(om.SalesOrder.status) == pf, 1), else_=0)), 0),
            )
            .where(col(om.SalesOrder.incident_id).in_(missing), policy.order_scope(viewer))
            .group_by(col(om.SalesOrder.incident_id))
        )
        async with loaders.db.read() as session:
            rows = (await session.exec(query)).all()
        found = {int(i): (int(n), int(p)) for i, n, p in rows if i is not None}
        for incident_id in missing:
            cache[incident_id] = found.get(incident_id, (0, 0))
    return {i: cache[i] for i in incident_ids}


@strawberry.type(
    description="Many orders that failed for one reason within a short window: one provisioning "
    "outage, fixed with one action (`resubmitIncidentOrders`)."
)
class Incident(Node):
    row: strawberry.Private[im.Incident]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(cls, row: im.Incident, loaders: Loaders) -> Incident:
        assert row.id is not None
        return cls(id=to_global_id("Incident", row.id), row=row, loaders=loaders)

    @strawberry.field(description="The human incident number, e.g. INC-000007.")
    def number(self) -> str:
        assert self.row.id is not None
        return f"INC-{self.row.id:06d}"

    @strawberry.field(description="Why its orders failed, with the message and remedy.")
    def reason(self) -> FailureReasonInfo:
        info = flow.FAILURE_REASONS[flow.FailureReason(self.row.reason)]
        return FailureReasonInfo(reason=info.reason, message=info.message, remedy=info.remedy)

    @strawberry.field(description="OPEN while later failures with its reason join it.")
    def status(self) -> IncidentStatus:
        return IncidentStatus(self.row.status)

    @strawberry.field(description="When it opened.")
    def opened_at(self) -> datetime:
        return self.row.opened_at

    @strawberry.field(description="When it was resolved (by support, or by itself).")
    def resolved_at(self) -> datetime | None:
        return self.row.resolved_at

    @strawberry.field(description="When its latest order joined.")
    def last_failure_at(self) -> datetime:
        return self.row.last_failure_at

    async def _counts(self, info: Info) -> tuple[int, int]:
        assert self.row.id is not None
        counts = await visible_counts(self.loaders, viewer_of(info), [self.row.id])
        return counts[self.row.id]

    @strawberry.field(description="How many of its orders the viewer may see.")
    async def order_count(self, info: Info) -> int:
        return (await self._counts(info))[0]

    @strawberry.field(description="How many of those are still in PF (Provisioning Failed).")
    async def pending_count(self, info: Info) -> int:
        return (await self._counts(info))[1]

    @strawberry.field(description="Its orders that the viewer may see, newest first.")
    async def orders(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Order]:
        return await ORDERS.connection(
            self.loaders.db,
            self.loaders,
            where=[
                col(om.SalesOrder.incident_id) == self.row.id,
                policy.order_scope(viewer_of(info)),
            ],
            first=first,
            after=after,
        )


INCIDENTS = Listing(im.Incident, kind="incident", newest_first=True, node=Incident.wrap)


@strawberry.input(description="Narrows the list of incidents.")
class IncidentFilter:
    status: IncidentStatus | None = strawberry.field(default=None, description="In this status.")


def incident_conditions(viewer: Viewer, filter: IncidentFilter | None) -> list[Any]:
    conditions = [policy.incident_scope(viewer)]
    if filter is not None and filter.status is not None:
        conditions.append(col(im.Incident.status) == filter.status.value)
    return conditions


async def order_incident(order: Order) -> Incident | None:
    """`Order.incident`: the incident the order's latest failure joined, if any."""
    if order.row.incident_id is None:
        return None
    row = await order.loaders.incident.load(order.row.incident_id)
    return Incident.wrap(row, order.loaders) if row is not None else None


@strawberry.type(description="An incident opened, grew, was resubmitted or was resolved.")
class IncidentChange(EventChange):
    @strawberry.field(description="The incident, as it is now.")
    async def incident(self) -> Incident:
        row = await self.loaders.incident.load(self.event.incident_id or 0)
        return Incident.wrap(row, self.loaders)

    @strawberry.field(description="What happened.")
    def change(self) -> IncidentChangeKind:
        return IncidentChangeKind(self.event.action or "")

    @strawberry.field(
        description="Who did it, as a role and a display name (the platform's failure, support, "
        "or OrderPulse by itself), shown as `OrderStatusChange.actor` is."
    )
    async def actor(self, info: Info) -> str | None:
        return await actor_for(viewer_of(info), self.event.actor, self.loaders)

    @strawberry.field(description="The comment given, if any.")
    def comment(self) -> str | None:
        return self.event.comment

    @strawberry.field(description="When it happened.")
    def occurred_at(self) -> datetime:
        return self.event.occurred_at
