"""The GraphQL object types. Each wraps a domain row plus the loaders of its request or event."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias, TypeVar

import strawberry
from sqlalchemy import case, literal
from sqlmodel import col

from app.access import policy
from app.access.viewer import Viewer as DomainViewer
from app.graphql.actors import actor_for
from app.graphql.changes import EventChange
from app.graphql.context import Info, viewer_of
from app.graphql.ids import to_global_id
from app.graphql.loaders import Loaders
from app.graphql.pagination import After, Connection, First, Listing
from app.graphql.planner.json_sql import (
    CUSTOMER,
    ITEM,
    ORDER,
    RESELLER,
    Child,
    JsonSql,
    Leaf,
    Sql,
    amount,
    datetime_of,
    enum_of,
    money_of,
    plain,
)
from app.graphql.reads import EXECUTOR_ONLY, NODE_ID, planned, read, relation, stored
from app.notifications import models as nm
from app.orders import flow
from app.orders import models as om

if TYPE_CHECKING:
    from app.graphql.incidents import Incident

# --- enums (the domain's own enums, exposed under their API names) ------------------------------

E = TypeVar("E", bound=Enum)


def expose_enum(cls: type[E], *, name: str, description: str, values: Mapping[E, str]) -> type[E]:
    """Register the domain enum `cls` in place under its API name, every value described.

    The domain never imports strawberry, so its members cannot be `strawberry.enum_value`s; the
    descriptions are given here, one per member (tests/graphql/test_schema_docs.py names any
    member left without one).
    """
    strawberry.enum(cls, name=name, description=description)
    definition = cls.__strawberry_definition__  # type: ignore[attr-defined]
    definition.values = [
        replace(value, description=values.get(cls[value.name])) for value in definition.values
    ]
    return cls


def status_description(info: flow.StatusInfo) -> str:
    """An OrderStatus value's meaning, from the status catalogue (SPEC 2)."""
    manual = "Manual action required." if info.requires_manual_action else "No manual action."
    causes = f" Typical causes: {' '.join(info.probable_causes)}" if info.probable_causes else ""
    actions = ", ".join(dict.fromkeys(flow.actions_from(info.code)))
    then = f" Actions: {actions}." if actions else ""
    return f"{info.name}: {info.description} {manual}{causes}{then}"


def failure_reason_description(info: flow.FailureInfo) -> str:
    """A FailureReason value's message and remedy, from the failure reason catalogue."""
    message = info.message.removesuffix(".")
    if info.reason is flow.FailureReason.OTHER:  # as `flow.failure_message` shows it
        message = "Another failure; its message is the details given"
    return f"{message}. Remedy: {info.remedy.removesuffix('.')}."


def action_description(action: flow.Action) -> str:
    """An OrderAction value: what it is for, then from where it goes where for whom, from the
    action table (`flow.TRANSITIONS`)."""
    moves: dict[tuple[flow.Status | None, frozenset[flow.Role]], list[str]] = {}
    for row in flow.TRANSITIONS:
        if row.action is action:
            moves.setdefault((row.target, row.roles), []).append(row.source.value)
    parts = [
        f"from {', '.join(sources)} to {target.value if target else 'the automatic checks'} "
        f"({', '.join(r.value for r in flow.Role if r in roles)})"
        for (target, roles), sources in moves.items()
    ]
    return f"{flow.ACTION_PURPOSES[action]} Goes {'; '.join(parts)}."


