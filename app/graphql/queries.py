"""Query root: thin resolvers that ask `access.policy` for the viewer's scope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import strawberry
from sqlalchemy import ColumnElement, false, func
from sqlmodel import col, select

from app.access import policy
from app.access.viewer import Viewer as DomainViewer
from app.errors import NotFound, OperationForbidden
from app.graphql.context import Info, forbidden, viewer_of
from app.graphql.ids import parse_global_id, parse_pk
from app.graphql.incidents import INCIDENTS, Incident, IncidentFilter, incident_conditions
from app.graphql.pagination import After, Connection, First, Listing
from app.graphql.types import (
    CUSTOMERS,
    NOTIFICATIONS,
    ORDERS,
    RESELLERS,
    Customer,
    DeliveryStatus,
    FailureReasonInfo,
    Node,
    Notification,
    NotificationKind,
    NotificationSettings,
    NotificationTemplate,
    Order,
    OrderStatus,
    OrderStatusCount,
    OrderStatusInfo,
    RecipientRole,
    Reseller,
    ViewerType,
)
from app.notifications import models as nm
from app.notifications import service as notification_service
from app.orders import flow
from app.orders import models as om


@strawberry.input(description="Narrows a list of orders; all given conditions must hold.")
class OrderFilter:
    status: list[OrderStatus] | None = strawberry.field(
        default=None, description="Orders in any of these statuses."
    )
    customer_id: strawberry.ID | None = strawberry.field(
        default=None, description="Orders of this customer."
    )
    reseller_id: strawberry.ID | None = strawberry.field(
        default=None, description="Orders of this reseller's customers."
    )
    requires_manual_action: bool | None = strawberry.field(
        default=None, description="Orders whose status does (true) or does not need someone to act."
    )
    number: str | None = strawberry.field(default=None, description="The order with this number.")


@strawberry.input(description="Narrows a list of notifications.")
class NotificationFilter:
    order_id: strawberry.ID | None = strawberry.field(default=None, description="About this order.")
    recipient_role: RecipientRole | None = strawberry.field(
        default=None, description="Addressed to this role."
    )
    status: DeliveryStatus | None = strawberry.field(default=None, description="In this status.")
    kind: NotificationKind | None = strawberry.field(default=None, description="Of this kind.")


def _id_condition(
    column: ColumnElement[int] | object, value: strawberry.ID | None, type_name: str
) -> list[ColumnElement[bool]]:
    """A filter on an ID; a malformed or foreign-typed ID matches nothing."""
    if value is None:
        return []
    pk = parse_pk(value, type_name)
    return [false()] if pk is None else [col(column) == pk]


def order_conditions(viewer: DomainViewer, filter: OrderFilter | None) -> list[ColumnElement[bool]]:
    conditions = [policy.order_scope(viewer)]
    if filter is None:
        return conditions
    if filter.status is not None:
        conditions.append(col(om.SalesOrder.status).in_([s.value for s in filter.status]))
    conditions += _id_condition(om.SalesOrder.customer_id, filter.customer_id, "Customer")
    conditions += _id_condition(om.SalesOrder.reseller_id, filter.reseller_id, "Reseller")
    if filter.requires_manual_action is not None:
        manual = [s.value for s in flow.MANUAL_ACTION_STATUSES]
        status = col(om.SalesOrder.status)
        conditions.append(
            status.in_(manual) if filter.requires_manual_action else status.not_in(manual)
        )
    if filter.number is not None:
        conditions.append(col(om.SalesOrder.number) == filter.number.strip().upper())
    return conditions


def status_counts_query(viewer: DomainViewer, filter: OrderFilter | None) -> Any:
    """(status, count) rows of the visible orders, by status (shared with the read planner)."""
    status = col(om.SalesOrder.status)
    return (
        select(status, func.count())
        .where(*order_conditions(viewer, filter))
        .group_by(status)
        .order_by(status)
    )


def status_counts(rows: Sequence[Any]) -> list[OrderStatusCount]:
    return [OrderStatusCount(status=flow.Status(s), count=int(n)) for s, n in rows]


def notification_conditions(
    viewer: DomainViewer, filter: NotificationFilter | None
) -> list[ColumnElement[bool]]:
    conditions = [policy.notification_scope(viewer)]
    if filter is None:
        return conditions
    conditions += _id_condition(nm.Notification.order_id, filter.order_id, "Order")
    if filter.recipient_role is not None:
        conditions.append(col(nm.Notification.recipient_role) == filter.recipient_role.value)
    if filter.status is not None:
        conditions.append(col(nm.Notification.status) == filter.status.value)
    if filter.kind is not None:
        conditions.append(col(nm.Notification.kind) == filter.kind.value)
    return conditions


# The node types whose rows a viewer sees by a tenancy scope: their listing (model and GraphQL
# type) and the scope `access.policy` gives.
SCOPED_NODES: dict[str, tuple[Listing[Any], Callable[[DomainViewer], ColumnElement[bool]]]] = {
    "Order": (ORDERS, policy.order_scope),
    "Customer": (CUSTOMERS, policy.customer_scope),
    "Reseller": (RESELLERS, policy.reseller_scope),
    "Notification": (NOTIFICATIONS, policy.notification_scope),
    "Incident": (INCIDENTS, policy.incident_scope),
}


async def read_notification_settings(info: Info, reseller_pk: int) -> NotificationSettings | None:
    """A reseller's notification settings, if the viewer manages that reseller: None exactly as
    if the reseller were missing. A role that may not read settings raises OperationForbidden."""
    try:
        async with info.context.services.db.read() as session:
            settings, template = await notification_service.read_settings(
                session, viewer=viewer_of(info), reseller_id=reseller_pk
            )
    except NotFound:  # missing, or another reseller's: the same null
        return None
    return NotificationSettings.wrap(settings, template, info.context.loaders)


async def load_node(info: Info, type_name: str, pk: int) -> Node | None:
    """The object behind a global ID if the viewer may see it; None exactly as if missing."""
    viewer = viewer_of(info)
    loaders = info.context.loaders
    if type_name in SCOPED_NODES:
        listing, scope = SCOPED_NODES[type_name]
        query = select(listing.model).where(col(listing.model.id) == pk, scope(viewer))
        async with info.context.services.db.read() as session:
            row = (await session.exec(query)).first()
        return listing.node(row, loaders) if row is not None else None
    if type_name == "NotificationTemplate":
        if viewer.role not in policy.Operation.LIST_TEMPLATES:
            return None
        row = await loaders.template.load(pk)
        return NotificationTemplate.wrap(row) if row is not None else None
    if type_name == "NotificationSettings":  # its pk is its reseller's
        if viewer.role not in policy.Operation.NOTIFICATION_SETTINGS:
            return None
        return await read_notification_settings(info, pk)
    return None


async def _connection(
    info: Info,
    listing: Listing[Any],
    where: Sequence[ColumnElement[bool]],
    first: int | None,
    after: str | None,
) -> Connection[Any]:
    """A top-level list: its rows for this request, with the request's loaders."""
    db, loaders = info.context.services.db, info.context.loaders
    return await listing.connection(db, loaders, where=where, first=first, after=after)


