"""What one status change writes to the event log: the change's own event first, then one event
per notification it raised, in one transaction (one INSERT since `record_events`)."""

from __future__ import annotations

from sqlmodel import col, select

from app.events.models import TOPIC_NOTIFICATION, TOPIC_ORDER_STATUS, Event
from app.notifications.models import Notification
from app.orders.flow import FailureReason, ProvisioningOutcome
from app.orders.service import report_provisioning_result
from app.orders.store import OrderUnit
from app.services import Services
from tests.support.api import PLATFORM, Factory


async def test_a_failure_logs_its_change_then_each_notification_in_order(
    factory: Factory, services: Services
) -> None:
    reseller = await factory.reseller()
    customer = await factory.customer(reseller)
    await factory.notify(reseller, reseller_mail=True, customer_mail=True)
    order = await factory.order(customer, status="PR")
    assert order.id is not None
    async with services.db.read() as session:
        before = (await session.exec(select(Event.id).order_by(col(Event.id).desc()))).first()
    async with services.transaction() as session:
        await report_provisioning_result(
            OrderUnit(session),
            viewer=PLATFORM,
            order_id=order.id,
            outcome=ProvisioningOutcome.FAILED,
            reason=FailureReason.NO_IP_ADDRESSES,
            details=None,
            config=services.desk,
            now=services.clock.now(),
        )
    async with services.db.read() as session:
        events = (
            await session.exec(select(Event).where(col(Event.id) > (before or 0)).order_by("id"))
        ).all()
        notifications = (
            await session.exec(
                select(Notification)
                .where(col(Notification.order_id) == order.id)
                .order_by(col(Notification.id))
            )
        ).all()
    assert [n.recipient_role for n in notifications] == ["SUPPORT", "RESELLER", "CUSTOMER"]
    first = events[0].id
    assert first is not None
    assert [e.id for e in events] == list(range(first, first + 4))
    assert [(e.topic, e.order_id, e.from_status, e.to_status, e.reason) for e in events[:1]] == [
        (TOPIC_ORDER_STATUS, order.id, "PR", "PF", "NO_IP_ADDRESSES")
    ]
    assert [
        (e.topic, e.notification_id, e.recipient_role, e.delivery_status) for e in events[1:]
    ] == [(TOPIC_NOTIFICATION, n.id, n.recipient_role, "PENDING") for n in notifications]
    assert {(e.order_id, e.reseller_id, e.customer_id) for e in events} == {
        (order.id, reseller.id, customer.id)
    }