expose_enum(
    flow.Status,
    name="OrderStatus",
    description="The platform's two-letter order status codes (see `orderStatuses`).",
    values={code: status_description(info) for code, info in flow.STATUSES.items()},
)
expose_enum(
    flow.OrderType,
    name="OrderType",
    description="SO sales, RN renewal, CH change, CL cancellation.",
    values={
        flow.OrderType.SO: "Sales: a new subscription.",
        flow.OrderType.RN: "Renewal of a subscription.",
        flow.OrderType.CH: "Change of a subscription.",
        flow.OrderType.CL: "Cancellation of a subscription.",
    },
)
expose_enum(
    flow.Action,
    name="OrderAction",
    description="What an operator can do to an order.",
    values={action: action_description(action) for action in flow.ACTION_PURPOSES},
)
expose_enum(
    flow.FailureReason,
    name="FailureReason",
    description="Why provisioning failed.",
    values={r: failure_reason_description(i) for r, i in flow.FAILURE_REASONS.items()},
)
expose_enum(
    flow.ProvisioningOutcome,
    name="ProvisioningOutcome",
    description="What the provisioning platform reports for an order in PR or LO.",
    values={
        flow.ProvisioningOutcome.SUCCEEDED: "The service was provisioned: the order goes to CP, "
        "or to WZ when a cash/check order was provisioned on credit.",
        flow.ProvisioningOutcome.FAILED: "Provisioning failed (a `reason` is required): the "
        "order goes to PF and the failure is notified.",
        flow.ProvisioningOutcome.LONG_RUNNING: "Provisioning waits for an external system: the "
        "order goes to LO.",
        flow.ProvisioningOutcome.MANUAL_OPERATION_REQUIRED: "The service must be provisioned by "
        "a non-integrated system: the order goes to MO.",
    },
)
expose_enum(
    flow.PaymentMethod,
    name="PaymentMethod",
    description="How a customer pays.",
    values={
        flow.PaymentMethod.AUTOMATIC: "Charged automatically (the default).",
        flow.PaymentMethod.CASH_OR_CHECK: "Paid by cash or check: an order above the customer's "
        "credit limit waits for payment (WP).",
        flow.PaymentMethod.NONE: "No payment method attached: orders stop in NP.",
    },
)
expose_enum(
    flow.Role,
    name="Role",
    description="Who the viewer is.",
    values={
        flow.Role.SUPPORT: "The distributor's support team: sees and may do everything.",
        flow.Role.RESELLER: "A reseller's staff: sees itself, its customers and their orders.",
        flow.Role.CUSTOMER: "A customer's staff: sees itself and its own orders.",
        flow.Role.SYSTEM: "The provisioning platform: reports provisioning results.",
    },
)
OrderStatus: TypeAlias = flow.Status
OrderType: TypeAlias = flow.OrderType
OrderAction: TypeAlias = flow.Action
FailureReason: TypeAlias = flow.FailureReason
ProvisioningOutcome: TypeAlias = flow.ProvisioningOutcome
PaymentMethod: TypeAlias = flow.PaymentMethod
Role: TypeAlias = flow.Role


expose_enum(
    nm.NotificationKind,
    name="NotificationKind",
    description="Why a notification was sent.",
    values={
        nm.NotificationKind.ORDER_PROVISIONING_FAILED: "The order entered PF (Provisioning "
        "Failed).",
        nm.NotificationKind.FAILED_ORDER_UNRESOLVED: "The failed order was still in PF at its "
        "service-level deadline (an escalation to the reseller).",
        nm.NotificationKind.PROVISIONING_INCIDENT_OPENED: "An incident opened: many orders failed "
        "for one reason (to support, once, instead of one mail per order).",
        nm.NotificationKind.PROVISIONING_INCIDENT_DIGEST: "The orders that joined an open "
        "incident since its last mail (to support, at most once per digest period).",
        nm.NotificationKind.FAILED_ORDERS_UNRESOLVED: "An incident's orders of one reseller still "
        "in PF at their service-level deadline (one escalation per reseller and incident).",
    },
)
expose_enum(
    nm.RecipientRole,
    name="RecipientRole",
    description="Whom a notification is addressed to.",
    values={
        nm.RecipientRole.SUPPORT: "The support team (always told).",
        nm.RecipientRole.RESELLER: "The reseller's e-mail.",
        nm.RecipientRole.CUSTOMER: "The customer's contact e-mail.",
    },
)
expose_enum(
    nm.DeliveryStatus,
    name="DeliveryStatus",
    description="Where a notification's mail stands.",
    values={
        nm.DeliveryStatus.PENDING: "Not sent yet, or waiting for a retry.",
        nm.DeliveryStatus.SENT: "The mail server accepted it.",
        nm.DeliveryStatus.FAILED: "Refused, or out of attempts; support can retry it.",
        nm.DeliveryStatus.SUPPRESSED: "Recorded, never mailed: support's notice of an order that "
        "joined an incident (support hears of the incident instead).",
    },
)
NotificationKind: TypeAlias = nm.NotificationKind
RecipientRole: TypeAlias = nm.RecipientRole
DeliveryStatus: TypeAlias = nm.DeliveryStatus


