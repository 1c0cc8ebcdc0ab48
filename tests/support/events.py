"""Events written straight into the log, for tests of the fan-out, replay and websocket delivery.

A note is an order event that changes nothing (from PR to PR): traffic that reaches every
subscriber who may see the order, without moving the order through its flow.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from app.events.log import order_event, record_event
from app.events.models import Event
from app.orders.models import SalesOrder


async def record_note(
    session: AsyncSession,
    order: SalesOrder,
    *,
    at: datetime,
    action: str = "NOTE",
    actor: str = "test",
    comment: str | None = None,
) -> Event:
    """A PR-to-PR event of `order`, in the caller's transaction."""
    return await record_event(
        session,
        order_event(
            order,
            from_status="PR",
            to_status="PR",
            action=action,
            actor=actor,
            reason=None,
            comment=comment,
            at=at,
        ),
    )
