"""Writing to the event log, inside the caller's transaction.

Ids must appear in commit order, or a subscriber resuming from a cursor could skip an event that
committed late with a smaller id. SQLite has one writer at a time; on PostgreSQL each transaction
that writes events takes one transaction-scoped advisory lock just before its first event, so
event-writing transactions commit one after another.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification
from app.orders.models import SalesOrder

EVENT_LOCK_KEY = 0x0_4F50_4556  # "OPEV"
WROTE_EVENTS = "orderpulse.wrote_events"
WROTE_NOTIFICATIONS = "orderpulse.wrote_notifications"


async def _serialize_event_writers(session: AsyncSession) -> None:
    if session.info.get(WROTE_EVENTS):
        return
    session.info[WROTE_EVENTS] = True
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        connection = await session.connection()
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENT_LOCK_KEY}
        )


async def record_order_event(
    session: AsyncSession,
    *,
    order: SalesOrder,
    from_status: str | None,
    to_status: str,
    action: str | None,
    actor: str | None,
    reason: str | None,
    comment: str | None,
    at: datetime,
) -> Event:
    """One status change of `order` (from None for a new order)."""
    assert order.id is not None
    await _serialize_event_writers(session)
    event = Event(
        topic=TOPIC_ORDER_STATUS,
        order_id=order.id,
        reseller_id=order.reseller_id,
        customer_id=order.customer_id,
        from_status=from_status,
        to_status=to_status,
        action=action,
        actor=actor,
        reason=reason,
        comment=comment,
        occurred_at=at,
    )
    session.add(event)
    await session.flush()
    return event


async def record_notification_event(
    session: AsyncSession, *, notification: Notification, at: datetime
) -> Event:
    """A notification was created or changed delivery status."""
    assert notification.id is not None
    await _serialize_event_writers(session)
    event = Event(
        topic=TOPIC_NOTIFICATION,
        order_id=notification.order_id,
        reseller_id=notification.reseller_id,
        customer_id=notification.customer_id,
        notification_id=notification.id,
        recipient_role=notification.recipient_role,
        delivery_status=notification.status,
        occurred_at=at,
    )
    session.add(event)
    await session.flush()
    return event


def mark_notifications_written(session: AsyncSession) -> None:
    """Tell the unit of work to wake the outbox after commit."""
    session.info[WROTE_NOTIFICATIONS] = True