# --- nodes ------------------------------------------------------------------------------------
# The planned types (`@planned`: Order, Customer, Reseller and the objects they hold) declare each
# field once (`app.graphql.reads`): its resolver, the columns the read planner selects for it and
# its SQL form all come from that declaration.


@strawberry.interface(description="An object with a global ID, fetchable with `node(id:)`.")
class Node:
    id: strawberry.ID = strawberry.field(description="The opaque global ID.", metadata=NODE_ID)


@planned()
@strawberry.type(description="An amount of money.")
class Money:
    # (planned only as an order's total)
    amount: Decimal = stored(
        money_of(ORDER.c.total), description="The amount, as a decimal string."
    )
    currency: str = stored(plain(ORDER.c.currency), description="ISO 4217 currency code.")


def reseller_email(row: Any, viewer: DomainViewer) -> str:
    """A reseller's e-mail as this viewer may see it (empty: not theirs to see)."""
    return row.email if policy.may_see_reseller_contact(viewer, row.id) else ""


@planned(RESELLER)
@strawberry.type(description="A value-added reseller (VAR).")
class Reseller(Node):
    row: strawberry.Private[om.Reseller]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(cls, row: om.Reseller, loaders: Loaders) -> Reseller:
        assert row.id is not None
        return cls(id=to_global_id("Reseller", row.id), row=row, loaders=loaders)

    name = read(str, RESELLER.c.name, description="The reseller's name.")
    email = read(
        str,
        reseller_email,
        reads=(RESELLER.c.email,),
        by_viewer=True,
        sql=None,  # the policy decides it per viewer: the row plan answers
        description="Where the reseller's notifications go. Empty for viewers other than "
        "support and the reseller itself.",
    )

    @strawberry.field(
        description="The reseller's customers that the viewer may see.", metadata=EXECUTOR_ONLY
    )
    async def customers(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Customer]:
        return await CUSTOMERS.connection(
            info.context.services.db,
            self.loaders,
            where=[
                col(om.Customer.reseller_id) == self.row.id,
                policy.customer_scope(viewer_of(info)),
            ],
            first=first,
            after=after,
        )

    created_at = read(datetime, RESELLER.c.created_at, description="When the reseller was created.")