async def _typed_node(info: Info, value: strawberry.ID, type_name: str) -> Node | None:
    viewer_of(info)
    parsed = parse_global_id(value, type_name)
    return await load_node(info, type_name, parsed[1]) if parsed else None


ObjectId = Annotated[
    strawberry.ID, strawberry.argument(description="The object's global ID (from its `id`).")
]
OrderFilterArgument = Annotated[
    OrderFilter | None,
    strawberry.argument(description="Only the orders that match every condition given."),
]
ResellerIdArgument = Annotated[
    strawberry.ID | None, strawberry.argument(description="Only this reseller's.")
]


@strawberry.type(
    description="The entry points for reading: the viewer, objects by ID, the lists the viewer "
    "may see, and the status and failure reason catalogues."
)
class Query:
    @strawberry.field(description="Who is asking.")
    async def viewer(self, info: Info) -> ViewerType:
        viewer = viewer_of(info)
        loaders = info.context.loaders
        reseller = await loaders.reseller.load(viewer.reseller_id) if viewer.reseller_id else None
        customer = await loaders.customer.load(viewer.customer_id) if viewer.customer_id else None
        return ViewerType(
            role=viewer.role,
            reseller=Reseller.wrap(reseller, loaders) if reseller else None,
            customer=Customer.wrap(customer, loaders) if customer else None,
        )

    @strawberry.field(description="Any object by its global ID; null if missing or not visible.")
    async def node(self, info: Info, id: ObjectId) -> Node | None:
        viewer_of(info)
        parsed = parse_global_id(id)
        return await load_node(info, *parsed) if parsed else None

    @strawberry.field(description="An order by ID; null if missing or not visible.")
    async def order(self, info: Info, id: ObjectId) -> Order | None:
        return await _typed_node(info, id, "Order")  # type: ignore[return-value]

    @strawberry.field(description="The orders the viewer may see, newest first.")
    async def orders(
        self,
        info: Info,
        filter: OrderFilterArgument = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Order]:
        return await _connection(
            info, ORDERS, order_conditions(viewer_of(info), filter), first, after
        )

    @strawberry.field(description="A customer by ID; null if missing or not visible.")
    async def customer(self, info: Info, id: ObjectId) -> Customer | None:
        return await _typed_node(info, id, "Customer")  # type: ignore[return-value]

    @strawberry.field(description="The customers the viewer may see.")
    async def customers(
        self,
        info: Info,
        reseller_id: ResellerIdArgument = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Customer]:
        where = [
            policy.customer_scope(viewer_of(info)),
            *_id_condition(om.Customer.reseller_id, reseller_id, "Reseller"),
        ]
        return await _connection(info, CUSTOMERS, where, first, after)

    @strawberry.field(description="A reseller by ID; null if missing or not visible.")
    async def reseller(self, info: Info, id: ObjectId) -> Reseller | None:
        return await _typed_node(info, id, "Reseller")  # type: ignore[return-value]

    @strawberry.field(description="The resellers the viewer may see.")
    async def resellers(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Reseller]:
        where = [policy.reseller_scope(viewer_of(info))]
        return await _connection(info, RESELLERS, where, first, after)

    @strawberry.field(description="The status catalogue.")
    def order_statuses(self, info: Info) -> list[OrderStatusInfo]:
        viewer_of(info)
        return [
            OrderStatusInfo(
                code=s.code,
                name=s.name,
                description=s.description,
                probable_causes=list(s.probable_causes),
                requires_manual_action=s.requires_manual_action,
                actions=flow.actions_from(s.code),
            )
            for s in flow.STATUSES.values()
        ]

    @strawberry.field(description="The failure reason catalogue.")
    def failure_reasons(self, info: Info) -> list[FailureReasonInfo]:
        viewer_of(info)
        return [
            FailureReasonInfo(reason=r.reason, message=r.message, remedy=r.remedy)
            for r in flow.FAILURE_REASONS.values()
        ]

    @strawberry.field(description="How many visible orders are in each status (zeros omitted).")
    async def order_status_counts(
        self, info: Info, filter: OrderFilterArgument = None
    ) -> list[OrderStatusCount]:
        query = status_counts_query(viewer_of(info), filter)
        async with info.context.services.db.read() as session:
            rows = (await session.exec(query)).all()
        return status_counts(rows)

    @strawberry.field(description="The notifications the viewer may see, newest first.")
    async def notifications(
        self,
        info: Info,
        filter: Annotated[
            NotificationFilter | None,
            strawberry.argument(description="Only the notifications that match every condition."),
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Notification]:
        viewer = viewer_of(info)
        if viewer.role not in policy.Operation.READ_NOTIFICATIONS:
            raise forbidden(f"the {viewer.role.value} role may not read notifications")
        where = notification_conditions(viewer, filter)
        return await _connection(info, NOTIFICATIONS, where, first, after)

    @strawberry.field(
        description="A reseller's notification settings (default: the viewer's reseller); null "
        "if the reseller is missing or not the viewer's."
    )
    async def notification_settings(
        self,
        info: Info,
        reseller_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(description="The reseller; default: the viewer's reseller."),
        ] = None,
    ) -> NotificationSettings | None:
        viewer = viewer_of(info)
        pk = parse_pk(reseller_id, "Reseller") if reseller_id is not None else viewer.reseller_id
        if pk is None:
            return None
        try:
            return await read_notification_settings(info, pk)
        except OperationForbidden as exc:
            raise forbidden(str(exc)) from exc

    @strawberry.field(
        description="Provisioning incidents, newest first (support only): many orders that "
        "failed for one reason within a short window."
    )
    async def incidents(
        self,
        info: Info,
        filter: Annotated[
            IncidentFilter | None,
            strawberry.argument(description="Only the incidents in this status."),
        ] = None,
        first: First = None,
        after: After = None,
    ) -> Connection[Incident]:
        viewer = viewer_of(info)
        if viewer.role not in policy.Operation.MANAGE_INCIDENTS:
            raise forbidden(f"the {viewer.role.value} role may not list incidents")
        return await _connection(info, INCIDENTS, incident_conditions(viewer, filter), first, after)

    @strawberry.field(description="Every notification template.")
    async def notification_templates(self, info: Info) -> list[NotificationTemplate]:
        viewer = viewer_of(info)
        try:
            async with info.context.services.db.read() as session:
                rows = await notification_service.list_templates(session, viewer=viewer)
        except OperationForbidden as exc:
            raise forbidden(str(exc)) from exc
        return [NotificationTemplate.wrap(r) for r in rows]
