"""Writes the differential tests of the write path make and compare: a failure reported and
resubmitted, and what it left in the database."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from app.access.viewer import Viewer
from app.events.models import Event
from app.notifications.models import Notification
from app.orders import service
from app.orders.flow import Action, FailureReason, ProvisioningOutcome, Role
from app.orders.models import SalesOrder
from app.orders.service import perform_order_action, report_provisioning_result
from app.services import Services

SUPPORT = Viewer(role=Role.SUPPORT)


async def fail_and_resubmit(
    services: Services, order: SalesOrder, *, one_statement: bool = False
) -> None:
    """Support reports `order`'s provisioning failed, then resubmits it, each in a unit of work
    of the order store (with `one_statement`, as the API's: on PostgreSQL one self-committing
    statement each; without, in a transaction each)."""
    assert order.id is not None
    order_id = order.id
    store = replace(services.orders, one_statement_writes=one_statement)
    async with store.unit() as unit:
        await report_provisioning_result(
            unit,
            viewer=SUPPORT,
            order_id=order_id,
            outcome=ProvisioningOutcome.FAILED,
            reason=FailureReason.OTHER,
            details="disk full",
            config=services.desk,
            now=services.clock.now(),
        )
    async with store.unit() as unit:
        await perform_order_action(
            unit,
            viewer=SUPPORT,
            order_id=order_id,
            action=Action.RESUBMIT,
            comment="again",
            config=services.desk,
            now=services.clock.now(),
        )


async def written(services: Services, order: SalesOrder) -> dict[str, Any]:
    """What the writes left for `order`, without ids and Message-IDs (which always differ), and
    without what the outbox (running meanwhile) changes: the delivery columns and their events."""
    async with services.db.read() as session:
        row = await session.get(SalesOrder, order.id, populate_existing=True)
        notes = (
            await session.exec(
                select(Notification)
                .where(col(Notification.order_id) == order.id)
                .order_by(col(Notification.id))
            )
        ).all()
        events = (
            await session.exec(
                select(Event)
                .where(
                    col(Event.order_id) == order.id,
                    col(Event.delivery_status).is_distinct_from("SENT"),
                )
                .order_by(col(Event.id))
            )
        ).all()
    assert row is not None
    skip = {"id", "number", "message_id", "order_id", "notification_id"}
    delivery = {"status", "attempts", "last_error", "next_attempt_at", "lease_until", "sent_at"}
    return {
        "order": {k: v for k, v in row.model_dump().items() if k not in skip},
        "notifications": [
            {
                k: v.replace(row.number, "<number>") if isinstance(v, str) else v
                for k, v in n.model_dump().items()
                if k not in skip | delivery
            }
            for n in notes
        ],
        "events": [{k: v for k, v in e.model_dump().items() if k not in skip} for e in events],
        "event_notifications": [
            [n.id for n in notes].index(e.notification_id) if e.notification_id else None
            for e in events
        ],
    }


def counting_order_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The ids of the orders the order desk's use cases read from now on (once per run)."""
    reads: list[int] = []
    original = service._visible_order

    async def counted(
        session: AsyncSession, viewer: Viewer, order_id: int, *, failure_mail: bool
    ) -> Any:
        reads.append(order_id)
        return await original(session, viewer, order_id, failure_mail=failure_mail)

    monkeypatch.setattr(service, "_visible_order", counted)
    return reads