@planned(CUSTOMER)
@strawberry.type(description="A customer of a reseller.")
class Customer(Node):
    row: strawberry.Private[om.Customer]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(cls, row: om.Customer, loaders: Loaders) -> Customer:
        assert row.id is not None
        return cls(id=to_global_id("Customer", row.id), row=row, loaders=loaders)

    name = read(str, CUSTOMER.c.name, description="The customer's name.")
    contact_email = read(
        str,
        CUSTOMER.c.contact_email,
        description="The contact e-mail; customer notifications go here (changes apply to later "
        "notifications).",
    )
    payment_method = read(
        PaymentMethod, CUSTOMER.c.payment_method, description="How the customer pays."
    )
    on_hold = read(bool, CUSTOMER.c.on_hold, description="Whether the customer account is on hold.")
    requires_verification = read(
        bool,
        CUSTOMER.c.requires_verification,
        description="Whether the account still needs manual verification.",
    )
    credit_limit = read(
        Decimal,
        CUSTOMER.c.credit_limit,
        description="Cash/check orders up to this total are provisioned on credit.",
    )

    @strawberry.field(description="The customer's reseller.", metadata=EXECUTOR_ONLY)
    async def reseller(self) -> Reseller:
        row = await self.loaders.reseller.load(self.row.reseller_id)
        return Reseller.wrap(row, self.loaders)

    @strawberry.field(description="The customer's orders, newest first.", metadata=EXECUTOR_ONLY)
    async def orders(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[Order]:
        return await ORDERS.connection(
            info.context.services.db,
            self.loaders,
            where=[
                col(om.SalesOrder.customer_id) == self.row.id,
                policy.order_scope(viewer_of(info)),
            ],
            first=first,
            after=after,
        )

    created_at = read(datetime, CUSTOMER.c.created_at, description="When the customer was created.")


@planned()
@strawberry.type(description="One line of an order.")
class OrderItem:
    description: str = stored(plain(ITEM.c.description), description="What is sold.")
    quantity: int = stored(plain(ITEM.c.quantity), description="How many.")
    unit_price: Decimal = stored(
        money_of(ITEM.c.unit_price), description="Price of one, in the order's currency."
    )


def remedy_sql(_role: Role, _sql: JsonSql) -> Sql:
    """`OrderFailure.remedy` in SQL: the catalogue's remedy of the stored reason."""
    whens = {reason.value: literal(info.remedy) for reason, info in flow.FAILURE_REASONS.items()}
    return case(whens, value=ORDER.c.failure_reason)


@planned()
@strawberry.type(description="Why and when an order failed, and what to do about it.")
class OrderFailure:
    reason: FailureReason = stored(
        enum_of(flow.FailureReason, ORDER.c.failure_reason), description="The failure reason code."
    )
    message: str = stored(None, description="What went wrong, for people.")  # rendered by Python
    remedy: str = stored(remedy_sql, description="What to do about it.")
    details: str | None = stored(
        plain(ORDER.c.failure_details), description="Details from the platform or operator."
    )
    failed_at: datetime = stored(
        datetime_of(ORDER.c.failed_at), description="When the order entered PF."
    )
    sla_deadline: datetime = stored(
        datetime_of(ORDER.c.sla_deadline),
        description="When support's business-hours service level runs out.",
    )
    escalated_at: datetime | None = stored(
        datetime_of(ORDER.c.escalated_at),
        description="When the unresolved failure was escalated to the reseller.",
    )


@strawberry.type(description="One status change of an order (also the order's history).")
class OrderStatusChange(EventChange):
    @strawberry.field(description="The order, as it is now.")
    async def order(self) -> Order:
        row = await self.loaders.order.load(self.event.order_id)
        return Order.wrap(row, self.loaders)

    @strawberry.field(name="from", description="The status before; null for a new order.")
    def from_(self) -> OrderStatus | None:
        return flow.Status(self.event.from_status) if self.event.from_status else None

    @strawberry.field(description="The status the order rests in after the change.")
    def to(self) -> OrderStatus:
        return flow.Status(self.event.to_status or "")

    @strawberry.field(
        description="What caused it: an OrderAction, PLACE_ORDER or REPORT_<outcome>."
    )
    def action(self) -> str | None:
        return self.event.action

    @strawberry.field(description="The failure reason, for a change into PF.")
    def reason(self) -> FailureReason | None:
        return flow.FailureReason(self.event.reason) if self.event.reason else None

    @strawberry.field(
        description='Who did it: a role and a display name, e.g. "Reseller Northwind Cloud", '
        '"Customer Acme Corp", "Support", "Provisioning platform"; support also sees '
        "the recorded ids in brackets."
    )
    async def actor(self, info: Info) -> str | None:
        return await actor_for(viewer_of(info), self.event.actor, self.loaders)

    @strawberry.field(description="The operator's comment, if any.")
    def comment(self) -> str | None:
        return self.event.comment

    @strawberry.field(description="When it happened.")
    def occurred_at(self) -> datetime:
        return self.event.occurred_at


# What an order's computed fields are made of, from its row (an ORM object or a plain row), in
# Python and in SQL: the resolvers and the read planner both use these.


def order_total(row: Any) -> Money:
    return Money(amount=amount(row.total), currency=row.currency)


def requires_manual_action(row: Any) -> bool:
    return flow.Status(row.status) in flow.MANUAL_ACTION_STATUSES


def requires_manual_action_sql(_role: Role, sql: JsonSql) -> Sql:
    return sql.boolean(ORDER.c.status.in_([s.value for s in flow.MANUAL_ACTION_STATUSES]))


def order_items(rows: Sequence[Any]) -> list[OrderItem]:
    return [
        OrderItem(description=r.description, quantity=r.quantity, unit_price=amount(r.unit_price))
        for r in rows
    ]


def order_failure(row: Any) -> OrderFailure | None:
    if row.failure_reason is None or row.failed_at is None or row.sla_deadline is None:
        return None
    reason = flow.FailureReason(row.failure_reason)
    return OrderFailure(
        reason=reason,
        message=flow.failure_message(reason, row.failure_details),
        remedy=flow.FAILURE_REASONS[reason].remedy,
        details=row.failure_details,
        failed_at=row.failed_at,
        sla_deadline=row.sla_deadline,
        escalated_at=row.escalated_at,
    )


def no_failure_sql() -> Sql:
    """When `order_failure` is None, in SQL."""
    absent: Sql = (
        ORDER.c.failure_reason.is_(None)
        | ORDER.c.failed_at.is_(None)
        | ORDER.c.sla_deadline.is_(None)
    )
    return absent


def available_actions(row: Any, viewer: DomainViewer) -> list[flow.Action]:
    return flow.available_actions(flow.Status(row.status), viewer.role)


def available_actions_sql(role: Role, sql: JsonSql) -> Sql:
    whens = {
        status.value: sql.array([a.name for a in flow.available_actions(status, role)])
        for status in flow.Status
    }
    return sql.json(case(whens, value=ORDER.c.status, else_=sql.empty_array()))


@planned(ORDER)
@strawberry.type(description="A sales order and its provisioning state.")
class Order(Node):
    row: strawberry.Private[om.SalesOrder]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(cls, row: om.SalesOrder, loaders: Loaders) -> Order:
        assert row.id is not None
        return cls(id=to_global_id("Order", row.id), row=row, loaders=loaders)

    number = read(str, ORDER.c.number, description="The human order number, e.g. SO-000042.")
    type = read(OrderType, ORDER.c.type, description="The order type.")
    status = read(OrderStatus, ORDER.c.status, description="The current status.")
    version = read(
        int,
        ORDER.c.version,
        description="Bumped on every change; pass as `expectedVersion` for optimistic concurrency.",
    )
    total = read(
        Money,
        order_total,
        reads=(ORDER.c.total, ORDER.c.currency),
        sql=Child(),
        description="The order total.",
    )
    requires_manual_action = read(
        bool,
        requires_manual_action,
        reads=(ORDER.c.status,),
        sql=Leaf(requires_manual_action_sql),
        description="Whether the current status needs someone to act.",
    )

    @relation("items", value=order_items, sql=Child(items=True), description="The line items.")
    async def items(self) -> list[OrderItem]:
        return order_items(await self.loaders.items.load(self.row.id or 0))

    @relation("customer", description="The customer the order is for.")
    async def customer(self) -> Customer:
        row = await self.loaders.customer.load(self.row.customer_id)
        return Customer.wrap(row, self.loaders)

    @relation("reseller", description="The customer's reseller.")
    async def reseller(self) -> Reseller:
        row = await self.loaders.reseller.load(self.row.reseller_id)
        return Reseller.wrap(row, self.loaders)

    created_at = read(datetime, ORDER.c.created_at, description="When the order was placed.")
    updated_at = read(datetime, ORDER.c.updated_at, description="When the order last changed.")
    failure = read(
        OrderFailure | None,
        order_failure,
        reads=(
            ORDER.c.failure_reason,
            ORDER.c.failure_details,
            ORDER.c.failed_at,
            ORDER.c.sla_deadline,
            ORDER.c.escalated_at,
        ),
        sql=Child(absent=no_failure_sql),
        description="The latest provisioning failure, while or after it failed.",
    )

    @strawberry.field(description="Every status change, oldest first.", metadata=EXECUTOR_ONLY)
    async def history(self) -> list[OrderStatusChange]:
        events = await self.loaders.history.load(self.row.id or 0)
        return [OrderStatusChange(event=e, loaders=self.loaders) for e in events]

    available_actions = read(
        list[OrderAction],
        available_actions,
        reads=(ORDER.c.status,),
        by_viewer=True,
        sql=Leaf(available_actions_sql),
        description="What this viewer may do to the order now.",
    )

    @strawberry.field(
        description="The incident its latest failure joined (SPEC 10), if any; its counts and "
        "orders cover what the viewer may see.",
        metadata=EXECUTOR_ONLY,
    )
    async def incident(
        self,
    ) -> Annotated[Incident, strawberry.lazy("app.graphql.incidents")] | None:
        from app.graphql.incidents import order_incident

        return await order_incident(self)

    @strawberry.field(
        description="The order's notifications that the viewer may see.", metadata=EXECUTOR_ONLY
    )
    async def notifications(self, info: Info) -> list[Notification]:
        viewer = viewer_of(info)
        rows = await self.loaders.notifications.load(self.row.id or 0)
        return [
            Notification.wrap(r, self.loaders)
            for r in rows
            if policy.may_see_notification(
                viewer,
                reseller_id=r.reseller_id,
                customer_id=r.customer_id,
                recipient_role=r.recipient_role,
            )
        ]


@strawberry.type(description="A message about an order to one recipient, and its delivery.")
class Notification(Node):
    row: strawberry.Private[nm.Notification]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(cls, row: nm.Notification, loaders: Loaders) -> Notification:
        assert row.id is not None
        return cls(id=to_global_id("Notification", row.id), row=row, loaders=loaders)

    @strawberry.field(description="The order it is about.")
    async def order(self) -> Order:
        row = await self.loaders.order.load(self.row.order_id)
        return Order.wrap(row, self.loaders)

    @strawberry.field(description="Why it was sent.")
    def kind(self) -> NotificationKind:
        return NotificationKind(self.row.kind)

    @strawberry.field(description="Whom it is addressed to.")
    def recipient_role(self) -> RecipientRole:
        return RecipientRole(self.row.recipient_role)

    @strawberry.field(description="The recipient's e-mail address.")
    def email(self) -> str:
        return self.row.email

    @strawberry.field(description="The rendered subject.")
    def subject(self) -> str:
        return self.row.subject

    @strawberry.field(description="The rendered plain-text body.")
    def body(self) -> str:
        return self.row.body

    @strawberry.field(description="Where delivery stands.")
    def status(self) -> DeliveryStatus:
        return DeliveryStatus(self.row.status)

    @strawberry.field(description="How many delivery attempts were made.")
    def attempts(self) -> int:
        return self.row.attempts

    @strawberry.field(description="The last delivery error, if any.")
    def last_error(self) -> str | None:
        return self.row.last_error

    @strawberry.field(description="The mail's Message-ID (the same on every resend).")
    def message_id(self) -> str:
        return self.row.message_id

    @strawberry.field(description="When it was created.")
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field(description="When the mail server accepted it.")
    def sent_at(self) -> datetime | None:
        return self.row.sent_at

    @strawberry.field(
        description="The incident it is about or was suppressed for (SPEC 10), if any; its "
        "counts and orders cover what the viewer may see."
    )
    async def incident(
        self,
    ) -> Annotated[Incident, strawberry.lazy("app.graphql.incidents")] | None:
        from app.graphql.incidents import Incident as IncidentType

        if self.row.incident_id is None:
            return None
        row = await self.loaders.incident.load(self.row.incident_id)
        return IncidentType.wrap(row, self.loaders) if row is not None else None


@strawberry.type(description="A Jinja template for notification mail.")
class NotificationTemplate(Node):
    row: strawberry.Private[nm.NotificationTemplate]

    @classmethod
    def wrap(cls, row: nm.NotificationTemplate) -> NotificationTemplate:
        assert row.id is not None
        return cls(id=to_global_id("NotificationTemplate", row.id), row=row)

    @strawberry.field(description="A unique name.")
    def name(self) -> str:
        return self.row.name

    @strawberry.field(description="The subject template.")
    def subject(self) -> str:
        return self.row.subject

    @strawberry.field(description="The plain-text body template.")
    def body(self) -> str:
        return self.row.body

    @strawberry.field(description="Whether it ships with OrderPulse.")
    def is_builtin(self) -> bool:
        return self.row.is_builtin


@strawberry.type(
    description="Who a reseller's failed-order notifications go to. There is one per reseller: "
    "its `id` stays the same, so a client cache updates a cached `notificationSettings` from "
    "`updateNotificationSettings`."
)
class NotificationSettings(Node):
    settings: strawberry.Private[nm.NotificationSettings]
    template_row: strawberry.Private[nm.NotificationTemplate]
    loaders: strawberry.Private[Loaders]

    @classmethod
    def wrap(
        cls,
        settings: nm.NotificationSettings,
        template: nm.NotificationTemplate,
        loaders: Loaders,
    ) -> NotificationSettings:
        """A reseller's settings; their ID is made from the reseller's (one settings each)."""
        return cls(
            id=to_global_id("NotificationSettings", settings.reseller_id),
            settings=settings,
            template_row=template,
            loaders=loaders,
        )

    @strawberry.field(description="The reseller these settings belong to.")
    async def reseller(self) -> Reseller:
        row = await self.loaders.reseller.load(self.settings.reseller_id)
        return Reseller.wrap(row, self.loaders)

    @strawberry.field(description="Whether the reseller's e-mail is notified.")
    def notify_reseller(self) -> bool:
        return self.settings.notify_reseller

    @strawberry.field(description="Whether the customer's contact e-mail is notified.")
    def notify_customer(self) -> bool:
        return self.settings.notify_customer

    @strawberry.field(description="The template of failed-order notifications.")
    def order_notification_template(self) -> NotificationTemplate:
        return NotificationTemplate.wrap(self.template_row)

    @strawberry.field(description="Support is always notified; this cannot be switched off.")
    def support_always_notified(self) -> bool:
        return True


# The lists the API pages through (Relay connections), each with its cursor kind and order.
ORDERS = Listing(om.SalesOrder, kind="order", newest_first=True, node=Order.wrap)
CUSTOMERS = Listing(om.Customer, kind="customer", newest_first=False, node=Customer.wrap)
RESELLERS = Listing(om.Reseller, kind="reseller", newest_first=False, node=Reseller.wrap)
NOTIFICATIONS = Listing(
    nm.Notification, kind="notification", newest_first=True, node=Notification.wrap
)


@strawberry.type(name="Viewer", description="Who is asking.")
class ViewerType:
    """The GraphQL `Viewer`: who is asking, as the API shows it (the domain's is access.Viewer)."""

    role: Role = strawberry.field(description="The viewer's role.")
    reseller: Reseller | None = strawberry.field(description="The viewer's reseller, if any.")
    customer: Customer | None = strawberry.field(description="The viewer's customer, if any.")


@strawberry.type(description="An expected failure of a mutation; nothing was written.")
class UserError:
    field: list[str] | None = strawberry.field(description="The path of the input field at fault.")
    message: str = strawberry.field(description="What is wrong, for people.")
    code: str = strawberry.field(
        description="BAD_USER_INPUT, NOT_FOUND, INVALID_TRANSITION, CONFLICT or FORBIDDEN."
    )


@strawberry.type(description="A row of the status catalogue.")
class OrderStatusInfo:
    code: OrderStatus = strawberry.field(description="The two-letter code.")
    name: str = strawberry.field(description="The status name.")
    description: str = strawberry.field(description="What it means.")
    probable_causes: list[str] = strawberry.field(description="Typical causes.")
    requires_manual_action: bool = strawberry.field(description="Whether someone must act.")
    actions: list[OrderAction] = strawberry.field(description="Actions possible from it.")


@strawberry.type(description="A row of the failure reason catalogue.")
class FailureReasonInfo:
    reason: FailureReason = strawberry.field(description="The reason code.")
    message: str = strawberry.field(description="The message panels show.")
    remedy: str = strawberry.field(description="What to do about it.")


@strawberry.type(description="How many visible orders are in a status.")
class OrderStatusCount:
    status: OrderStatus = strawberry.field(description="The status.")
    count: int = strawberry.field(description="How many orders.")
