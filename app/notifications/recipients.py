"""Who is told, and when: the recipients of failed-order notifications and of the SLA escalation.

Both write notification rows (the outbox) and their events in the caller's transaction; the
outbox worker sends them after commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.db import saved
from app.events.log import mark_notifications_written, record_notification_event
from app.notifications.mailer import new_message_id
from app.notifications.models import (
    DeliveryStatus,
    Notification,
    NotificationKind,
    NotificationSettings,
    NotificationTemplate,
    RecipientRole,
)
from app.notifications.templates import (
    ORDER_FAILED_TEMPLATE_NAME,
    UNRESOLVED_TEMPLATE_NAME,
    render_template,
    template_context,
)
from app.orders import flow
from app.orders.models import Customer, Reseller, SalesOrder


async def settings_for(session: AsyncSession, reseller_id: int) -> NotificationSettings:
    """The reseller's settings row, or the model's defaults (not saved) when it has none."""
    row = await session.get(NotificationSettings, reseller_id)
    if row is not None:
        return row
    return NotificationSettings(reseller_id=reseller_id)


async def template_by_name(session: AsyncSession, name: str) -> NotificationTemplate:
    row = (
        await session.exec(
            select(NotificationTemplate).where(col(NotificationTemplate.name) == name)
        )
    ).first()
    if row is None:
        raise LookupError(f"the built-in template {name!r} is missing; run migrations")
    return row


@dataclass(frozen=True)
class OrderParties:
    """The order's customer and reseller, read once for the recipients and the template."""

    customer: Customer
    reseller: Reseller


async def _parties(session: AsyncSession, order: SalesOrder) -> OrderParties:
    customer = await session.get(Customer, order.customer_id)
    reseller = await session.get(Reseller, order.reseller_id)
    assert customer is not None and reseller is not None
    return OrderParties(customer=customer, reseller=reseller)


def _context(order: SalesOrder, parties: OrderParties) -> dict[str, object]:
    reason = flow.FailureReason(order.failure_reason or flow.FailureReason.OTHER)
    return template_context(
        order_number=order.number,
        order_type=order.type,
        order_status=order.status,
        order_total=f"{order.total.quantize(flow.CENTS)} {order.currency}",
        customer_name=parties.customer.name,
        reseller_name=parties.reseller.name,
        reason=reason.value,
        message=flow.failure_message(reason, order.failure_details),
        remedy=flow.FAILURE_REASONS[reason].remedy,
        details=order.failure_details,
        sla_deadline=order.sla_deadline.isoformat() if order.sla_deadline else "",
    )


async def _write_notifications(
    session: AsyncSession,
    *,
    order: SalesOrder,
    parties: OrderParties,
    kind: NotificationKind,
    recipients: list[tuple[RecipientRole, str]],
    template: NotificationTemplate,
    now: datetime,
) -> list[Notification]:
    """One PENDING notification (an outbox row) and its event per (role, e-mail) recipient."""
    rendered = render_template(
        subject=template.subject, body=template.body, context=_context(order, parties)
    )
    created = []
    for role, email in recipients:
        notification = await saved(
            session,
            Notification(
                order_id=order.id or 0,
                reseller_id=order.reseller_id,
                customer_id=order.customer_id,
                kind=kind.value,
                recipient_role=role.value,
                email=email,
                subject=rendered.subject,
                body=rendered.body,
                message_id=new_message_id(),
                status=DeliveryStatus.PENDING.value,
                next_attempt_at=now,
                created_at=now,
            ),
        )
        await record_notification_event(session, notification=notification, at=now)
        created.append(notification)
    mark_notifications_written(session)
    return created


async def notify_order_failed(
    session: AsyncSession, *, order: SalesOrder, support_email: str, now: datetime
) -> list[Notification]:
    """The order just entered PF: tell support always, and the reseller/customer per settings."""
    settings = await settings_for(session, order.reseller_id)
    template = (
        await session.get(NotificationTemplate, settings.template_id)
        if settings.template_id is not None
        else None
    ) or await template_by_name(session, ORDER_FAILED_TEMPLATE_NAME)
    parties = await _parties(session, order)
    recipients = [(RecipientRole.SUPPORT, support_email)]
    if settings.notify_reseller:
        recipients.append((RecipientRole.RESELLER, parties.reseller.email))
    if settings.notify_customer:
        recipients.append((RecipientRole.CUSTOMER, parties.customer.contact_email))
    return await _write_notifications(
        session,
        order=order,
        parties=parties,
        kind=NotificationKind.ORDER_PROVISIONING_FAILED,
        recipients=recipients,
        template=template,
        now=now,
    )


async def overdue_failure_ids(
    session: AsyncSession, *, now: datetime, limit: int = 100
) -> list[int]:
    """Orders still in PF past their SLA deadline and not yet escalated."""
    rows = await session.exec(
        select(SalesOrder.id)
        .where(
            col(SalesOrder.status) == flow.Status.PF.value,
            col(SalesOrder.sla_deadline) <= now,
            col(SalesOrder.escalated_at).is_(None),
        )
        .order_by(col(SalesOrder.sla_deadline))
        .limit(limit)
    )
    return [i for i in rows.all() if i is not None]


async def escalate_failure(session: AsyncSession, *, order_id: int, now: datetime) -> bool:
    """Escalate one overdue failure, exactly once across processes.

    The conditional UPDATE is the claim: only the transaction that flips `escalated_at` from
    NULL (while the order is still in PF) writes the notification.
    """
    result = await session.exec(
        update(SalesOrder)
        .where(
            col(SalesOrder.id) == order_id,
            col(SalesOrder.status) == flow.Status.PF.value,
            col(SalesOrder.sla_deadline) <= now,
            col(SalesOrder.escalated_at).is_(None),
        )
        .values(escalated_at=now)
    )
    if result.rowcount != 1:
        return False
    order = await session.get(SalesOrder, order_id, populate_existing=True)
    assert order is not None
    parties = await _parties(session, order)
    await _write_notifications(
        session,
        order=order,
        parties=parties,
        kind=NotificationKind.FAILED_ORDER_UNRESOLVED,
        recipients=[(RecipientRole.RESELLER, parties.reseller.email)],
        template=await template_by_name(session, UNRESOLVED_TEMPLATE_NAME),
        now=now,
    )
    return True
