"""Incident mail: one notification for many orders, from an incident's built-in template.

Written in the caller's transaction like every notification (a PENDING row is the outbox; its
event is published after commit), with the incident's link. The notification's order is the
first of the orders it lists (the column is required, and the tenancy rules read its reseller
and customer): support's mail is seen only by support, a reseller's by that reseller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import insert
from sqlalchemy import select as sa_select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import execute
from app.events.log import mark_notifications_written, notification_event, record_events
from app.incidents.models import Incident
from app.incidents.templates import INCIDENT_TEMPLATES
from app.notifications.mailer import new_message_id
from app.notifications.models import DeliveryStatus, Notification, NotificationKind, RecipientRole
from app.notifications.recipients import template_by_name
from app.notifications.templates import render_template, template_context
from app.orders import flow
from app.orders.models import Customer, Reseller, SalesOrder

MAX_LISTED_ORDERS = 50
"""An opening mail or a digest lists at most this many orders (an escalation lists them all)."""


def incident_number(incident_id: int) -> str:
    """How people name an incident: INC-000001."""
    return f"INC-{incident_id:06d}"


@dataclass(frozen=True)
class ListedOrder:
    """An order as an incident mail lists it."""

    id: int
    number: str
    type: str
    status: str
    total: str
    customer_id: int
    reseller_id: int
    customer: str
    reseller: str
    failed_at: datetime | None
    sla_deadline: datetime | None

    def as_variable(self) -> dict[str, object]:
        return {
            "number": self.number,
            "customer": self.customer,
            "reseller": self.reseller,
            "status": self.status,
            "failed_at": self.failed_at.isoformat() if self.failed_at else "",
        }


async def listed_orders(
    session: AsyncSession, *, where: Sequence[Any], newest_first: bool, limit: int | None
) -> list[ListedOrder]:
    """The orders matching `where`, with their customer's and reseller's names."""
    query = (
        sa_select(
            col(SalesOrder.id),
            col(SalesOrder.number),
            col(SalesOrder.type),
            col(SalesOrder.status),
            col(SalesOrder.total),
            col(SalesOrder.currency),
            col(SalesOrder.customer_id),
            col(SalesOrder.reseller_id),
            col(Customer.name),
            col(Reseller.name),
            col(SalesOrder.failed_at),
            col(SalesOrder.sla_deadline),
        )
        .join(Customer, col(Customer.id) == col(SalesOrder.customer_id))
        .join(Reseller, col(Reseller.id) == col(SalesOrder.reseller_id))
        .where(*where)
        .order_by(col(SalesOrder.id).desc() if newest_first else col(SalesOrder.id))
    )
    if limit is not None:
        query = query.limit(limit)
    rows = (await execute(session, query)).all()
    return [
        ListedOrder(
            id=r[0],
            number=r[1],
            type=r[2],
            status=r[3],
            total=f"{r[4].quantize(flow.CENTS)} {r[5]}",
            customer_id=r[6],
            reseller_id=r[7],
            customer=r[8],
            reseller=r[9],
            failed_at=r[10],
            sla_deadline=r[11],
        )
        for r in rows
    ]


async def write_incident_mail(
    session: AsyncSession,
    *,
    incident: Incident,
    kind: NotificationKind,
    template_name: str,
    role: RecipientRole,
    email: str,
    orders: Sequence[ListedOrder],
    count: int,
    pending: int,
    new: int,
    reseller_name: str,
    now: datetime,
) -> int:
    """One PENDING notification of `kind` to `email` about `incident`, listing `orders` (the
    first is the notification's order), and its event; its id."""
    assert incident.id is not None and orders
    first = orders[0]
    reason = flow.FailureReason(incident.reason)
    template = await template_by_name(session, template_name)
    context = template_context(
        order_number=first.number,
        order_type=first.type,
        order_status=first.status,
        order_total=first.total,
        customer_name=first.customer,
        reseller_name=reseller_name,
        reason=reason.value,
        message=flow.FAILURE_REASONS[reason].message,
        remedy=flow.FAILURE_REASONS[reason].remedy,
        details=None,
        sla_deadline=first.sla_deadline.isoformat() if first.sla_deadline else "",
        incident={
            "number": incident_number(incident.id),
            "count": count,
            "pending": pending,
            "new": new,
            "opened_at": incident.opened_at.isoformat(),
        },
        orders=[order.as_variable() for order in orders],
    )
    last_error = None
    try:
        rendered = render_template(subject=template.subject, body=template.body, context=context)
    except Exception as exc:  # an edited template that fails now never blocks the failure
        builtin = next(t for t in INCIDENT_TEMPLATES if t.name == template_name)
        rendered = render_template(subject=builtin.subject, body=builtin.body, context=context)
        last_error = (
            f"the template {template_name!r} could not be rendered ({type(exc).__name__}: "
            f"{exc}); sent with the built-in one"
        )[:1000]
    row = {
        "order_id": first.id,
        "reseller_id": first.reseller_id,
        "customer_id": first.customer_id,
        "kind": kind.value,
        "recipient_role": role.value,
        "email": email,
        "subject": rendered.subject,
        "body": rendered.body,
        "message_id": new_message_id(),
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "last_error": last_error,
        "next_attempt_at": now,
        "lease_until": None,
        "created_at": now,
        "sent_at": None,
        "incident_id": incident.id,
    }
    connection = await session.connection()
    inserted = await connection.execute(insert(Notification).returning(col(Notification.id)), row)
    notification_id = int(cast(int, inserted.scalar_one()))
    event = notification_event(
        notification_id=notification_id,
        order_id=first.id,
        reseller_id=first.reseller_id,
        customer_id=first.customer_id,
        recipient_role=role.value,
        delivery_status=DeliveryStatus.PENDING.value,
        at=now,
    )
    await record_events(session, [event])
    mark_notifications_written(session)
    return notification_id
